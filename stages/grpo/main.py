"""proactive grpo: the long-running GRPO trainer worker.

Publishes the plan and policy version 0 (the starting model), then for every step waits for
that step's rollouts, computes group-normalised advantages and the clipped policy loss with a
KL penalty to the reference model, steps the optimizer, and publishes the next policy version:

    proactive grpo --run-dir checkpoints/default --set n=16 --set epochs=10
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import click

from proactive_rl.engine.model_checks import check_model_folder
from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.faults import crash_point
from proactive_rl.shared.paths import EPOCH_RE, DataPaths, RunPaths, numbered_children, record_path
from proactive_rl.shared.publish import (
    claim_outputs,
    failure_reported,
    is_stable,
    published,
    read_marker,
    sha256_file,
    staged,
    verified,
    verified_processed,
    worker_status,
)
from proactive_rl.shared.schedule import Plan
from proactive_rl.stages.common import config_options, dir_options, reuse_options, save_config
from proactive_rl.stages.grpo.config import GrpoConfig

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
def command(run_dir, data_dir, recipe, config_file, overrides, resume, clean):
    # any failure, from the config on, reaches the peer through this worker's status file
    with failure_reported(RunPaths(run_dir).status("grpo")):
        config = load_config(GrpoConfig, config_file, overrides, recipe or None, "grpo")
        run(config, run_dir, data_dir, resume=resume, clean=clean)


def resolve_init_model(spec: str, paths: RunPaths) -> Path:
    if spec == "sft":
        epochs = [f for _, f in published(paths.sft, EPOCH_RE)]
        if not epochs:
            raise UserError(
                f"init_model='sft' but {paths.sft} holds no published epoch: run `proactive sft` "
                "first, or set init_model to a model folder (or builtin:tiny) to skip SFT"
            )
        verified(epochs[-1], "Run `proactive sft --clean` to publish the SFT epochs again")
        check_model_folder(epochs[-1], "run `proactive sft --clean` to publish them again")
        return epochs[-1]
    from proactive_rl.engine.models import resolve_base_model

    return resolve_base_model(spec, paths.base_models)


def check_before_training(config: GrpoConfig, paths: RunPaths) -> None:
    """Before training: the run directory is writable, the starting model readable (a built-in
    one is built here, once), and the disk holds a policy and the optimizer state."""
    from proactive_rl.engine.model_checks import weights_numel
    from proactive_rl.stages.common import check_free_space, check_writable

    outputs = [paths.policies, paths.grpo_state, paths.logs("grpo"), paths.base_models]
    outputs += [paths.config("grpo").parent, paths.status("grpo").parent]
    check_writable([paths.root, *outputs], "pass another --run-dir")
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


def publish_policy(
    model,
    tokenizer,
    paths: RunPaths,
    version: int,
    meta: dict[str, Any],
    init_dir: Path,
    state_dict=None,
    publish_dtype=None,
) -> float:
    """Save a complete Hugging Face folder (the consolidated weights under ZeRO-3), or a LoRA
    adapter naming its base, and publish it; vLLM and transformers load it as it is."""
    from proactive_rl.stages.grpo.policy import save_policy

    start = time.perf_counter()
    final = paths.policy(version)
    with staged(final, {"version": version, **meta}) as staging:
        save_policy(model, staging, final, init_dir, state_dict, publish_dtype)
        tokenizer.save_pretrained(staging)
    return time.perf_counter() - start


def run(config: GrpoConfig, run_dir: Path, data_dir: Path, resume: bool, clean: bool) -> None:
    import contextlib

    import torch
    from transformers import AutoTokenizer

    from proactive_rl.engine.generation import pick_dtype
    from proactive_rl.engine.parallel import Parallel, relaunch
    from proactive_rl.shared.metrics import json_safe
    from proactive_rl.shared.schedule import write_plan
    from proactive_rl.stages.grpo.policy import (
        build_policy,
        is_adapter,
        master_dtype,
        reference_model,
    )
    from proactive_rl.stages.grpo.resume import open_metrics, prune_optimizer_states
    from proactive_rl.stages.grpo.rollouts import read_parts, wait_parts
    from proactive_rl.stages.grpo.schedule import (
        build_scheduler,
        describe_schedule,
        resume_scheduler,
        updates_actor,
    )
    from proactive_rl.stages.grpo.update import train_step

    paths = RunPaths(run_dir)
    train_file = DataPaths(data_dir).rl_train
    if not train_file.is_file():
        raise UserError(f"{train_file} does not exist: run `proactive prep` first")
    verified_processed(DataPaths(data_dir))
    check_before_training(config, paths)
    relaunch(config.strategy, config.num_processes)  # ddp/zero*: this command, once per GPU
    par = Parallel.start(config.strategy)
    if par.is_main:
        claim_outputs([paths.policies, paths.grpo_state, paths.logs("grpo")], "grpo", resume, clean)
        save_config(paths.config("grpo"), config)
    started = par.broadcast(time.time())

    # Only rank 0 writes to the volume: status heartbeat, plan, policies, metrics.
    status = worker_status(paths.status("grpo")) if par.is_main else contextlib.nullcontext()
    with status:
        torch.manual_seed(config.seed)
        dtype = pick_dtype(config.precision)
        device = par.device
        # rank 0 materialises a builtin model (once); the others use the folder it made
        init_dir = par.broadcast(
            resolve_init_model(config.init_model, paths) if par.is_main else None
        )
        plan, start_step, start_dir = par.broadcast(
            choose_plan(config, paths, train_file, init_dir, resume) if par.is_main else None
        )

        tokenizer = AutoTokenizer.from_pretrained(start_dir)
        weights_dtype = master_dtype(config, dtype)
        # float32 masters compute in `dtype` (autocast); published in `dtype`
        mixed = weights_dtype != dtype
        model = build_policy(config, start_dir, init_dir, weights_dtype).to(device)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        ref_model = reference_model(config, model, init_dir, dtype, device)

        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],  # LoRA: the adapter alone
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
            betas=config.betas,
        )
        # counted in RL steps, as veRL's actor schedule: train_step steps it once per RL step.
        # Its span is veRL's total_training_steps: max_steps when set, even beyond the data.
        span = plan.steps_per_epoch * plan.epochs if config.max_steps is None else config.max_steps
        scheduler = build_scheduler(optimizer, config, span)
        if start_step == 0 and par.is_main:
            write_plan(paths.plan, plan)
            publish_policy(
                model,
                tokenizer,
                paths,
                0,
                {
                    "plan_id": plan.plan_id,
                    "step": None,
                    "init_model": record_path(init_dir, paths.root),
                },
                init_dir,
                publish_dtype=dtype if mixed else None,
            )
        lora_rank = model.peft_config["default"].r if is_adapter(model) else None
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        module = par.wrap(model, optimizer, config)  # ZeRO-3 partitions: count before
        if start_step > 0:
            load_optimizer(
                paths, par, optimizer, scheduler, start_step, device, model if mixed else None
            )
            scheduler = resume_scheduler(optimizer, scheduler, config, span, start_step)
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
            device,
            f"{trainable:,}",
            f"{total:,}",
            f" (LoRA r={lora_rank})" if lora_rank is not None else "",
            str(weights_dtype).removeprefix("torch."),
            str(dtype).removeprefix("torch."),
        )
        logger.info(describe_schedule(config, span))

        metrics = open_metrics(paths, plan, start_step, resume) if par.is_main else None
        for step in range(start_step, plan.total_steps):
            t_wait = time.perf_counter()
            # every process waits on the volume itself (a collective would time out while a
            # long generation step runs), for every rollout worker's part of the step
            markers = wait_parts(config, paths, plan, step, started)
            wait_s = time.perf_counter() - t_wait
            marker, rows = read_parts(paths, plan, step, markers)

            t_update = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype, enabled=mixed):
                stats = train_step(
                    module,
                    ref_model,
                    optimizer,
                    scheduler,
                    rows,
                    config,
                    n=plan.n,
                    temperature=marker["temperature"],
                    max_new_tokens=marker["max_new_tokens"],
                    device=device,
                    par=par,
                    update_actor=updates_actor(config, step),
                )
            update_s = time.perf_counter() - t_update

            stats.update(
                {
                    "time/wait_s": wait_s,
                    "time/update_s": update_s,
                    "rollout/policy_lag": step - marker["policy_version"],
                    "time/generate_s": marker["seconds"]["generate"],
                    "time/policy_load_s": marker["seconds"].get("load", 0.0),
                }
            )
            t_pub = time.perf_counter()
            saved = (step + 1) % config.state_every_steps == 0 or step + 1 == plan.total_steps
            if saved:
                save_optimizer(paths, par, optimizer, scheduler, step + 1, model if mixed else None)
            crash_point("grpo", "after_optimizer_save", step)
            # collective under ZeRO-3 (LoRA: the adapter's parameters only)
            state = par.full_state_dict(model, trainable_only=lora_rank is not None)
            if par.is_main:
                publish_policy(
                    model,
                    tokenizer,
                    paths,
                    step + 1,
                    {
                        "plan_id": plan.plan_id,
                        "step": step,
                        "reward_mean": stats["reward/mean"],
                        # the step's metrics line, should a kill come before it is written
                        "metrics": json_safe(stats),
                    },
                    init_dir,
                    state_dict=state,
                    publish_dtype=dtype if mixed else None,
                )
                if saved:
                    prune_optimizer_states(paths, step + 1)
                prune_policies(paths, config.keep_policies)
            crash_point("grpo", "after_policy_marker", step)
            publish_s = time.perf_counter() - t_pub
            if metrics is None:
                continue
            metrics.log(step, {**stats, "time/publish_s": publish_s})
            logger.info(
                "step %d/%d: reward %.3f, group acc %.3f, proactive %.3f, kl %.4f, "
                "grad norm %.3f (update %.1fs, waited %.1fs)",
                step + 1,
                plan.total_steps,
                stats["reward/mean"],
                stats["reward/group_acc"],
                stats["reward/proactive_rate"],
                stats.get("loss/kl", 0.0),
                stats["opt/grad_norm"],
                update_s,
                wait_s,
            )
        if metrics is not None:
            metrics.close()
        del module, optimizer  # the wrapper must not outlive the process group (Parallel.close)
        par.close()


def choose_plan(
    config: GrpoConfig, paths: RunPaths, train_file: Path, init_dir: Path, resume: bool
) -> tuple[Plan, int, Path]:
    """The plan to follow and where to start: the run's own plan from its newest published
    policy on --resume, else a fresh plan from policy 0 = the starting model."""
    from proactive_rl.shared.schedule import read_plan
    from proactive_rl.shared.schemas import RL_DATA, read_table

    train_rows = read_table(train_file, RL_DATA).num_rows
    train_sha = sha256_file(train_file)
    plan = read_plan(paths.plan) if resume and paths.plan.is_file() else None
    published = [
        v
        for v, f in numbered_children(paths.policies)
        if plan and is_stable(f) and read_marker(f).get("plan_id") == plan.plan_id
    ]
    if plan and published:
        if (plan.train_rows, plan.train_sha256) != (train_rows, train_sha):
            raise UserError(f"--resume: {train_file} changed since the run started; use --clean")
        if config.rollout_workers != plan.rollout_workers:
            # the steps already sampled were split this way; the rollout workers read the plan
            logger.warning(
                "--resume keeps the run's rollout_workers=%d (given %d): start that many "
                "rollout workers, or start over with --clean",
                plan.rollout_workers,
                config.rollout_workers,
            )
        start_step = max(published)
        logger.info("resuming plan %s at step %d", plan.plan_id, start_step)
        verified(paths.policy(start_step), "Start over with --clean")
        check_model_folder(paths.policy(start_step), "start over with --clean")
        return plan, start_step, paths.policy(start_step)
    plan = Plan(
        plan_id=uuid.uuid4().hex[:12],
        train_rows=train_rows,
        train_sha256=train_sha,
        prompts_per_step=config.prompts_per_step,
        n=config.n,
        epochs=config.epochs,
        seed=config.seed,
        max_staleness=config.max_staleness,
        max_steps=config.max_steps,
        max_prompts=config.max_prompts,
        rollout_workers=config.rollout_workers,
    )
    if plan.total_steps == 0:
        raise UserError("the plan has no steps: the train split is empty")
    if plan.rollout_workers > plan.batch:
        raise UserError(
            f"rollout_workers={plan.rollout_workers} is more than the {plan.batch} prompts of a "
            "step: every rollout worker needs at least one prompt a step; use fewer workers or "
            "a larger prompts_per_step"
        )
    return plan, 0, init_dir


def save_optimizer(paths: RunPaths, par, optimizer, scheduler, version: int, masters=None) -> None:
    """Optimizer + schedule state for --resume, as of policy `version`; with `masters` (the
    model holding float32 master weights) those too, since the published policy is bf16."""
    import torch

    if par.engine is not None:  # ZeRO: each process saves its partition (collective)
        par.engine.save_checkpoint(str(paths.grpo_state / "deepspeed"), tag=f"v{version}")
        par.barrier()
    if not par.is_main:
        return
    paths.grpo_state.mkdir(parents=True, exist_ok=True)
    state_file = paths.grpo_optimizer_state(version)
    tmp_state = state_file.with_suffix(".pt.tmp")
    torch.save(
        {
            "version": version,
            "optimizer": optimizer.state_dict() if par.engine is None else None,
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "masters": masters.state_dict() if masters is not None else None,
        },
        tmp_state,
    )
    with open(tmp_state, "rb") as fh:  # on disk before its policy's marker can be
        os.fsync(fh.fileno())
    tmp_state.replace(state_file)


def load_optimizer(
    paths: RunPaths, par, optimizer, scheduler, version: int, device, masters=None
) -> None:
    import pickle

    import torch

    state_file = paths.grpo_optimizer_state(version)
    state = None
    if state_file.is_file():
        try:
            # tensors and plain containers only: whoever can write the run directory must not
            # be able to run code in the trainer through a pickle
            state = torch.load(state_file, map_location=device, weights_only=True)
        except pickle.UnpicklingError as err:
            first = str(err).splitlines()[0]
            raise UserError(
                f"{state_file} holds more than tensors and plain values, so it is not loaded "
                f"(unpickling it could run code): {first}. Delete it to resume with a fresh "
                "optimizer state, or start over with --clean"
            ) from None
    if state is None or state["version"] != version:
        logger.warning("no optimizer state for policy version %d: starting it fresh", version)
        return
    if par.engine is not None:
        par.engine.load_checkpoint(
            str(paths.grpo_state / "deepspeed"),
            tag=f"v{version}",
            load_module_strict=False,
            load_lr_scheduler_states=False,
        )
    else:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"].cpu())
    if masters is not None and state.get("masters") is not None:
        masters.load_state_dict(state["masters"])  # the float32 weights behind the bf16 policy
        logger.info("resumed the float32 master weights of policy %d", version)


def prune_policies(paths: RunPaths, keep: int | None) -> None:
    if keep is None:
        return
    for _, folder in numbered_children(paths.policies)[:-keep]:
        shutil.rmtree(folder)
