"""What the run's training stages recorded, for the evaluation report: the seeds, their resolved
configs and the data's prep metadata, and the GRPO curve with the training wall times.
Imported only from eval's run() (numpy through stats.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from proactive_rl.shared.metrics import read_metrics
from proactive_rl.shared.paths import ROLLOUTS_FILE, DataPaths, RunPaths
from proactive_rl.shared.publish import is_stable, read_marker
from proactive_rl.stages.eval.config import EvalConfig
from proactive_rl.stages.eval.metrics import curve_summary
from proactive_rl.stages.eval.stats import change_interval


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


STAGES = ("sft", "grpo", "rollout")


def seeds(config: EvalConfig, paths: RunPaths) -> dict[str, Any]:
    """Every seed that shaped the numbers: eval's own and those in the training stages' configs."""
    found: dict[str, Any] = {"eval": config.seed}
    for stage in STAGES:
        seed = _json(paths.config(stage)).get("seed")
        if seed is not None:
            found[stage] = seed
    return found


def settings(config: EvalConfig, paths: RunPaths, data: DataPaths) -> dict[str, Any]:
    """The eval config, the training stages' resolved configs and the data's prep metadata."""
    processed = read_marker(data.processed) if is_stable(data.processed) else {}
    return {
        "eval": config.model_dump(mode="json"),
        "stages": {s: _json(paths.config(s)) for s in STAGES if paths.config(s).is_file()},
        "data": {k: v for k, v in processed.items() if k != "files"},
    }


def training_summary(paths: RunPaths, window: int, resamples: int = 2000) -> dict[str, Any]:
    """The GRPO curve from logs/grpo/metrics.jsonl and the training wall times: SFT from its
    logged seconds, RL from policy 0's publication to the last logged step. The curve's change
    from the first to the last window carries a 95% interval over the prompts the windows
    scored (their rollouts), so "the reward rose" can be told apart from noise."""
    sft_logs = read_metrics(paths.logs("sft"))
    grpo_logs = read_metrics(paths.logs("grpo"))
    sft_seconds = max(
        (r.get("train_runtime") or r.get("seconds") or 0.0 for r in sft_logs), default=None
    )
    rl_seconds = None
    if grpo_logs and is_stable(paths.policy(0)):
        rl_seconds = grpo_logs[-1]["time"] - read_marker(paths.policy(0))["published_at"]
    curve = curve_summary(grpo_logs, window)
    if curve is not None:
        steps = curve["steps"]
        first = _group_rewards(paths, steps[: curve["window"]])
        last = _group_rewards(paths, steps[len(steps) - curve["window"] :])
        if first and last and not curve["windows_overlap"]:
            curve["reward_change"] = change_interval(first, last, resamples)
    return {
        "curve": curve,
        "sft_seconds": sft_seconds,
        "rl_seconds": rl_seconds,
    }


def _group_rewards(paths: RunPaths, steps: list[int]) -> dict[int, float]:
    """Mean reward per prompt (group_id) over the rollouts of `steps` that are still there,
    every rollout worker's part of a step included."""
    import pyarrow.parquet as pq

    from proactive_rl.shared.schedule import read_plan

    workers = read_plan(paths.plan).rollout_workers if paths.plan.is_file() else 1
    totals: dict[int, list[float]] = {}
    for step in steps:
        for folder in paths.rollout_parts(step, workers):
            if not is_stable(folder):
                continue
            table = pq.read_table(folder / ROLLOUTS_FILE, columns=["group_id", "reward"])
            rows = zip(table["group_id"].to_pylist(), table["reward"].to_pylist(), strict=True)
            for group, reward in rows:
                totals.setdefault(group, []).append(reward)
    return {group: sum(values) / len(values) for group, values in totals.items()}
