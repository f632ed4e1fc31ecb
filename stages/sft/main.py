"""proactive sft: the SFT warm-up. Teaches the base model the answer format (`<think>`,
`<proactive>`, then a plain answer) before GRPO, with the loss on the assistant turn only.

    proactive sft --run-dir checkpoints/default --set epochs=2 --set base_model=/models/Qwen3-0.6B

Reads  <data-dir>/processed/sft_train.jsonl (published by `proactive prep`).
Writes <run-dir>/sft/epoch_000001/ ... one Hugging Face folder per epoch (published atomically,
       STABLE.json last), <run-dir>/state/sft/ (Trainer checkpoint for --resume),
       <run-dir>/logs/sft/ (metrics.jsonl, tensorboard, loss_mask_example.json),
       <run-dir>/configs/sft.json and <run-dir>/status/sft.json.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import click

from proactive_rl.shared.claims import claim_outputs, start_mode
from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.paths import EPOCH_RE, DataPaths, RunPaths, numbered_children
from proactive_rl.shared.peers import worker_status
from proactive_rl.shared.publish import published
from proactive_rl.stages.common import config_options, dir_options, reuse_options, save_config
from proactive_rl.stages.sft.config import SftConfig
from proactive_rl.stages.sft.data import read_published_conversations
from proactive_rl.stages.sft.optim import (
    accumulation_steps,
    check_enough_data,
    global_batch,
    process_count,
)

logger = logging.getLogger(__name__)


@click.command(
    help="SFT warm-up: fine-tune the base model (BASE_MODEL_PATH or builtin:tiny) on "
    "processed/sft_train.jsonl in the data directory (written by `proactive prep`) with TRL's "
    "SFTTrainer, loss on the final assistant turn only. In the run directory: after every "
    "epoch a complete Hugging Face folder (safetensors, tokenizer, chat template) is "
    "published to sft/epoch_N; the Trainer checkpoint for --resume goes to state/sft; logs "
    "(metrics.jsonl, tensorboard, loss_mask_example.json) go to logs/sft.",
    epilog="\b\nConfig fields (--set key=value):\n" + describe(SftConfig, stage="sft"),
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
    run(resolve(recipe, config_file, overrides), run_dir, data_dir, resume=resume, clean=clean)


def resolve(recipe: str | None, config_file: Path | None, overrides: tuple[str, ...]) -> SftConfig:
    """The stage's config from its options, as `proactive sft` and `proactive preflight` read it."""
    return load_config(SftConfig, config_file, overrides, recipe or None, "sft")


def outputs(paths: RunPaths) -> list[Path]:
    """What the stage claims in the run directory (--resume / --clean act on these)."""
    return [paths.sft, paths.sft_trainer_state, paths.logs("sft")]


def run(
    config: SftConfig, run_dir: Path, data_dir: Path, resume: bool = False, clean: bool = False
) -> None:
    from proactive_rl.engine.gpus import check_gpus

    check_gpus()  # a GPU container that sees too few GPUs stops here, not on the CPU hours later
    paths = RunPaths(run_dir)
    # a restart of the launch that claimed the outputs continues them, whatever RUN_MODE says
    resume, clean = start_mode(paths.launch("sft"), "sft", resume, clean)
    if resume and finished(config, paths):
        # before the checks and torch: a restart after the last epoch ends in a second
        logger.info(
            "sft: all %d epochs are already published in %s; nothing to do",
            config.epochs,
            paths.sft,
        )
        return
    # Cheap checks first, before torch is imported: a bad input or a used run directory fails
    # in a second, not after loading a model.
    conversations = read_published_conversations(DataPaths(data_dir), config.max_samples)
    check_batches(config, len(conversations))
    check_before_training(config, paths)

    from proactive_rl.engine.parallel import relaunch

    relaunch(config.strategy, config.num_processes)  # ddp/zero*: this command, once per GPU
    main = is_main_process(config.strategy)
    if main:
        prepare_outputs(config, paths, resume, clean)
    wait_for_rank0(config.strategy)
    published_epochs = {n for n, _ in published(paths.sft, EPOCH_RE)}
    if main:
        save_config(paths.config("sft"), config)

    # Only rank 0 writes to the volume (status heartbeat, published epochs, metrics).
    with worker_status(paths.status("sft")) if main else contextlib.nullcontext():
        from proactive_rl.stages.sft.trainer import train

        train(config, paths, conversations, published_epochs, resume)  # frees its Trainer
    if config.strategy != "single":
        from proactive_rl.engine.parallel import leave_process_group

        leave_process_group()


