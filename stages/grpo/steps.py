"""The GRPO trainer's step loop: for every step of the plan, wait for its rollouts, train on
them, save the optimizer state when due and publish the next policy; rank 0 writes each step's
metrics line once that policy is published. Imports nothing heavy (main.py imports it at its
top, and `proactive grpo --help` stays instant): torch is reached only through the trainer."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proactive_rl.shared.faults import crash_point
from proactive_rl.shared.metrics import MetricsLogger, json_safe
from proactive_rl.shared.paths import RunPaths
from proactive_rl.shared.peers import PeerWatch
from proactive_rl.shared.schedule import Plan
from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.grpo.publishing import Publisher, prune_policies, publish_policy
from proactive_rl.stages.grpo.resume import open_metrics, prune_optimizer_states, save_optimizer
from proactive_rl.stages.grpo.rollouts import read_parts, wait_parts
from proactive_rl.stages.grpo.run_start import Start

if TYPE_CHECKING:
    import torch

    from proactive_rl.engine.parallel import Parallel
    from proactive_rl.stages.grpo.trainer_setup import Trainer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """What every RL step reads besides the training objects."""

    config: GrpoConfig
    paths: RunPaths
    par: Parallel
    start: Start
    # the peers' status files as at our start: the rollout waits judge change since
    started: PeerWatch


@dataclass(frozen=True)
class StepResult:
    """One trained RL step: its metrics and where its time went (its policy's writing time is
    the publish's own result, known once the policy is published)."""

    step: int
    stats: dict[str, float]  # train_step's metrics, the rollout's times and the policy lag
    wait_s: float
    update_s: float
    # what publishing held the trainer up: the optimizer state when due and the policy's
    # writing, or with a background publish the wait for the previous one and the snapshot
    publish_wait_s: float


@dataclass
class StepLog:
    """Rank 0's metrics lines: a step's line is written once its policy is published, and
    before a newer policy's marker can appear, so a kill leaves at most the newest published
    step's line to be recovered from that marker (open_metrics)."""

    metrics: MetricsLogger
    plan: Plan
    unlogged: list[StepResult] = field(default_factory=list)  # their policies not yet out

    def trained(self, result: StepResult) -> None:
        self.unlogged.append(result)

    def write_published(self, publisher: Publisher[float]) -> None:
        for publish_s in publisher.finished():
            log_step(self.metrics, self.plan, self.unlogged.pop(0), publish_s)


def background_publish(mode: str, max_staleness: int, device: torch.device) -> bool:
    """Whether policies are written while the next step trains (`publish_in_background`): one
    step off-policy or more (the rollout worker samples from an older policy meanwhile), and
    with `auto` only where the update does not compute on the CPU cores the write needs.

    >>> import torch
    >>> cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    >>> background_publish("auto", 1, gpu), background_publish("auto", 1, cpu)
    (True, False)
    >>> background_publish("always", 0, gpu), background_publish("always", 1, cpu)
    (False, True)
    >>> background_publish("never", 2, gpu)
    False
    """
    if max_staleness == 0 or mode == "never":
        return False
    return mode == "always" or device.type == "cuda"


def train_steps(ctx: RunContext, trainer: Trainer, resume: bool) -> None:
    """Train every step of the plan from the start; rank 0 logs each step's metrics once its
    policy is published (a step later when the policy is written in the background)."""
    plan, first, main = ctx.start.plan, ctx.start.step, ctx.par.is_main
    mode = ctx.config.publish_in_background
    background = main and background_publish(mode, plan.max_staleness, ctx.par.device)
    publisher: Publisher[float] = Publisher(background)
    if background:
        logger.info("each policy is written in a background thread while the next step trains")
    log = StepLog(open_metrics(ctx.paths, plan, first, resume, ctx.config), plan) if main else None
    try:
        for step in range(first, plan.total_steps):
            train_one_step(ctx, trainer, step, publisher, log)
        publisher.close()
    except BaseException:
        publisher.close_after_failure()
        raise
    if log is not None:
        log.write_published(publisher)
        log.metrics.close()


def train_one_step(
    ctx: RunContext,
    trainer: Trainer,
    step: int,
    publisher: Publisher[float],
    log: StepLog | None,
) -> None:
    """Wait for step `step`'s rollouts, train on them and publish policy step+1."""
    plan = ctx.start.plan
    t_wait = time.perf_counter()
    # every process waits on the volume itself (a collective would time out while a
    # long generation step runs), for every rollout worker's part of the step; a failed
    # background publish stops the wait (the rollout worker would wait for that policy)
    markers = wait_parts(ctx.config, ctx.paths, plan, step, ctx.started, publisher.check)
    wait_s = time.perf_counter() - t_wait
    marker, rows = read_parts(ctx.paths, plan, step, markers)

    t_update = time.perf_counter()
    stats = trainer.update(ctx.config, ctx.par, plan, step, rows, marker)
    update_s = time.perf_counter() - t_update
    stats.update(rollout_stats(marker, step, wait_s, update_s))

    t_publish = time.perf_counter()
    # The previous policy's background publish ends first: it prunes the optimizer states
    # older than its own, and its step's line goes out before a newer marker can.
    publisher.wait()
    if log is not None:
        log.write_published(publisher)
    publish_step(ctx, trainer, step, stats, publisher)
    if log is not None:
        log.trained(StepResult(step, stats, wait_s, update_s, time.perf_counter() - t_publish))
        log.write_published(publisher)  # written in this thread: published already


def rollout_stats(
    marker: dict[str, Any], step: int, wait_s: float, update_s: float
) -> dict[str, float]:
    """The step's timings and policy lag, from its rollouts' marker."""
    return {
        "time/wait_s": wait_s,
        "time/update_s": update_s,
        "rollout/policy_lag": step - marker["policy_version"],
        "time/generate_s": marker["seconds"]["generate"],
        "time/policy_load_s": marker["seconds"].get("load", 0.0),
    }


def publish_step(
    ctx: RunContext,
    trainer: Trainer,
    step: int,
    stats: dict[str, float],
    publisher: Publisher[float],
) -> None:
    """Policy step+1, with the optimizer state first when it is due (the previous policy's
    publish has ended)."""
    config, paths, par = ctx.config, ctx.paths, ctx.par
    version = step + 1
    saved = version % config.state_every_steps == 0 or version == ctx.start.plan.total_steps
    t_save = time.perf_counter()
    if saved:
        save_optimizer(paths, par, trainer.optimizer, trainer.scheduler, version, trainer.masters)
    stats["time/save_state_s"] = time.perf_counter() - t_save
    crash_point("grpo", "after_optimizer_save", step)
    # collective under ZeRO-3 (LoRA: the adapter's parameters only)
    lora = trainer.weights.lora_rank is not None
    state = par.full_state_dict(trainer.model, trainable_only=lora)
    if not par.is_main:
        return
    meta = {
        "plan_id": ctx.start.plan.plan_id,
        "step": step,
        "reward_mean": stats["reward/mean"],
        # the step's metrics line, should a kill come before it is written
        "metrics": json_safe(stats),
    }
    publish_dtype = trainer.precision.publish_dtype
    if publisher.background:  # the next step updates the weights in place meanwhile
        from proactive_rl.stages.grpo.policy import host_snapshot

        state, publish_dtype = host_snapshot(trainer.model, state, publish_dtype), None

    def publish() -> float:
        seconds = publish_policy(
            trainer.model,
            trainer.tokenizer,
            paths,
            version,
            meta,
            ctx.start.init_dir,
            state_dict=state,
            publish_dtype=publish_dtype,
            # rollouts of step k come from policy >= k - max_staleness: of the steps still to
            # sample (version on), none needs this one
            spent=version - 1 - config.max_staleness,
        )
        if saved:
            prune_optimizer_states(paths, version)
        prune_policies(paths, config.keep_policies)
        crash_point("grpo", "after_policy_marker", step)
        return seconds

    publisher.submit(publish)


def log_step(metrics: MetricsLogger, plan: Plan, result: StepResult, publish_s: float) -> None:
    stats = result.stats
    times = {"time/publish_s": publish_s, "time/publish_wait_s": result.publish_wait_s}
    metrics.log(result.step, {**stats, **times})
    logger.info(
        "step %d/%d: reward %.3f, group acc %.3f, proactive %.3f, kl %.4f, "
        "grad norm %.3f (update %.1fs, waited %.1fs)",
        result.step + 1,
        plan.total_steps,
        stats["reward/mean"],
        stats["reward/group_acc"],
        stats["reward/proactive_rate"],
        stats.get("loss/kl", 0.0),
        stats["opt/grad_norm"],
        result.update_s,
        result.wait_s,
    )
