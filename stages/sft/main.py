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
import time
from pathlib import Path
from typing import Any

import click

from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.faults import crash_point
from proactive_rl.shared.metrics import MetricsLogger
from proactive_rl.shared.paths import EPOCH_RE, DataPaths, RunPaths, numbered_children
from proactive_rl.shared.publish import (
    claim_outputs,
    is_stable,
    published,
    staged,
    verified_processed,
    worker_status,
    write_json_atomic,
)
from proactive_rl.stages.common import config_options, dir_options, reuse_options, save_config
from proactive_rl.stages.sft.config import SftConfig
from proactive_rl.stages.sft.optim import (
    accumulation_steps,
    check_enough_data,
    check_lengths,
    global_batch,
    process_count,
    trainer_class,
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
    config = load_config(SftConfig, config_file, overrides, recipe or None, "sft")
    run(config, run_dir, data_dir, resume=resume, clean=clean)


def run(
    config: SftConfig, run_dir: Path, data_dir: Path, resume: bool = False, clean: bool = False
) -> None:
    paths = RunPaths(run_dir)

    # Cheap checks first, before torch is imported: a bad input or a used run directory fails
    # in a second, not after loading a model.
    data_file = DataPaths(data_dir).sft_train
    if not is_stable(DataPaths(data_dir).processed) or not data_file.is_file():
        raise UserError(
            f"{data_file} is missing or not published (no {DataPaths(data_dir).processed}/"
            "STABLE.json). Run `proactive prep` first (in compose: `docker compose run --rm prep`)."
        )
    verified_processed(DataPaths(data_dir))  # its files are still the ones prep published
    conversations = read_conversations(data_file)
    if config.max_samples is not None:
        conversations = conversations[: config.max_samples]
    processes = process_count(config)
    accumulation_steps(config, processes)  # the global batch splits into whole micro batches
    check_enough_data(len(conversations), global_batch(config, processes))
    check_before_training(config, paths)

    from proactive_rl.engine.parallel import relaunch

    relaunch(config.strategy, config.num_processes)  # ddp/zero*: this command, once per GPU
    main = is_main_process(config.strategy)
    if main:
        claim_outputs([paths.sft, paths.sft_trainer_state, paths.logs("sft")], "sft", resume, clean)
        if resume:
            remove_incomplete_checkpoints(paths.sft_trainer_state)
        if config.strategy != "single":
            # a builtin base model is built once, by rank 0, before the others look for it
            from proactive_rl.engine.models import resolve_base_model

            resolve_base_model(config.base_model, paths.base_models)
    wait_for_rank0(config.strategy)
    published_epochs = {n for n, _ in published(paths.sft, EPOCH_RE)}
    if all(epoch in published_epochs for epoch in range(1, config.epochs + 1)):
        # Only reachable with --resume: claim_outputs refused or emptied the folder otherwise.
        logger.info(
            "sft: all %d epochs are already published in %s; nothing to do",
            config.epochs,
            paths.sft,
        )
        return
    if main:
        save_config(paths.config("sft"), config)

    # Only rank 0 writes to the volume (status heartbeat, published epochs, metrics).
    with worker_status(paths.status("sft")) if main else contextlib.nullcontext():
        train(config, paths, conversations, published_epochs, resume)  # frees its Trainer
    if config.strategy != "single":
        from proactive_rl.engine.parallel import leave_process_group

        leave_process_group()


def check_before_training(config: SftConfig, paths: RunPaths) -> None:
    """Before training: the run directory is writable, the base model folder is readable (a
    built-in one is built here, once), and the disk holds an epoch and a Trainer checkpoint."""
    from proactive_rl.engine.model_checks import weights_numel
    from proactive_rl.engine.models import resolve_base_model
    from proactive_rl.stages.common import check_free_space, check_writable

    outputs = [paths.sft, paths.sft_trainer_state, paths.logs("sft"), paths.base_models]
    outputs += [paths.config("sft").parent, paths.status("sft").parent]
    check_writable([paths.root, *outputs], "pass another --run-dir")
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


def read_conversations(path: Path) -> list[dict[str, Any]]:
    """The users' SFT lines as TRL prompt/completion rows: prompt = every message before the
    last one, completion = the last (assistant) message. Errors name file and line."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not valid JSON ({err.msg}, col {err.colno})") from None
            messages = obj.get("messages") if isinstance(obj, dict) else None
            if not isinstance(messages, list) or len(messages) < 2:
                raise UserError(
                    f"{where}: expected an object with a 'messages' list of at least two turns "
                    "(system/user prompt, then the assistant answer)"
                )
            for turn in messages:
                if not (
                    isinstance(turn, dict)
                    and isinstance(turn.get("role"), str)
                    and isinstance(turn.get("content"), str)
                ):
                    raise UserError(f"{where}: every message needs a string 'role' and 'content'")
            if messages[-1]["role"] != "assistant":
                raise UserError(f"{where}: the last message must be the assistant's answer")
            # Only role/content: extra keys would vary between lines and break the arrow schema.
            turns = [{"role": t["role"], "content": t["content"]} for t in messages]
            rows.append({"prompt": turns[:-1], "completion": turns[-1:]})
    if not rows:
        raise UserError(f"{path} holds no conversations; check the SFT source given to prep")
    return rows


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


def checkpointing_option(enabled: bool) -> dict[str, bool]:
    """transformers 5.24 (CPU lock) renamed `gradient_checkpointing` to
    `activation_checkpointing`; 5.20 (the CUDA lock: vLLM bounds it) has only the old name."""
    import dataclasses

    from trl import SFTConfig

    names = {f.name for f in dataclasses.fields(SFTConfig)}
    key = (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )
    return {key: enabled}


def train(
    config: SftConfig,
    paths: RunPaths,
    conversations: list[dict[str, Any]],
    published: set[int],
    resume: bool,
) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig

    from proactive_rl.engine.models import resolve_base_model

    # Seeded before anything random: new tag embeddings, data order, dropout.
    set_seed(config.seed)

    # Base model. Loaded in fp32 on purpose: with precision=bf16 the Trainer autocasts and keeps
    # fp32 master weights (TRL's default). A bf16-loaded model would get pure bf16 AdamW steps,
    # where updates of lr 1e-5 mostly round away.
    base_path = resolve_base_model(config.base_model, paths.base_models)
    logger.info("sft: base model %s (%s)", config.base_model, base_path)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    ensure_tags(model, tokenizer)
    if not tokenizer.chat_template:
        raise UserError(
            f"the tokenizer in {base_path} has no chat template; SFT renders conversations with "
            "it (and rollout uses the same one), so use a chat/instruct model folder"
        )

    from proactive_rl.engine.parallel import trainer_deepspeed_config

    use_bf16 = config.precision == "bf16" or (
        config.precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    )
    processes = process_count(config)
    batch = global_batch(config, processes)
    args = SFTConfig(
        output_dir=str(paths.sft_trainer_state),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        adam_beta1=config.betas[0],
        adam_beta2=config.betas[1],
        max_grad_norm=config.grad_clip,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=accumulation_steps(config, processes),
        # the warm-up and schedule are veRL's, built by trainer_class (optim.py)
        # truncation=error: nothing cut, check_lengths refuses the long ones below
        max_length=config.max_length if config.truncation == "right" else None,
        # TRL defaults bf16 and activation checkpointing to True; we decide both explicitly.
        bf16=use_bf16,
        # Without it the Trainer refuses bf16 on a machine without a GPU (CPU autocast works).
        use_cpu=not torch.cuda.is_available(),
        **checkpointing_option(config.gradient_checkpointing),
        seed=config.seed,
        data_seed=config.seed,
        # Prompt/completion rows: labels are -100 on the prompt (the system and user turns).
        completion_only_loss=True,
        packing=False,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        # One checkpoint per epoch, only the newest kept: it is what --resume continues from.
        save_strategy="epoch",
        save_total_limit=1,
        report_to="none",  # MetricsLogger writes tensorboard + metrics.jsonl itself
        disable_tqdm=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        deepspeed=trainer_deepspeed_config(config.strategy, config.cpu_offload),
        # several CPU processes (the CPU tests of strategy=ddp) talk over gloo
        ddp_backend="gloo"
        if config.strategy != "single" and not torch.cuda.is_available()
        else None,
    )
    main = is_main_process(config.strategy)
    # claim_outputs left state/sft empty unless --resume, and removed incomplete checkpoints
    state_dir = paths.sft_trainer_state
    checkpoint = get_last_checkpoint(str(state_dir)) if state_dir.is_dir() else None
    # optimizer steps done: the Trainer logs at step k after its k-th update
    done = int(CHECKPOINT_RE.match(Path(checkpoint).name).group(1)) if checkpoint else 0
    metrics = None
    if main:  # rank 0 alone logs; a resumed run logs the steps after its checkpoint again
        metrics = MetricsLogger(paths.logs("sft"), resume_at=done + 1 if resume else None)
        if resume and (checkpoint or metrics.dropped):
            name = Path(checkpoint).name if checkpoint else None  # None: from the start
            metrics.event(done + 1, "resume", checkpoint=name, dropped_lines=metrics.dropped)
    trainer = trainer_class(config, batch)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(conversations),
        processing_class=tokenizer,
    )
    samples = len(trainer.train_dataset)
    if samples == 0:
        raise UserError(
            f"no conversation has answer tokens within max_length={config.max_length}; "
            "raise max_length"
        )
    if config.truncation == "error":
        check_lengths(trainer.train_dataset, config.max_length)
    check_enough_data(samples, batch)
    if samples < len(conversations):
        logger.warning(
            "sft: %d of %d conversations dropped: their prompt fills max_length=%d",
            len(conversations) - samples,
            len(conversations),
            config.max_length,
        )
    publisher = epoch_callback(paths, tokenizer, metrics, config.base_model, samples)
    publisher.trainer = trainer  # ZeRO-3 gathers the weights through it
    trainer.add_callback(publisher)
    if main:
        write_loss_mask_example(trainer, tokenizer, paths.logs("sft") / "loss_mask_example.json")

    if checkpoint is not None:
        logger.info("sft: resuming from %s (epochs published: %s)", checkpoint, sorted(published))
    elif published:
        # Published before the crash, but the checkpoint of that epoch was not saved yet.
        logger.warning(
            "sft: no Trainer checkpoint in %s; epochs %s will be trained again",
            state_dir,
            sorted(published),
        )
    logger.info(
        "sft: %d conversations, %d epochs of %d steps of %d (%d left out each epoch, as veRL "
        "drops the partial batch), bf16=%s; training: %s x%d%s",
        samples,
        config.epochs,
        samples // batch,
        batch,
        samples % batch,
        use_bf16,
        config.strategy,
        args.world_size,
        " (DeepSpeed)" if trainer.is_deepspeed_enabled else "",
    )
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        if metrics is not None:
            metrics.close()
    logger.info("sft: done; models in %s", paths.sft)


def ensure_tags(model: Any, tokenizer: Any) -> None:
    """Make the four tags single tokens the model can emit (real Qwen3 tokenizers have
    <think>/</think> but not <proactive>); see models.add_tag_tokens for how new rows start."""
    from proactive_rl.engine.models import add_tag_tokens

    added = add_tag_tokens(model, tokenizer)
    if added:
        logger.info("sft: added tokens %s to the tokenizer", added)


def epoch_callback(
    paths: RunPaths,
    tokenizer: Any,
    metrics: MetricsLogger | None,
    base_model: str,
    conversations: int,
) -> Any:
    """A TrainerCallback that mirrors every log to MetricsLogger and publishes a complete HF
    folder at the end of each epoch. Built here so transformers is only imported by run()."""
    from transformers import TrainerCallback

    class EpochPublisher(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.monotonic()
            self.epoch_losses: list[float] = []
            self.trainer: Any = None

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            numbers = {
                k: float(v)
                for k, v in (logs or {}).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            numbers["seconds"] = time.monotonic() - self.start
            if metrics is not None:
                metrics.log(state.global_step, numbers)
            crash_point("sft", "after_log", state.global_step)
            if "loss" in numbers:
                self.epoch_losses.append(numbers["loss"])

        def on_epoch_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
            # Runs before the Trainer's own epoch checkpoint, so a crash in between means this
            # epoch is retrained on --resume (and republished), never lost.
            epoch = round(state.epoch)
            losses, self.epoch_losses = self.epoch_losses, []
            weights = None
            if self.trainer is not None and self.trainer.is_deepspeed_enabled:
                # ZeRO-3 holds a slice of every weight per process: gather them (a collective,
                # so every process calls it; rank 0 gets the whole model)
                engine = self.trainer.model_wrapped
                if engine.zero_optimization_stage() == 3:
                    weights = self.trainer.accelerator.get_state_dict(engine)
            if not state.is_world_process_zero:
                return
            final = paths.sft_epoch(epoch)
            train_loss = sum(losses) / len(losses) if losses else None
            meta = {
                "epoch": epoch,
                "global_step": state.global_step,
                "train_loss": train_loss,
                "base_model": base_model,
                "samples": conversations,
            }
            with staged(final, meta) as staging:  # a full disk: one message, no leftovers
                # The weights as trained (fp32 master weights), so GRPO starts from exactly
                # them. The Trainer switches the KV cache off for training; the published model
                # is for generation, so its config gets it back.
                use_cache, model.config.use_cache = model.config.use_cache, True
                try:
                    model.save_pretrained(staging, safe_serialization=True, state_dict=weights)
                finally:
                    model.config.use_cache = use_cache
                tokenizer.save_pretrained(staging)  # tokenizer + chat_template.jinja
            logger.info("sft: published epoch %d (train loss %s) to %s", epoch, train_loss, final)

    return EpochPublisher()


def write_loss_mask_example(trainer: Any, tokenizer: Any, path: Path) -> None:
    """Save the first training example as the collator builds it, split into the tokens that
    are masked (-100) and those the loss sees: one glance shows the loss is on the answer only,
    which matters for a new model's chat template."""
    example = trainer.train_dataset[0]
    batch = trainer.data_collator(
        [{"input_ids": example["input_ids"], "labels": example["labels"]}]
    )
    input_ids = batch["input_ids"][0].tolist()
    labels = batch["labels"][0].tolist()
    pairs = list(zip(input_ids, labels, strict=True))
    write_json_atomic(
        path,
        {
            "input_ids": input_ids,
            "labels": labels,
            "masked_text": tokenizer.decode([t for t, lab in pairs if lab == -100]),
            "trained_text": tokenizer.decode([t for t, lab in pairs if lab != -100]),
        },
    )
