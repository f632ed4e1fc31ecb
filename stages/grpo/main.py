"""proactive grpo: the long-running GRPO trainer worker.

Publishes the plan and policy version 0 (the starting model), then for every step waits for
that step's rollouts, computes group-normalised advantages and the clipped policy loss with a
KL penalty to the reference model, steps the optimizer, and publishes the next policy version:

    proactive grpo --run-dir checkpoints/default --set n=16 --set epochs=10
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from proactive_rl.engine.model_checks import check_model_folder, weights_numel
from proactive_rl.shared.claims import claim_outputs, continues_launch, start_mode
from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.faults import crash_point
from proactive_rl.shared.metrics import MetricsLogger, json_safe
from proactive_rl.shared.paths import DataPaths, RunPaths, record_path
from proactive_rl.shared.peers import PeerWatch, failure_reported, worker_status
from proactive_rl.shared.publish import VERIFIED, sha256_file, verified_processed, verify
from proactive_rl.shared.schedule import Plan, read_plan, write_plan
from proactive_rl.stages.common import (
    check_free_space,
    check_writable,
    config_options,
    dir_options,
    reuse_options,
    save_config,
)
from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.grpo.publishing import Publisher, prune_policies, publish_policy
from proactive_rl.stages.grpo.resume import (
    load_optimizer,
    open_metrics,
    prune_optimizer_states,
    save_optimizer,
)
from proactive_rl.stages.grpo.rollouts import read_parts, wait_parts
from proactive_rl.stages.grpo.run_start import Start, new_plan, resolve_init_model, versions_of

if TYPE_CHECKING:  # torch and transformers behind these: imported inside run() only
    from proactive_rl.engine.parallel import Parallel
    from proactive_rl.stages.grpo.trainer_setup import Trainer

logger = logging.getLogger(__name__)


@click.command(
    help="GRPO trainer worker: publish the RL plan and policy version 0, then for each step "
    "wait for <run-dir>/rollouts/step_N, update the policy and publish "
    "<run-dir>/policies/step_{N+1} (a Hugging Face safetensors folder, or with lora.enabled a "
    "LoRA adapter folder). Runs beside "
    "`proactive rollout`; metrics in <run-dir>/logs/grpo (tensorboard + metrics.jsonl).",
    epilog="\b\nConfig fields (--set key=value, dotted for nested):\n"
    + describe(GrpoConfig, stage="grpo"),
)
@dir_options
@config_options
@reuse_options
def command(
    run_dir: Path,
    data_dir: Path,
    recipe: str | None,
    config_file: Path | None,
    overrides: tuple[str, ...],
    resume: bool,
    clean: bool,
) -> None:
    # any failure, from the config on, reaches the peer through this worker's status file
    with failure_reported(RunPaths(run_dir).status("grpo")):
        config = resolve(recipe, config_file, overrides)
        run(config, run_dir, data_dir, resume=resume, clean=clean)


def resolve(recipe: str | None, config_file: Path | None, overrides: tuple[str, ...]) -> GrpoConfig:
    """The stage's config from its options, as `proactive grpo` and `proactive preflight` read
    it."""
    return load_config(GrpoConfig, config_file, overrides, recipe or None, "grpo")


def outputs(paths: RunPaths) -> list[Path]:
    """What the stage claims in the run directory (--resume / --clean act on these)."""
    return [paths.policies, paths.grpo_state, paths.logs("grpo")]


def finished(paths: RunPaths) -> bool:
    """The run's plan is trained to its end: its last policy is published."""
    if not paths.plan.is_file():
        return False
    plan = read_plan(paths.plan)
    return plan.total_steps in versions_of(paths, plan)


def check_before_training(config: GrpoConfig, paths: RunPaths) -> None:
    """Before training: the run directory is writable, the starting model readable (a built-in
    one is built here, once), and the disk holds a policy and the optimizer state."""
    written = [*outputs(paths), paths.base_models, paths.launch("grpo").parent]
    written += [paths.config("grpo").parent, paths.status("grpo").parent]
    check_writable([paths.root, *written], "pass another --run-dir")
    init_dir = resolve_init_model(config.init_model, paths)
    if config.lora.enabled:
        return  # adapters and their optimizer state: a small share of the model
    # at most 4 bytes a weight for a policy, 8 for AdamW's moments, 4 for float32 masters
    check_free_space(
        paths.root,
        16 * weights_numel(init_dir),
        "a policy and its optimizer state",
        "pass another --run-dir",
    )


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


