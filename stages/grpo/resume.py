"""What `grpo --resume` needs besides the published policies: the optimizer state that matches
the newest policy, and a metrics log with exactly one line per finished step, whatever moment
a kill came at (docs/reliability.md, "What --resume promises")."""

from __future__ import annotations

import logging
import shutil

from proactive_rl.shared.metrics import MetricsLogger
from proactive_rl.shared.paths import RunPaths
from proactive_rl.shared.publish import read_marker
from proactive_rl.shared.schedule import Plan

logger = logging.getLogger(__name__)


def prune_optimizer_states(paths: RunPaths, version: int) -> None:
    """Delete every saved optimizer state but that of policy `version`. Called only after that
    policy is published: until then the state of the previous policy is the one to resume from."""
    keep = paths.grpo_optimizer_state(version)
    for old in paths.grpo_state.glob("optimizer_*.pt*"):
        if old != keep:
            old.unlink()
    for old in (paths.grpo_state / "deepspeed").glob("v*"):
        if old.name != f"v{version}":
            shutil.rmtree(old)


def open_metrics(paths: RunPaths, plan: Plan, start_step: int, resume: bool) -> MetricsLogger:
    """The metrics log of the trainer (rank 0). On --resume from policy `start_step`, lines of
    the steps about to be trained again are dropped, and the line of the last finished step is
    written from its policy's marker if a kill came between that marker and the line."""
    if not resume:
        return MetricsLogger(paths.logs("grpo"))
    metrics = MetricsLogger(paths.logs("grpo"), resume_at=start_step)
    last = start_step - 1
    if last >= 0 and last not in metrics.steps():
        logged = read_marker(paths.policy(start_step)).get("metrics")
        if logged is not None:
            # all but time/publish_s, which was being measured when the kill came
            metrics.log(last, {**logged, "recovered": True})
            logger.info("metrics of step %d written from policy %d's marker", last, start_step)
    if start_step < plan.total_steps and (start_step > 0 or metrics.dropped):
        metrics.event(start_step, "resume", dropped_lines=metrics.dropped)
    return metrics
