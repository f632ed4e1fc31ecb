"""Run-directory claims: a stage refuses to start over the outputs of an earlier run unless told
`--resume` (keep what was published, drop the leftovers of a crash) or `--clean` (delete its
outputs first), so a second start never silently mixes two runs' artifacts.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.publish import is_stable

logger = logging.getLogger(__name__)


def remove_unpublished(parent: Path) -> None:
    """Delete temporary folders and folders without a marker (leftovers of a crash)."""
    if not parent.is_dir():
        return
    for child in parent.iterdir():
        if child.name.startswith(".") and ".tmp-" in child.name:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        elif child.is_dir() and not is_stable(child) and child.name.startswith(("step_", "epoch_")):
            shutil.rmtree(child)


def claim_outputs(outputs: list[Path], stage: str, resume: bool, clean: bool) -> None:
    """Refuse to reuse a stage's outputs from an earlier run unless `--resume` or `--clean`."""
    if resume and clean:
        raise UserError("--resume and --clean exclude each other")
    used = used_outputs(outputs)
    if not used:
        return
    if clean:
        _delete(used)
    elif resume:
        for path in used:
            if path.is_dir():
                remove_unpublished(path)
    else:
        raise _refusal(stage, used)


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