def run(config: GrpoConfig, run_dir: Path, data_dir: Path, resume: bool, clean: bool) -> None:
    """Check the inputs, start the processes, agree where to start, build the trainer, publish
    policy 0 (or restore the optimizer on --resume), then train and publish every step."""
    from proactive_rl.engine.gpus import check_gpus

    check_gpus()  # a GPU container that sees too few GPUs stops here, not on the CPU hours later
    paths = RunPaths(run_dir)
    # a restart of the launch that claimed the outputs continues them, whatever RUN_MODE says
    restart = continues_launch(paths.launch("grpo"))
    resume, clean = start_mode(paths.launch("grpo"), "grpo", resume, clean)
    # A restart of the launch that trained the plan to its end (its settings are the same by
    # construction) ends before loading anything; a user's --resume still checks its settings
    # against the run (the plan, LoRA or not) on the full path, and ends there.
    if restart and finished(paths):
        # a kill between the last policy's marker and its metrics line: write that line first
        plan = read_plan(paths.plan)
        open_metrics(paths, plan, plan.total_steps, resume=True).close()
        logger.info(
            "grpo: the plan's last policy is published in %s; nothing to do", paths.policies
        )
        return
    # torch, transformers, deepspeed: imported here so that `proactive grpo --help` is instant
    from proactive_rl.engine.parallel import Parallel, relaunch
    from proactive_rl.stages.grpo.trainer_setup import build_trainer, start_torch

    train_file = check_inputs(config, paths, DataPaths(data_dir))
    relaunch(config.strategy, config.num_processes)  # ddp/zero*: this command, once per GPU
    par = Parallel.start(config.strategy)
    started = claim_run(config, paths, par, resume, clean)

    # Only rank 0 writes to the volume: status heartbeat, plan, policies, metrics.
    status = worker_status(paths.status("grpo")) if par.is_main else contextlib.nullcontext()
    with status:
        compute = start_torch(config)
        start = agree_start(config, paths, par, train_file, resume)
        trainer = build_trainer(
            config, start.plan, start.folder, start.init_dir, par.device, compute
        )
        if start.step == 0 and par.is_main:
            publish_start(paths, start, trainer)
        # ZeRO-3 partitions the weights: build_trainer counted them before
        trainer.module = par.wrap(trainer.model, trainer.optimizer, config)
        if start.step > 0:
            restore(config, paths, par, trainer, start.step)
        log_setup(config, par, start.plan, trainer)
        train_steps(RunContext(config, paths, par, start, started), trainer, resume)
        trainer.unwrap()  # the wrapper must not outlive the process group (Parallel.close)
        par.close()


def check_inputs(config: GrpoConfig, paths: RunPaths, data: DataPaths) -> Path:
    """The RL train split, once it and the run directory pass the checks before training."""
    train_file = data.rl_train
    if not train_file.is_file():
        raise UserError(f"{train_file} does not exist: run `proactive prep` first")
    verified_processed(data)
    check_before_training(config, paths)
    return train_file


def claim_run(
    config: GrpoConfig, paths: RunPaths, par: Parallel, resume: bool, clean: bool
) -> PeerWatch:
    """Rank 0 claims the output folders and saves the config; every process watches the peers'
    status files from here on (its own watch, on its own clock)."""
    if par.is_main:
        claim_outputs(outputs(paths), "grpo", resume, clean, paths.launch("grpo"))
        save_config(paths.config("grpo"), config)
    return PeerWatch(paths.status("grpo").parent)


def agree_start(
    config: GrpoConfig, paths: RunPaths, par: Parallel, train_file: Path, resume: bool
) -> Start:
    """Rank 0 decides where the run starts; every process follows."""
    # rank 0 materialises a builtin model (once); the others use the folder it made
    init_dir = par.broadcast(resolve_init_model(config.init_model, paths) if par.is_main else None)
    return par.broadcast(
        choose_plan(config, paths, train_file, init_dir, resume) if par.is_main else None
    )


def publish_start(paths: RunPaths, start: Start, trainer: Trainer) -> None:
    """A fresh run's plan and policy version 0 (the starting model), the rollout's first input."""
    write_plan(paths.plan, start.plan)
    meta = {
        "plan_id": start.plan.plan_id,
        "step": None,
        "init_model": record_path(start.init_dir, paths.root),
    }
    publish_policy(
        trainer.model,
        trainer.tokenizer,
        paths,
        0,
        meta,
        start.init_dir,
        publish_dtype=trainer.precision.publish_dtype,
    )


def restore(
    config: GrpoConfig, paths: RunPaths, par: Parallel, trainer: Trainer, step: int
) -> None:
    """--resume: the optimizer state saved with policy `step`, and the schedule at that step."""
    load_optimizer(
        paths, par, trainer.optimizer, trainer.scheduler, step, par.device, trainer.masters
    )
    trainer.resume_schedule(config, step)


