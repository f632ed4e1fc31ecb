"""Run-directory claims: a stage refuses to start over the outputs of an earlier run unless told
`--resume` (keep what was published, drop the leftovers of a crash) or `--clean` (delete its
outputs first), so a second start never silently mixes two runs' artifacts.

A restart is not a second run. When PROACTIVE_LAUNCH_ID names the launch (Kubernetes: the
JobSet's uid, the same for every restart, preemption or rescheduled pod of it), a stage records
it when it claims its outputs (RunPaths.launch), and a start over outputs claimed by the same
launch continues them as `--resume`, whatever `--resume`/`--clean` say: a restart never stops
on "already holds outputs" and never wipes progress. Outputs of another launch, or of none, are
claimed as before.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.publish import is_stable, read_json, write_json_atomic

logger = logging.getLogger(__name__)

LAUNCH_ENV = "PROACTIVE_LAUNCH_ID"


def remove_unpublished(parent: Path) -> None:
    """Delete temporary folders and folders without a marker (leftovers of a crash)."""
    if not parent.is_dir():
        return
    for child in parent.iterdir():
        if child.name.startswith(".") and ".tmp-" in child.name:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        elif child.is_dir() and not is_stable(child) and child.name.startswith(("step_", "epoch_")):
            shutil.rmtree(child)


def current_launch(environ: Mapping[str, str] = os.environ) -> str | None:
    """This launch's id (PROACTIVE_LAUNCH_ID); None when unset or empty.

    >>> current_launch({"PROACTIVE_LAUNCH_ID": " 7f3a "}), current_launch({})
    ('7f3a', None)
    """
    return environ.get(LAUNCH_ENV, "").strip() or None


def recorded_launch(marker: Path) -> str | None:
    """The launch that claimed a stage's outputs (None: no record, or an unreadable one)."""
    try:
        launch = read_json(marker).get("launch_id")
    except (OSError, ValueError, AttributeError):
        return None
    return launch if isinstance(launch, str) and launch else None


def continues_launch(marker: Path, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this start is a restart of the launch that claimed the outputs."""
    current = current_launch(environ)
    return current is not None and recorded_launch(marker) == current


def start_mode(
    marker: Path,
    stage: str,
    resume: bool,
    clean: bool,
    environ: Mapping[str, str] = os.environ,
) -> tuple[bool, bool]:
    """(resume, clean) for this start: a restart of the launch that claimed the outputs
    continues them (--resume), whatever was given; any other start keeps what was given."""
    if not continues_launch(marker, environ):
        return resume, clean
    given = " ".join(f for f, on in (("--resume", resume), ("--clean", clean)) if on)
    logger.info(
        "%s: a restart of launch %s, which claimed these outputs: continuing them as --resume "
        "(given: %s)",
        stage,
        current_launch(environ),
        given or "neither --resume nor --clean",
    )
    return True, False


def check_claim(outputs: list[Path], stage: str, resume: bool, clean: bool) -> None:
    """Raise the refusal claim_outputs would raise, touching nothing (preflight asks this)."""
    if resume and clean:
        raise UserError("--resume and --clean exclude each other")
    used = used_outputs(outputs)
    if used and not (resume or clean):
        raise _refusal(stage, used)


def claim_outputs(
    outputs: list[Path],
    stage: str,
    resume: bool,
    clean: bool,
    marker: Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> None:
    """Refuse to reuse a stage's outputs from an earlier run unless `--resume` or `--clean`;
    with `marker`, record which launch claimed them (pass the mode start_mode returned)."""
    check_claim(outputs, stage, resume, clean)
    used = used_outputs(outputs)
    if clean:
        _delete(used)
    elif resume:
        for path in used:
            if path.is_dir():
                remove_unpublished(path)
    if marker is not None:
        record_launch(marker, environ)


def record_launch(marker: Path, environ: Mapping[str, str] = os.environ) -> None:
    """Record this launch as the claimant of a stage's outputs; a start without a launch id
    drops an earlier launch's record, so a late restart of that launch does not take over
    outputs another start has claimed since."""
    current = current_launch(environ)
    if current is None:
        marker.unlink(missing_ok=True)
    elif recorded_launch(marker) != current:
        write_json_atomic(marker, {"launch_id": current, "claimed_at": time.time()})


def used_outputs(outputs: list[Path]) -> list[Path]:
    """The outputs an earlier run left something in: files, and folders that are not empty."""
    return [p for p in outputs if p.exists() and (p.is_file() or any(p.iterdir()))]


def _delete(used: list[Path]) -> None:
    for path in used:
        logger.info("--clean: removing %s", path)
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _refusal(stage: str, used: list[Path]) -> UserError:
    listing = ", ".join(str(p) for p in used)
    return UserError(
        f"{stage}: the run directory already holds outputs ({listing}). "
        "Pass --resume to continue that run or --clean to delete them and start over "
        "(in compose: RUN_MODE=--resume or RUN_MODE=--clean)."
    )
