"""Deep checks of a finished run directory, run by scripts/smoke.sh inside the base image:

    docker run --rm -v "$PWD/checkpoints:/workspace/checkpoints:ro" \
        -v "$PWD/scripts:/workspace/scripts:ro" proactive-rl/base:cpu \
        python scripts/check_run.py checkpoints/smoke --n 4

It looks at the run directory from the outside (no proactive_rl imports), the way a user would:
every rollout file holds whole groups of n, the last policy loads with
AutoModelForCausalLM.from_pretrained (a LoRA policy: on its base, with peft), and every eval
report is a JSON object. Exit 1 on failure.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path


def stable_children(parent: Path, prefix: str) -> list[Path]:
    """Children named prefix_<number> that carry their STABLE.json marker, sorted by number."""
    found = [
        p
        for p in parent.glob(f"{prefix}_*")
        if p.name[len(prefix) + 1 :].isdigit() and (p / "STABLE.json").is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(prefix) + 1 :]))


def check(run: Path, n: int | None) -> list[str]:
    import pyarrow.parquet as pq

    problems: list[str] = []
    rollouts = stable_children(run / "rollouts", "step")
    for step in rollouts:
        path = step / "rollouts.parquet"
        if not path.is_file():
            problems.append(f"{step}: no rollouts.parquet")
            continue
        table = pq.read_table(path, columns=["group_id"])
        sizes = collections.Counter(table.column("group_id").to_pylist())
        bad = {g: s for g, s in sizes.items() if n is not None and s != n}
        print(f"check_run: {path}: {table.num_rows} rows in {len(sizes)} groups")
        if not sizes:
            problems.append(f"{path}: no rows")
        if bad:
            problems.append(f"{path}: groups not of size {n}: {dict(list(bad.items())[:5])}")

    policies = stable_children(run / "policies", "step")
    if policies:
        from transformers import AutoModelForCausalLM

        adapter = policies[-1] / "adapter_config.json"
        if adapter.is_file():  # a LoRA policy: its base is named relative to the adapter
            from peft import PeftModel

            base = policies[-1] / json.loads(adapter.read_text())["base_model_name_or_path"]
            model = PeftModel.from_pretrained(
                AutoModelForCausalLM.from_pretrained(base.resolve()), policies[-1]
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(policies[-1])
        count = sum(p.numel() for p in model.parameters())
        print(f"check_run: {policies[-1]} loads: {type(model).__name__}, {count:,} parameters")
    else:
        problems.append(f"{run / 'policies'}: no published policy")

    reports = sorted((run / "eval").glob("**/report.json"))
    for report in reports:
        try:
            data = json.loads(report.read_text())
        except json.JSONDecodeError as err:
            problems.append(f"{report}: not JSON: {err}")
            continue
        if not isinstance(data, dict):
            problems.append(f"{report}: not a JSON object")
        else:
            print(f"check_run: {report}: keys {sorted(data)}")
    if not reports:
        problems.append(f"{run / 'eval'}: no report.json")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--n", type=int, default=None, help="expected group size (RL_ROLLOUTS)")
    args = parser.parse_args()
    problems = check(args.run_dir, args.n)
    for problem in problems:
        print(f"check_run: FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
