"""docs/results.md and the README's results block are generated from results JSON, never
typed by hand: regenerating them from the committed results gives the committed text."""

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "configs" / "suites" / "original.yaml"


def load_script():
    spec = importlib.util.spec_from_file_location("results_page",
                                                  REPO / "benchmarks" / "results_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_page_is_what_the_script_writes():
    rp = load_script()
    page, block = rp.render(SUITE, REPO / "benchmarks/results/suite_original",
                            REPO / "docs/results.md", REPO / "docs/results")
    assert (REPO / "docs/results.md").read_text() == page, \
        "docs/results.md differs from what benchmarks/results_page.py writes; rerun it"
    assert block in (REPO / "README.md").read_text(), \
        "README's results block differs from what benchmarks/results_page.py writes; rerun it"


def _result(name, seed, rate, spec_hash, env_id="MiniHack-Room-5x5-v0", agent="ppo"):
    successes = [True] * int(rate * 100) + [False] * (100 - int(rate * 100))
    return {"name": name, "seed": seed, "agent_type": agent, "env_id": env_id,
            "spec_hash": spec_hash, "status": "done", "env_steps": 1_000_448,
            "steps_to_success_0.9": 10240, "train_wall_s": 600.0, "gif": None,
            "host": {"host": "h", "cpus": 2, "load_avg": [3.0, 3.0, 3.0], "jobs": 1},
            "final": {"success_rate": rate, "successes": successes, "mean_return": rate},
            "curve": [{"env_steps": 10240, "success_rate": rate},
                      {"env_steps": 1_000_448, "success_rate": rate}]}


def test_rows_come_from_the_results(tmp_path):
    rp = load_script()
    from omega.suite.spec import load_suite

    suite = load_suite(SUITE)
    run = next(r for r in suite.runs if r.name == "ppo/room_5x5")
    data = tmp_path / "data"
    (data / "results" / "ppo" / "room_5x5").mkdir(parents=True)
    (data / "results" / "ppo" / "room_5x5" / "seed0.json").write_text(
        json.dumps(_result("ppo/room_5x5", 0, 0.97, run.spec_hash)))
    (data / "results" / "muzero" / "room_5x5").mkdir(parents=True)
    (data / "results" / "muzero" / "room_5x5" / "seed0.json").write_text(
        json.dumps(_result("muzero/room_5x5", 0, 0.5, "an older config", agent="muzero")))
    (data / "baselines").mkdir()
    (data / "baselines" / "MiniHack-Room-5x5-v0.json").write_text(json.dumps(
        {"env_id": "MiniHack-Room-5x5-v0", "eval": {"success_rate": 0.62, "mean_return": 0.3}}))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:begin -->\nold\n<!-- results:end -->\nrest\n")
    out = tmp_path / "docs" / "results.md"
    rp.main(["--data", str(data), "--out", str(out), "--assets", str(tmp_path / "assets"),
             "--readme", str(readme)])
    text = out.read_text()
    row = next(line for line in text.splitlines() if "`ppo/room_5x5`" in line)
    assert "| 0.97 | 0.97 |" in row and "| 1M |" in row and "| 10.2k |" in row
    assert "| 10 min |" in row and row.endswith("| 0.62 |")
    stale = next(line for line in text.splitlines() if "`muzero/room_5x5`" in line)
    assert "†" in stale and "earlier version of the config" in text
    assert text.count("not run") >= 30  # the other entries have no results
    assert "**Status: 2 of" in text
    # The configs that turn off MiniHack's step penalty are named under "How to read".
    flat = " ".join(text.split())  # the page wraps its lines
    assert "*MiniHack's step penalty*" in flat
    assert ("`ppo/corridor_r2`, `ppo/keyroom_s5`, `ppo/mazewalk_15x15`, "
            "`ppo/mazewalk_mapped_15x15`, "
            "`ppo/memento_short_f2`, `ppo/room_ultimate_15x15` set "
            "`env.options.penalty_step`") in flat
    # So are the configs that train on a shaped reward, with what they add.
    assert "*Reward shaping*" in flat and "`ppo/memory_k10` (step_penalty 0.03)" in flat
    # The miss (0.5) gets its line under "Misses", the 0.97 row none; no observation yet.
    missed = text.split("## Misses: what the agent does instead")[1].split("## ")[0]
    assert "`muzero/room_5x5`" in missed and "`ppo/room_5x5`" not in missed
    assert "eval success 0.50" in missed and "Not yet looked at in its recordings." in missed
    (data / "observations.yaml").write_text(
        "muzero/room_5x5: The hero walks into the east wall until the time limit.\n")
    rp.main(["--data", str(data), "--out", str(out), "--assets", str(tmp_path / "assets"),
             "--readme", str(readme)])
    assert "walks into the east wall until the time limit." in out.read_text()
    assert (tmp_path / "assets" / "plots" / "MiniHack-Room-5x5-v0.png").is_file()
    assert "plots/MiniHack-Room-5x5-v0.png" in text
    new = readme.read_text()
    assert new.startswith("intro\n") and new.endswith("rest\n") and "old" not in new
    assert "| MiniHack-Room-5x5-v0 | 0.97 (1 seed) | 0.50 (1 seed) | 0.62 |" in new


def test_collect_copies_results_and_gifs(tmp_path):
    rp = load_script()
    suite_dir = tmp_path / "suite"
    res = suite_dir / "results" / "ppo" / "x"
    res.mkdir(parents=True)
    result = _result("ppo/x", 0, 1.0, "h")
    result["gif"] = "gifs/ppo/x/seed0.gif"
    (res / "seed0.json").write_text(json.dumps(result))
    (suite_dir / "gifs" / "ppo" / "x").mkdir(parents=True)
    (suite_dir / "gifs" / "ppo" / "x" / "seed0.gif").write_bytes(b"GIF89a")
    (suite_dir / "baselines").mkdir()
    (suite_dir / "baselines" / "E.json").write_text("{}")
    rp.collect(suite_dir, tmp_path / "data", tmp_path / "gifs")
    assert (tmp_path / "data" / "results" / "ppo" / "x" / "seed0.json").is_file()
    assert (tmp_path / "data" / "baselines" / "E.json").is_file()
    assert (tmp_path / "gifs" / "ppo__x.gif").is_file()


def test_every_experiment_log_is_linked_from_the_results_page():
    """A topic added to docs/experiments/ is listed on the results page too."""
    results_page = load_script()
    logs = sorted(p.name for p in (REPO / "docs" / "experiments").glob("*.md")
                  if p.name != "README.md")
    assert sorted(name for name, _ in results_page.EXPERIMENTS) == logs
    index = (REPO / "docs" / "experiments" / "README.md").read_text()
    assert all(f"]({name})" in index for name in logs)
