"""proactive grpo: the long-running GRPO trainer worker.

Publishes the plan and policy version 0 (the starting model), then for every step waits for
that step's rollouts, computes group-normalised advantages and the clipped policy loss with a
KL penalty to the reference model, steps the optimizer, and publishes the next policy version:

    proactive grpo --run-dir checkpoints/default --set n=16 --set epochs=10
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from proactive_rl.engine.model_checks import check_model_folder, weights_numel
from proactive_rl.shared.claims import claim_outputs, continues_launch, start_mode
from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.errors import UserError
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
from proactive_rl.stages.grpo.publishing import publish_policy
from proactive_rl.stages.grpo.resume import (
    load_optimizer,
    open_metrics,
)
from proactive_rl.stages.grpo.run_start import Start, new_plan, resolve_init_model, versions_of
from proactive_rl.stages.grpo.steps import RunContext, train_steps

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
        compute = start_torch(config, par.device)
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
