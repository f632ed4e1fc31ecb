"""The few CLI pieces every stage shares: option decorators and saving the resolved config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

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
    f = click.option("--clean", is_flag=True, help="Delete this stage's earlier outputs first.")(f)
    f = click.option("--resume", is_flag=True, help="Continue from this stage's earlier outputs.")(
        f
    )
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
