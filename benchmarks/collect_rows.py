"""Merges the JSON files of several ``muzero_ablation.py`` invocations into one, and prints the
table: one row per variant, its seeds' eval success and their mean.

Usage (from the repository root):

    python benchmarks/collect_rows.py experiments/h30/*_seed?.json \\
        --out benchmarks/results/muzero_targets_room_random_15x15_100k.json

Every input must have the same ``base_config`` and ``steps``; rows keep their input order,
grouped by variant in the order each variant first appears.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omega.training.checkpoint import atomic_write_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", type=Path, nargs="+", help="muzero_ablation.py --out files")
    p.add_argument("--out", type=Path, default=None, help="the merged JSON")
    args = p.parse_args()
    merged: dict | None = None
    for path in args.files:
        try:
            data = json.loads(path.read_text())
            data["base_config"], data["steps"], data["rows"]  # noqa: B018 - what a file must have
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            p.error(f"{path}: not a muzero_ablation.py --out file ({e})")
        if merged is None:
            merged = {"base_config": data["base_config"], "steps": data["steps"], "rows": []}
        elif (data["base_config"], data["steps"]) != (merged["base_config"], merged["steps"]):
            p.error(f"{path} is {data['base_config']} at {data['steps']} env steps, the first "
                    f"file {merged['base_config']} at {merged['steps']}")
        merged["rows"].extend(data["rows"])
    assert merged is not None
    variants: dict[str, list[dict]] = {}
    for row in merged["rows"]:
        variants.setdefault(row["variant"], []).append(row)
    print(f"{merged['base_config']}, {merged['steps']:,} env steps")
    print(f"{'variant':<40} {'eval success by seed':<28} {'mean':>6}")
    for name, rows in variants.items():
        rows.sort(key=lambda r: r["seed"])
        rates = [r["eval"]["success_rate"] for r in rows]
        shown = " / ".join(f"{r['seed']}: {x:.2f}" for r, x in zip(rows, rates, strict=True))
        print(f"{name:<40} {shown:<28} {sum(rates) / len(rates):>6.3f}")
    if args.out:
        atomic_write_bytes(args.out, (json.dumps(merged, indent=2) + "\n").encode())
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