def log_setup(config: GrpoConfig, par: Parallel, plan: Plan, trainer: Trainer) -> None:
    """Two lines: the plan and how it is trained, and the learning-rate schedule."""
    weights = trainer.weights
    logger.info(
        "plan %s: %d steps (%d per epoch, pool %d) x %d prompts x n=%d, max_staleness=%d, "
        "rollout_workers=%d; training: %s x%d on %s, %s of %s weights trainable%s, "
        "weights %s, compute %s",
        plan.plan_id,
        plan.total_steps,
        plan.steps_per_epoch,
        plan.pool,
        plan.batch,
        plan.n,
        plan.max_staleness,
        plan.rollout_workers,
        config.strategy,
        par.world,
        par.device,
        f"{weights.trainable:,}",
        f"{weights.total:,}",
        f" (LoRA r={weights.lora_rank})" if weights.lora_rank is not None else "",
        str(trainer.precision.weights).removeprefix("torch."),
        str(trainer.precision.compute).removeprefix("torch."),
    )
    logger.info(trainer.describe_schedule(config))


def train_steps(ctx: RunContext, trainer: Trainer, resume: bool) -> None:
    """Train every step of the plan from the start; rank 0 logs each step's metrics once its
    policy is published (a step later when the policy is written in the background)."""
    plan, first = ctx.start.plan, ctx.start.step
    main = ctx.par.is_main
    metrics = open_metrics(ctx.paths, plan, first, resume, ctx.config) if main else None
    publisher: Publisher[float] = Publisher(background=main and in_background(ctx))
    if publisher.background:
        logger.info("each policy is written in a background thread while the next step trains")
    unlogged: list[StepResult] = []  # trained, their policies not yet published
    for step in range(first, plan.total_steps):
        result = train_one_step(ctx, trainer, step, publisher)
        if metrics is not None:
            unlogged.append(result)
            log_published(metrics, plan, unlogged, publisher)
    publisher.close()
    if metrics is not None:
        log_published(metrics, plan, unlogged, publisher)
        metrics.close()


def in_background(ctx: RunContext) -> bool:
    """Whether policies are written while the next step trains: one step off-policy or more
    (the rollout worker samples from an older policy meanwhile), and with `auto` only where the
    update does not compute on the CPU the write needs."""
    mode = ctx.config.publish_in_background
    if ctx.start.plan.max_staleness == 0 or mode == "never":
        return False
    return mode == "always" or ctx.par.device.type == "cuda"


def train_one_step(
    ctx: RunContext, trainer: Trainer, step: int, publisher: Publisher[float]
) -> StepResult:
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
    publish_step(ctx, trainer, step, stats, publisher)
    return StepResult(step, stats, wait_s, update_s, time.perf_counter() - t_publish)


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
    """Policy step+1, with the optimizer state first when it is due. The previous policy's
    background publish is waited for first: it prunes the optimizer states but its own, and
    this step's state must outlive that."""
    config, paths, par = ctx.config, ctx.paths, ctx.par
    publisher.wait()
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
        )
        if saved:
            prune_optimizer_states(paths, version)
        prune_policies(paths, config.keep_policies)
        crash_point("grpo", "after_policy_marker", step)
        return seconds

    publisher.submit(publish)


def log_published(
    metrics: MetricsLogger, plan: Plan, unlogged: list[StepResult], publisher: Publisher[float]
) -> None:
    """The metrics lines of the steps whose policies are now published, oldest first."""
    for publish_s in publisher.finished():
        log_step(metrics, plan, unlogged.pop(0), publish_s)


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


def choose_plan(
    config: GrpoConfig, paths: RunPaths, train_file: Path, init_dir: Path, resume: bool
) -> Start:
    """The plan to follow and where to start: the run's own plan from its newest published
    policy on --resume, else a fresh plan from policy 0 = the starting model."""
    from proactive_rl.shared.schemas import RL_DATA, read_table  # pyarrow

    train_rows = read_table(train_file, RL_DATA).num_rows
    train_sha = sha256_file(train_file)
    plan = read_plan(paths.plan) if resume and paths.plan.is_file() else None
    versions = versions_of(paths, plan) if plan else []
    if plan and versions:
        if (plan.train_rows, plan.train_sha256) != (train_rows, train_sha):
            raise UserError(f"--resume: {train_file} changed since the run started; use --clean")
        return resumed_start(config, paths, plan, max(versions), init_dir)
    return Start(init_dir, new_plan(config, train_rows, train_sha), 0, init_dir)


def resumed_start(
    config: GrpoConfig, paths: RunPaths, plan: Plan, step: int, init_dir: Path
) -> Start:
    """--resume from policy `step` of the run's own plan, once that policy checks out."""
    if config.rollout_workers != plan.rollout_workers:
        # the steps already sampled were split this way; the rollout workers read the plan
        logger.warning(
            "--resume keeps the run's rollout_workers=%d (given %d): start that many "
            "rollout workers, or start over with --clean",
            plan.rollout_workers,
            config.rollout_workers,
        )
    logger.info("resuming plan %s at step %d", plan.plan_id, step)
    verify(paths.policy(step), "Start over with --clean", cache=VERIFIED)
    check_model_folder(paths.policy(step), "start over with --clean")
    return Start(init_dir, plan, step, paths.policy(step))
