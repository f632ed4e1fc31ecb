"""The few pieces every stage shares: option decorators, saving the resolved config, and the
start-up checks of the folders a stage writes to (writable, enough free space)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.publish import write_json_atomic


def config_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override one config field (dotted keys for nested ones); repeatable.",
    )(f)
    f = click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="TOML file with config fields; --set wins over it.",
    )(f)
    f = click.option(
        "--recipe",
        envvar="PROACTIVE_RECIPE",
        metavar="NAME|FILE.toml",
        help="Preset for the whole pipeline (this stage reads its [stage] table): a packaged "
        "recipe (qwen3-8b: the users' veRL recipe) or a TOML file. --config and --set win over "
        "it. Env: PROACTIVE_RECIPE (compose: RECIPE).",
    )(f)
    return f


def reuse_options(f: Callable[..., Any]) -> Callable[..., Any]:
    # a restart of the launch that claimed the outputs (PROACTIVE_LAUNCH_ID) resumes whatever
    # these say: shared/claims.py
    f = click.option(
        "--clean",
        is_flag=True,
        help="Delete this stage's earlier outputs first (not on a restart of the launch that "
        "claimed them: PROACTIVE_LAUNCH_ID).",
    )(f)
    f = click.option(
        "--resume",
        is_flag=True,
        help="Continue from this stage's earlier outputs (a restart of the launch that claimed "
        "them, same PROACTIVE_LAUNCH_ID, always does).",
    )(f)
    return f


def dir_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path("data"),
        show_default=True,
        help="Data volume (prep writes data/processed there).",
    )(f)
    f = click.option(
        "--run-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path("checkpoints/default"),
        show_default=True,
        help="Run directory on the checkpoints volume.",
    )(f)
    return f


def save_config(path: Path, config: BaseModel) -> None:
    """Write the resolved config next to the outputs, so a run can be reproduced from it."""
    write_json_atomic(path, config.model_dump(mode="json"))


def check_writable(folders: Sequence[Path], option: str) -> None:
    """Refuse at start-up, not midway, when this user cannot write a folder the stage writes to
    (a read-only mount, a folder a container made as another user). A missing folder is
    checked through the nearest existing one above it, where it would be created. `option`
    names the command-line option that picks another place (--run-dir, --data-dir)."""
    for folder in folders:
        existing = next(p for p in (Path(folder), *Path(folder).parents) if p.exists())
        if not existing.is_dir():
            raise UserError(f"{existing} is a file, so {folder} cannot be made there: {option}")
        try:
            # created and removed at once: tests what the stage will do, ACLs and mounts too
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as err:
            raise UserError(_not_writable(Path(folder), existing, err, option)) from None


def _not_writable(folder: Path, existing: Path, err: OSError, option: str) -> str:
    uid = os.getuid()
    owner = existing.stat()
    where = f"{folder}" if existing == folder else f"{folder} cannot be created: {existing}"
    return (
        f"{where} is not writable by uid {uid} ({err.strerror}; it belongs to uid "
        f"{owner.st_uid}, mode {stat.S_IMODE(owner.st_mode):o}). Make it writable for uid {uid} "
        f"(e.g. `chown -R {uid} {existing}`), or {option}"
    )


def check_free_space(folder: Path, needed: int, what: str, option: str) -> None:
    """Refuse before long work starts when the file system of `folder` has less than `needed`
    bytes free (`what` says what they are for)."""
    existing = next(p for p in (Path(folder), *Path(folder).parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise UserError(
            f"{folder} has {free / 1e9:.1f} GB free, but {what} needs about "
            f"{needed / 1e9:.1f} GB: free some space, or {option}"
        )