def finished(config: SftConfig, paths: RunPaths) -> bool:
    """Every epoch of the config is published."""
    done = {n for n, _ in published(paths.sft, EPOCH_RE)}
    return all(epoch in done for epoch in range(1, config.epochs + 1))


def check_batches(config: SftConfig, conversations: int) -> None:
    """The global batch splits into whole micro batches, and the data fills at least one."""
    processes = process_count(config)
    accumulation_steps(config, processes)
    check_enough_data(conversations, global_batch(config, processes))


def prepare_outputs(config: SftConfig, paths: RunPaths, resume: bool, clean: bool) -> None:
    """Rank 0, before the others look: claim (maybe empty) the outputs, drop half-written
    Trainer checkpoints, and build a builtin base model once."""
    claim_outputs(outputs(paths), "sft", resume, clean, paths.launch("sft"))
    if resume:
        remove_incomplete_checkpoints(paths.sft_trainer_state)
    if config.strategy != "single":
        # a builtin base model is built once, by rank 0, before the others look for it
        from proactive_rl.engine.models import resolve_base_model

        resolve_base_model(config.base_model, paths.base_models)


def check_before_training(config: SftConfig, paths: RunPaths) -> None:
    """Before training: the run directory is writable, the base model folder is readable (a
    built-in one is built here, once), and the disk holds an epoch and a Trainer checkpoint."""
    from proactive_rl.engine.model_checks import weights_numel
    from proactive_rl.engine.models import resolve_base_model
    from proactive_rl.stages.common import check_free_space, check_writable

    written = [*outputs(paths), paths.base_models, paths.launch("sft").parent]
    written += [paths.config("sft").parent, paths.status("sft").parent]
    check_writable([paths.root, *written], "pass another --run-dir")
    base = resolve_base_model(config.base_model, paths.base_models)
    # float32 weights: the published epoch (4 bytes a weight) + the Trainer checkpoint (4 for
    # the weights, 8 for AdamW's two moments)
    check_free_space(
        paths.root,
        16 * weights_numel(base),
        "an SFT epoch and its Trainer checkpoint",
        "pass another --run-dir",
    )


def is_main_process(strategy: str) -> bool:
    import os

    return strategy == "single" or os.environ.get("RANK", "0") == "0"


def wait_for_rank0(strategy: str) -> None:
    """The other processes wait until rank 0 has claimed (maybe emptied) the outputs."""
    if strategy != "single":
        from accelerate import PartialState

        PartialState().wait_for_everyone()


CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def remove_incomplete_checkpoints(state_dir: Path) -> None:
    """Delete the Trainer checkpoints a kill left half-written, so --resume continues from the
    newest complete one. The Trainer writes a checkpoint folder in place and trainer_state.json
    last (after the weights, optimizer, scheduler and RNG state; transformers 5.x
    `_save_checkpoint`), and deletes the older one only after that: a folder is complete when
    its trainer_state.json reads whole and names the folder's own step."""
    for step, folder in numbered_children(state_dir, CHECKPOINT_RE):
        if not checkpoint_complete(folder, step):
            logger.warning(
                "sft: removing the incomplete Trainer checkpoint %s (killed while it was "
                "written); resuming from the one before it",
                folder,
            )
            shutil.rmtree(folder)


def checkpoint_complete(folder: Path, step: int) -> bool:
    try:
        return json.loads((folder / "trainer_state.json").read_text())["global_step"] == step
    except (OSError, ValueError, KeyError, TypeError):
        return False


def ensure_tags(model: Any, tokenizer: Any) -> None:
    """Make the four tags single tokens the model can emit (real Qwen3 tokenizers have
    <think>/</think> but not <proactive>); see models.add_tag_tokens for how new rows start."""
    from proactive_rl.engine.models import add_tag_tokens

    added = add_tag_tokens(model, tokenizer)
    if added:
        logger.info("sft: added tokens %s to the tokenizer", added)
