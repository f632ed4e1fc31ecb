"""What `grpo --resume` needs besides the published policies: the optimizer state that matches
the newest policy, and a metrics log with exactly one line per finished step, whatever moment
a kill came at (docs/reliability.md, "What --resume promises")."""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proactive_rl.engine.host_memory import drop_cached_pages
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.metrics import MetricsLogger
from proactive_rl.shared.paths import RunPaths
from proactive_rl.shared.publish import read_marker
from proactive_rl.shared.schedule import Plan
from proactive_rl.shared.trackers import open_metrics as open_tracked

if TYPE_CHECKING:  # imported inside the functions: this module loads without torch
    import torch

    from proactive_rl.engine.parallel import Parallel
    from proactive_rl.stages.grpo.config import GrpoConfig

logger = logging.getLogger(__name__)


def prune_optimizer_states(paths: RunPaths, version: int) -> None:
    """Delete the optimizer states saved with policies older than `version`. Called only after
    that policy is published: until then the state of the previous policy is the one to resume
    from. Newer ones stay: under ZeRO the other processes may be saving the next one while rank
    0 publishes in the background, and a newer state left by a kill is saved again anyway."""
    for old in paths.grpo_state.glob("optimizer_*.pt*"):
        if _state_version(old.name) < version:
            old.unlink()
    for old in (paths.grpo_state / "deepspeed").glob("v*"):
        if _state_version(old.name) < version:
            shutil.rmtree(old)


def _state_version(name: str) -> int:
    """The policy version in a state's name (optimizer_step_000003.pt, deepspeed/v3).

    >>> _state_version("optimizer_step_000003.pt"), _state_version("v12")
    (3, 12)
    """
    return int(re.search(r"(\d+)", name).group(1))


def open_metrics(
    paths: RunPaths, plan: Plan, start_step: int, resume: bool, config: GrpoConfig | None = None
) -> MetricsLogger:
    """The metrics log of the trainer (rank 0), mirrored to `config`'s trackers (None: the log
    alone, to write a lost line). On --resume from policy `start_step`, lines of the steps
    about to be trained again are dropped, and the line of the last finished step is written
    from its policy's marker if a kill came between that marker and the line."""
    resume_at = start_step if resume else None
    if config is None:
        metrics = MetricsLogger(paths.logs("grpo"), resume_at=resume_at)
    else:
        metrics = open_tracked(config.tracking, paths, "grpo", config, resume_at=resume_at)
    if not resume:
        return metrics
    last = start_step - 1
    if last >= 0 and last not in metrics.steps():
        logged = read_marker(paths.policy(start_step)).get("metrics")
        if logged is not None:
            # all but the publish times (time/publish_s, time/publish_wait_s): the marker is
            # written before they are known
            metrics.log(last, {**logged, "recovered": True})
            logger.info("metrics of step %d written from policy %d's marker", last, start_step)
    if start_step < plan.total_steps and (start_step > 0 or metrics.dropped):
        metrics.event(start_step, "resume", dropped_lines=metrics.dropped)
    return metrics


def save_optimizer(
    paths: RunPaths,
    par: Parallel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    version: int,
    masters: torch.nn.Module | None = None,
) -> None:
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
    # written out already, and kept on disk until this state's policy is published: its pages
    # go first, for this write to reuse (8 bytes a parameter, 12 with float32 masters:
    # engine/host_memory.py)
    for written in paths.grpo_state.glob("optimizer_*.pt"):
        drop_cached_pages(written)
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
    paths: RunPaths,
    par: Parallel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    version: int,
    device: torch.device | str,
    masters: torch.nn.Module | None = None,
) -> None:
    """Restore what save_optimizer saved with policy `version`; without it (or with another
    version's) the optimizer starts fresh, with a warning."""
    import torch

    state = read_optimizer_state(paths.grpo_optimizer_state(version), device)
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


def read_optimizer_state(state_file: Path, device: torch.device | str) -> dict[str, Any] | None:
    """The saved state in `state_file` (None: no file), refused if it holds more than tensors
    and plain values."""
    import torch

    if not state_file.is_file():
        return None
    try:
        # tensors and plain containers only: whoever can write the run directory must not
        # be able to run code in the trainer through a pickle
        return torch.load(state_file, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).splitlines()[0]
        raise UserError(
            f"{state_file} holds more than tensors and plain values, so it is not loaded "
            f"(unpickling it could run code): {first}. Delete it to resume with a fresh "
            "optimizer state, or start over with --clean"
        ) from None
