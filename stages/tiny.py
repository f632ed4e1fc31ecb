"""proactive tiny-model: build the deterministic tiny Qwen3 test model into a folder."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(
    help="Build the tiny deterministic Qwen3-architecture model (random weights, byte-level BPE "
    "tokenizer with the chat template and <think>/<proactive> tags) into OUT_DIR, offline. "
    "Stages accept it as base_model=builtin:tiny without this step; this is for inspection."
)
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--seed", default=0, show_default=True, help="Weight initialisation seed.")
def command(out_dir: Path, seed: int) -> None:
    from proactive_rl.engine.models import build_tiny_model

    click.echo(build_tiny_model(out_dir, seed=seed))
