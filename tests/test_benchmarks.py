"""Benchmark scripts that read trained runs: run on a tiny random-agent experiment."""

import json
import subprocess
import sys
from pathlib import Path

from omega.cli.main import main

try:
    from tests.test_cli import make_exp
except ImportError:  # pragma: no cover
    from test_cli import make_exp

REPO = Path(__file__).resolve().parents[1]


def test_eval_curve_evaluates_every_kept_checkpoint(tmp_path):
    exp = make_exp(tmp_path, steps=1024, ckpt=512)
    assert main(["run", "--dir", str(exp)]) == 0
    out = tmp_path / "curve.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "eval_curve.py"), "--group", "rand", str(exp),
         "--episodes", "3", "--seed", "7", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert [r["env_steps"] for r in data["rows"]] == [512, 1024]
    assert all(r["eval"]["seeds"] == [7, 8, 9] for r in data["rows"])
    assert [s["runs"] for s in data["summary"]] == [1, 1]
    # The newest checkpoint's row is what 'omega eval' reports for the run.
    direct = tmp_path / "eval.json"
    assert main(["eval", "--dir", str(exp), "--episodes", "3", "--seed", "7",
                 "--json", str(direct)]) == 0
    assert data["rows"][-1]["eval"]["lengths"] == json.loads(direct.read_text())["lengths"]


def test_eval_curve_refuses_a_dir_without_checkpoints(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "eval_curve.py"), "--group", "x",
         str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert "has no checkpoints/" in proc.stderr and "train it first" in proc.stderr
