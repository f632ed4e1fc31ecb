"""scripts/bench_learning.sh (make bench-learning) end to end at the smallest settings, on the
tiny model instead of SmolLM2 and a 30-row SimpleQA-shaped CSV: the base is measured on the
train split, the SFT data is rebuilt from that measurement, GRPO runs, the evaluation grades
the held-out questions, and bench.json carries the goals, seeds, wall times and the oracle
frontier. The numbers themselves are SmolLM2's business (docs/benchmarks.md); this checks the
plumbing that produces them."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

GOALS = {
    "goal_hallucination",
    "goal_accuracy_kept",
    "goal_truthfulness",
    "goal_hedges_where_base_fails",
    "final_calibration",
    "rl_reward_rises",
}


def simpleqa_csv(path: Path, rows: int) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["metadata", "question", "true_answer"])
        for i in range(rows):
            writer.writerow(["{'topic': 'Other'}", f"Who founded test society {i}?", f"P{i}"])
    return path


@pytest.mark.slow
def test_bench_learning_runs_and_reports_the_goals(tmp_path):
    run = tmp_path / "bench"
    env = {
        **os.environ,
        "BENCH_RUN": str(run),
        "SIMPLEQA_CSV": str(simpleqa_csv(tmp_path / "simpleqa.csv", 30)),
        "PROACTIVE": str(Path(sys.executable).parent / "proactive"),
        "BASE_MODEL": "builtin:tiny",
        "SIMPLEQA_ROWS": "30",
        "TEST_ROWS": "8",
        "SFT_SAMPLES": "16",
        "SFT_EPOCHS": "1",
        "RL_POOL": "4",
        "RL_PROMPTS": "2",
        "RL_EPOCHS": "2",
        "RL_N": "2",
        "MAX_NEW_TOKENS": "8",
        "EVAL_N": "2",
        "MEASURE_N": "2",
        "REWARD": "ternary",
        "REWARD_KWARGS": "{}",
        "RL_KNOWN_FRACTION": "0.25",
        "RL_TEMPERATURE": "0.9",
    }
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "bench_learning.sh")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    bench = json.loads((run / "bench.json").read_text())
    stages = {"prep", "measure", "prep-known", "sft", "rl", "eval"}
    assert set(bench["stage_seconds"]) == stages
    assert bench["questions"] == 8 and bench["n"] == 2
    assert set(GOALS) <= set(bench["goals"])
    assert bench["settings"]["RL_KNOWN_FRACTION"] == "0.25"
    assert bench["settings"]["REWARD"] == "ternary" and bench["settings"]["RL_POOL"] == "4"
    assert bench["seeds"] == {"sft": 42, "grpo": 42, "rollout": 1234, "eval": 7}
    frontier = bench["oracle_frontier"]
    assert frontier["checkpoint"] == "base" and frontier["questions"] == 8
    assert 0 <= frontier["best_accuracy_within_hallucination_max"] <= frontier["base_accuracy"]
    # the SFT data came from the measurement, and GRPO trained with the reward it was given
    warmup = json.loads((run / "data" / "processed" / "STABLE.json").read_text())["warmup"]
    assert warmup["known_from"].endswith("eval/base-train/samples.jsonl")
    assert warmup["decided_by"]["measured"] > 0
    rollout = json.loads((run / "configs" / "rollout.json").read_text())
    assert rollout["reward"] == "ternary" and rollout["sampling"]["temperature"] == 0.9
    built = warmup["built"]
    assert warmup["rl_train_order"]["rows"] == built["known"] + built["proactive"]
    report = json.loads((run / "eval" / "report" / "report.json").read_text())
    assert report["questions"] == 8
    assert "buckets_by_base" in report["checkpoints"][-1]
    for line in ("goal_hallucination", "oracle frontier of base"):
        assert line in proc.stdout
