"""scripts/bench_learning.sh (make bench-learning) end to end at the smallest settings, on the
tiny model instead of SmolLM2 and a 30-row SimpleQA-shaped CSV: the base is measured on the
train split, the SFT data is rebuilt from that measurement, GRPO runs, the evaluation grades
the held-out questions, and bench.json carries the goals, seeds, wall times and the oracle
frontier. The numbers themselves are SmolLM2's business (docs/benchmarks.md); this checks the
plumbing that produces them. Its stages generate with transformers (BACKEND): four vLLM engine
start-ups would be most of its time, and the vLLM rollout and eval are tested in tests/vllm."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

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


def nq_open_jsonl(path: Path, rows: int) -> Path:
    """NQ-open's format: the users' RL JSONL, several accepted answers as a JSON list."""
    with path.open("w") as fh:
        for i in range(rows):
            answer = json.dumps([f"N{i}", f"Nick {i}"]) if i % 2 else f"N{i}"
            messages = [
                {"role": "user", "content": f"Who wrote test song {i}?"},
                {"role": "assistant", "content": answer},
            ]
            fh.write(json.dumps({"id": i, "messages": messages, "sub_category": "nq_open"}) + "\n")
    return path


@pytest.mark.slow
def test_bench_learning_runs_and_reports_the_goals(tmp_path):
    run = tmp_path / "bench"
    env = {
        **os.environ,
        "BENCH_RUN": str(run),
        "SIMPLEQA_CSV": str(simpleqa_csv(tmp_path / "simpleqa.csv", 30)),
        "NQ_OPEN": str(nq_open_jsonl(tmp_path / "nq.jsonl", 10)),
        "NQ_ROWS": "6",
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
        "BACKEND": "transformers",
    }
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "bench_learning.sh")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    bench = json.loads((run / "bench.json").read_text())
    stages = {"prep", "measure", "prep-known", "sft", "rl", "eval", "eval-nq-open"}
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
    assert rollout["backend"] == "transformers" == bench["settings"]["BACKEND"]
    built = warmup["built"]
    assert warmup["rl_train_order"]["rows"] == built["known"] + built["proactive"]
    report = json.loads((run / "eval" / "report" / "report.json").read_text())
    assert report["questions"] == 8
    assert "buckets_by_base" in report["checkpoints"][-1]
    for line in ("goal_hallucination", "oracle frontier of base", "nq-open (6 questions x n=2)"):
        assert line in proc.stdout
    # the questions of another kind: the same checkpoints, goals and yardstick, never trained on
    nq = bench["reports"]["nq-open"]
    assert nq["questions"] == 6 and set(GOALS) <= set(nq["goals"])
    assert set(nq["optimum"]) == {c["label"] for c in report["checkpoints"]}
    assert nq["optimum"]["base"]["threshold"] == pytest.approx(0.5)  # ternary
    assert nq["oracle_frontier"]["questions"] == 6
    nq_rl = json.loads((run / "data-nq-open" / "processed" / "STABLE.json").read_text())
    assert "nq.jsonl" in json.dumps(nq_rl["inputs"]["rl"])


def test_bench_rewards_plans_five_rewards_with_bench_learnings_settings(tmp_path):
    """make bench-rewards --dry-run (the real run takes hours: docs/benchmarks.md): the sweep it
    writes holds exactly bench-learning's stage settings (one source, scripts/bench_settings.sh),
    five rewards over one SFT, the base measurement as known_from, and NQ-open as an eval set."""
    env = {
        **os.environ,
        "BENCH_CHECKPOINTS": str(tmp_path / "checkpoints"),
        "SIMPLEQA_CSV": str(simpleqa_csv(tmp_path / "simpleqa.csv", 30)),
        "NQ_OPEN": str(nq_open_jsonl(tmp_path / "nq.jsonl", 10)),
        "PROACTIVE": str(Path(sys.executable).parent / "proactive"),
        "RL_POOL": "16",
    }
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "bench_rewards.sh"), "--dry-run"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [line.split(":")[0] for line in proc.stdout.splitlines() if ": data " in line]
    assert runs == [
        "sft_rl_beta0.3_proactive",
        "sft_rl_beta0.5_proactive",
        "sft_rl_beta0.3_proactive_strict",
        "sft_rl_ternary",
        "sft_rl_ternary_abstain0.1",
    ]
    assert len({line.split(", SFT ")[1].split(",")[0] for line in proc.stdout.splitlines()
                if ", SFT " in line}) == 1  # fmt: skip
    assert "eval set nq-open:" in proc.stdout
    root = tmp_path / "checkpoints" / "sweeps" / "bench-rewards"
    config = tomllib.loads((root / "bench-rewards.toml").read_text())
    prep, grpo = config["settings"]["prep"], config["settings"]["grpo"]
    assert "num_sft_samples=160" in prep and "sft_source=build" in prep
    assert f"known_from={root}/measure/eval/base-train/samples.jsonl" in prep
    assert "max_prompts=16" in grpo and "state_every_steps=2" in grpo  # RL_POOL / RL_PROMPTS
    assert not any(s.startswith("checkpoints=") for s in config["settings"]["eval"])
    assert config["eval_checkpoints"] == ["base", "sft", "final"]
    assert config["eval_set_rows"] == 200 and config["base_model"] == "builtin:smollm2"
    # in pieces: --only passes through to the sweep
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "bench_rewards.sh"), "--dry-run",
         "--only", "sft_rl_ternary_abstain0.1", "--only", "sft_rl_ternary"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [line.split(":")[0] for line in proc.stdout.splitlines() if ": data " in line]
    assert runs == ["sft_rl_ternary", "sft_rl_ternary_abstain0.1"]
