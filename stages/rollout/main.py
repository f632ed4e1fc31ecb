"""proactive rollout: the long-running generation worker.

For every RL step of the plan it waits for a policy recent enough (max_staleness), samples n
responses for each of the step's prompts, scores each whole group with the shared reward, and
publishes `rollouts/step_N/rollouts.parquet`. Runs beside `proactive grpo`:

    proactive rollout --run-dir checkpoints/default --set reward_kwargs.beta=0.5

With grpo's `rollout_workers=N`, N of these split each step, each started with its `worker`
(0..N-1) and publishing its share as `rollouts/part-<worker>-of-N/step_N`:

    proactive rollout --run-dir checkpoints/default --set worker=1
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from proactive_rl.shared.claims import claim_outputs, remove_unpublished, start_mode
from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import RunPaths, numbered_children, rollout_worker_name
from proactive_rl.shared.peers import PeerWatch, failure_reported, worker_status
from proactive_rl.shared.publish import is_stable, read_marker
from proactive_rl.shared.schedule import read_plan
from proactive_rl.stages.common import (
    check_writable,
    config_options,
    dir_options,
    reuse_options,
    save_config,
)
from proactive_rl.stages.rollout.config import RolloutConfig

logger = logging.getLogger(__name__)


@click.command(
    help="Rollout worker: for each RL step of the plan published by `proactive grpo`, wait for "
    "the policy it needs, sample n responses per prompt, score whole groups with the reward "
    "and publish <run-dir>/rollouts/step_N (with grpo's rollout_workers=N > 1: this worker's "
    "share, <run-dir>/rollouts/part-<worker>-of-N/step_N). Exits after the plan's last step.",
    epilog="\b\nConfig fields (--set key=value, dotted for nested):\n"
    + describe(RolloutConfig, stage="rollout"),
)
@dir_options
@config_options
@reuse_options
def command(run_dir, data_dir, recipe, config_file, overrides, resume, clean):
    # any failure, from the config on, reaches grpo through a status file: the config's as
    # the rollout's (the worker is not known before it loads), later ones as this worker's,
    # the file grpo watches while it waits for this worker's part
    paths = RunPaths(run_dir)
    with failure_reported(paths.status("rollout")):
        config = resolve(recipe, config_file, overrides)
    with failure_reported(paths.status(rollout_worker_name(config.worker))):
        run(config, run_dir, data_dir, resume=resume, clean=clean)


def resolve(
    recipe: str | None, config_file: Path | None, overrides: tuple[str, ...]
) -> RolloutConfig:
    """The stage's config from its options, as `proactive rollout` and `proactive preflight`
    read it."""
    return load_config(RolloutConfig, config_file, overrides, recipe or None, "rollout")


def outputs(config: RolloutConfig, paths: RunPaths) -> list[Path]:
    """What this worker claims in the run directory (--resume / --clean act on these): only its
    own folders, since the other workers may have published theirs already."""
    return paths.rollout_outputs(config.worker)


def run(config: RolloutConfig, run_dir: Path, data_dir: Path, resume: bool, clean: bool) -> None:
    import torch

    from proactive_rl.engine.generation import make_backend
    from proactive_rl.engine.gpus import check_gpus
    from proactive_rl.engine.host_memory import keep_freed_memory
    from proactive_rl.shared.rewards import load_reward
    from proactive_rl.stages.rollout.loop import Worker, check_worker, follow_plan

    check_gpus()  # a GPU container that sees too few GPUs stops here, not on the CPU hours later
    paths = RunPaths(run_dir)
    name = rollout_worker_name(config.worker)
    # a restart of the launch that claimed the outputs continues them, whatever RUN_MODE says
    resume, clean = start_mode(paths.launch(name), name, resume, clean)
    written = [
        paths.rollouts,
        paths.logs(name),
        paths.config(name).parent,
        paths.launch(name).parent,
    ]
    check_writable([paths.root, *written, paths.status(name).parent], "pass another --run-dir")
    # fail on a bad reward or worker index before touching the run directory or waiting
    reward_fn = load_reward(config.reward, config.reward_kwargs)
    if paths.plan.is_file() and not clean:  # --clean: grpo is about to write a new plan
        check_worker(config, paths, read_plan(paths.plan))
    # the peers' status files as at our start: every wait judges grpo by change seen since
    started = PeerWatch(paths.status(name).parent)
    if clean:
        refuse_rewriting_history(config, paths, started)
    claim_outputs(outputs(config, paths), name, resume, clean, paths.launch(name))
    if resume and config.worker == 0:
        # leftovers of one-worker steps sit in rollouts/ itself, beside the other workers' parts
        remove_unpublished(paths.rollouts)
    save_config(paths.config(name), config)

    # Running (heartbeats) from before the engine starts, which can take minutes: a grpo worker
    # resumed at the same time takes a status older than its own start for a peer not coming.
    with worker_status(paths.status(name)):
        if not torch.cuda.is_available():
            keep_freed_memory()  # generation on this host's cores: engine/host_memory.py
        # one engine for the whole run: a new plan (grpo --clean) reuses it too; it fails here,
        # before any waiting, where it cannot run
        backend = make_backend(
            config.backend,
            config.precision,
            config.vllm,
            config.sampling.max_prompt_tokens + config.sampling.max_new_tokens,
        )
        logger.info("generation backend: %s", type(backend).__name__)
        worker = Worker(config, paths, data_dir, started, reward_fn, backend)
        # grpo rewrites the plan when it starts over (--clean); a stale plan read before that
        # is abandoned as soon as the new one appears, so the worker follows the current plan.
        while not follow_plan(worker):
            logger.info("the plan changed (grpo started over): following the new plan")
        backend.close()


def owns_steps(paths: RunPaths, worker: int) -> bool:
    """Whether this worker has rollouts on the volume (published or not)."""
    return any(
        p.name.startswith("step_") or any(p.rglob("step_*")) for p in paths.rollout_outputs(worker)
    )


def trained_on(paths: RunPaths, worker: int = 0) -> int | None:
    """The newest policy grpo trained on rollouts of the current plan (None: no such policy, or
    no rollouts of this worker to lose)."""
    if not paths.plan.is_file() or not owns_steps(paths, worker):
        return None
    plan_id = read_plan(paths.plan).plan_id
    trained = [
        version
        for version, folder in numbered_children(paths.policies)
        if version >= 1 and is_stable(folder) and read_marker(folder).get("plan_id") == plan_id
    ]
    return max(trained, default=None)


def grpo_running_since(paths: RunPaths, watch: PeerWatch) -> bool:
    """grpo has written a running status since our start (seen on our clock, never by
    comparing its host's clock with ours)."""
    status = watch.news(paths.status("grpo"))
    return status is not None and status.state == "running"


def refuse_rewriting_history(config: RolloutConfig, paths: RunPaths, watch: PeerWatch) -> None:
    """`--clean` deletes the rollouts. Refused while grpo has trained on them under the current
    plan: new ones, sampled from newer policies, would not be what was trained. A grpo started
    with --clean at the same time (RUN_MODE=--clean) deletes that plan within seconds, so that
    is waited for, up to peer_start_timeout (it may still be pulling its image); a grpo running
    with the plan still in place (a heartbeat since we started: it has claimed its outputs) is
    not starting over."""
    deadline = time.monotonic() + config.peer_start_timeout
    if trained_on(paths, config.worker) is not None:
        logger.info("rollout --clean: waiting for grpo to start the run over (--clean)")
    while (trained := trained_on(paths, config.worker)) is not None:
        over = time.monotonic() > deadline
        still = trained_on(paths, config.worker) is not None
        if over or (grpo_running_since(paths, watch) and still):
            raise UserError(
                f"rollout --clean would delete rollouts that grpo trained policies 1..{trained} "
                f"on; new ones, sampled from newer policies, would not be what was trained. To "
                "start the RL run over, start both workers with --clean (grpo writes a new "
                "plan); to continue it, start both with --resume"
            )
        time.sleep(0.5)
