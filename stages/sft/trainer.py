"""The SFT training itself: the base model, TRL's SFTTrainer with veRL's step (optim.py), a
callback that publishes every epoch, and --resume from the Trainer's epoch checkpoint. Imported
by `run()` only (after the cheap checks), so torch and transformers load here at the top."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from proactive_rl.engine.host_memory import keep_freed_memory
from proactive_rl.engine.models import resolve_base_model
from proactive_rl.engine.parallel import trainer_deepspeed_config
from proactive_rl.engine.precision import training_dtype
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.faults import crash_point
from proactive_rl.shared.metrics import MetricsLogger
from proactive_rl.shared.paths import RunPaths
from proactive_rl.shared.publish import staged, write_json_atomic
from proactive_rl.shared.trackers import open_metrics as open_tracked
from proactive_rl.stages.sft.config import SftConfig
from proactive_rl.stages.sft.data import Conversation

# main.py imports this module inside run() only; these three stay there for the light checks
from proactive_rl.stages.sft.main import CHECKPOINT_RE, ensure_tags, is_main_process
from proactive_rl.stages.sft.optim import (
    accumulation_steps,
    check_enough_data,
    check_lengths,
    global_batch,
    process_count,
    trainer_class,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


@dataclass(frozen=True)
class ResumePoint:
    """Where training starts: the newest Trainer checkpoint (None: from the start) and the
    optimizer steps it holds (the Trainer logs at step k after its k-th update)."""

    checkpoint: str | None
    done: int


def train(
    config: SftConfig,
    paths: RunPaths,
    conversations: list[Conversation],
    published: set[int],
    resume: bool,
) -> None:
    """Train to config.epochs (from the newest Trainer checkpoint on --resume); the callback
    publishes every epoch. The order below is the order of the seeded random draws."""
    if not torch.cuda.is_available():
        # the Trainer's steps on the host's cores: an epoch of SmolLM2 (96 conversations, 2 a
        # micro-batch) took 65 s instead of 83-89 s on a 2-core EPYC (engine/host_memory.py)
        keep_freed_memory()
    # Seeded before anything random: new tag embeddings, data order, dropout.
    set_seed(config.seed)
    base = load_base_model(config, paths)
    use_bf16 = training_dtype(config.precision) == torch.bfloat16
    processes = process_count(config)
    batch = global_batch(config, processes)
    args = training_arguments(config, paths, accumulation_steps(config, processes), use_bf16)
    main = is_main_process(config.strategy)
    # claim_outputs left state/sft empty unless --resume, and removed incomplete checkpoints
    start = resume_point(paths.sft_trainer_state)
    # rank 0 alone logs; a resumed run logs the steps after its checkpoint again
    metrics = open_metrics(config, paths, start, resume) if main else None
    trainer = trainer_class(config, batch)(
        model=base.model,
        args=args,
        train_dataset=Dataset.from_list(conversations),
        processing_class=base.tokenizer,
    )
    samples = check_training_data(trainer, config, batch, len(conversations))
    publisher = EpochPublisher(trainer, paths, base.tokenizer, metrics, config.base_model, samples)
    trainer.add_callback(publisher)
    if main:
        loss_mask_example = paths.logs("sft") / "loss_mask_example.json"
        write_loss_mask_example(trainer, base.tokenizer, loss_mask_example)
    log_resume(start, published, paths.sft_trainer_state)
    log_plan(config, trainer, samples, batch, use_bf16)
    try:
        trainer.train(resume_from_checkpoint=start.checkpoint)
    finally:
        if metrics is not None:
            metrics.close()
    logger.info("sft: done; models in %s", paths.sft)


def load_base_model(config: SftConfig, paths: RunPaths) -> BaseModel:
    """The base model with the four tags as tokens, and its tokenizer, which must have a chat
    template. Loaded in fp32 on purpose: with precision=bf16 the Trainer autocasts and keeps
    fp32 master weights (TRL's default). A bf16-loaded model would get pure bf16 AdamW steps,
    where updates of lr 1e-5 mostly round away."""
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
    return BaseModel(model, tokenizer)


def training_arguments(
    config: SftConfig, paths: RunPaths, accumulation: int, use_bf16: bool
) -> SFTConfig:
    return SFTConfig(
        output_dir=str(paths.sft_trainer_state),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        adam_beta1=config.betas[0],
        adam_beta2=config.betas[1],
        max_grad_norm=config.grad_clip,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
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
        report_to="none",  # MetricsLogger writes metrics.jsonl and the trackers itself
        disable_tqdm=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        deepspeed=trainer_deepspeed_config(config.strategy, config.cpu_offload),
        # several CPU processes (the CPU tests of strategy=ddp) talk over gloo
        ddp_backend="gloo"
        if config.strategy != "single" and not torch.cuda.is_available()
        else None,
    )


def checkpointing_option(enabled: bool) -> dict[str, bool]:
    """transformers 5.24 (CPU lock) renamed `gradient_checkpointing` to
    `activation_checkpointing`; 5.20 (the CUDA lock: vLLM bounds it) has only the old name."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(SFTConfig)}
    key = (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )
    return {key: enabled}


def resume_point(state_dir: Path) -> ResumePoint:
    checkpoint = get_last_checkpoint(str(state_dir)) if state_dir.is_dir() else None
    if checkpoint is None:
        return ResumePoint(None, 0)
    return ResumePoint(checkpoint, int(CHECKPOINT_RE.match(Path(checkpoint).name).group(1)))


def open_metrics(
    config: SftConfig, paths: RunPaths, start: ResumePoint, resume: bool
) -> MetricsLogger:
    """metrics.jsonl and the trackers (tracking.logger); on --resume the lines after the
    checkpoint go (they are logged again) and a "resume" event says from where."""
    resume_at = start.done + 1 if resume else None
    metrics = open_tracked(config.tracking, paths, "sft", config, resume_at=resume_at)
    if resume and (start.checkpoint or metrics.dropped):
        name = Path(start.checkpoint).name if start.checkpoint else None  # None: from the start
        metrics.event(start.done + 1, "resume", checkpoint=name, dropped_lines=metrics.dropped)
    return metrics


def check_training_data(trainer: SFTTrainer, config: SftConfig, batch: int, given: int) -> int:
    """The tokenized conversations the Trainer kept (it drops those whose prompt fills
    max_length): some, none too long for truncation=error, at least one global batch."""
    samples = len(trainer.train_dataset)
    if samples == 0:
        raise UserError(
            f"no conversation has answer tokens within max_length={config.max_length}; "
            "raise max_length"
        )
    if config.truncation == "error":
        check_lengths(trainer.train_dataset, config.max_length)
    check_enough_data(samples, batch)
    if samples < given:
        logger.warning(
            "sft: %d of %d conversations dropped: their prompt fills max_length=%d",
            given - samples,
            given,
            config.max_length,
        )
    return samples


def log_resume(start: ResumePoint, published: set[int], state_dir: Path) -> None:
    if start.checkpoint is not None:
        logger.info(
            "sft: resuming from %s (epochs published: %s)", start.checkpoint, sorted(published)
        )
    elif published:
        # Published before the crash, but the checkpoint of that epoch was not saved yet.
        logger.warning(
            "sft: no Trainer checkpoint in %s; epochs %s will be trained again",
            state_dir,
            sorted(published),
        )


def log_plan(
    config: SftConfig, trainer: SFTTrainer, samples: int, batch: int, use_bf16: bool
) -> None:
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
        trainer.args.world_size,
        " (DeepSpeed)" if trainer.is_deepspeed_enabled else "",
    )


class EpochPublisher(TrainerCallback):
    """Mirrors every log to MetricsLogger and publishes a complete HF folder at the end of each
    epoch."""

    def __init__(
        self,
        trainer: SFTTrainer,  # ZeRO-3 gathers the weights through it
        paths: RunPaths,
        tokenizer: PreTrainedTokenizerBase,
        metrics: MetricsLogger | None,
        base_model: str,
        samples: int,
    ) -> None:
        self.start = time.monotonic()
        self.epoch_losses: list[float] = []
        self.trainer = trainer
        self.paths = paths
        self.tokenizer = tokenizer
        self.metrics = metrics
        self.base_model = base_model
        self.samples = samples

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        numbers = {
            k: float(v)
            for k, v in (logs or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        numbers["seconds"] = time.monotonic() - self.start
        if self.metrics is not None:
            self.metrics.log(state.global_step, numbers)
        crash_point("sft", "after_log", state.global_step)
        if "loss" in numbers:
            self.epoch_losses.append(numbers["loss"])

    def on_epoch_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: PreTrainedModel | None = None,
        **kwargs: Any,
    ) -> None:
        # Runs before the Trainer's own epoch checkpoint, so a crash in between means this
        # epoch is retrained on --resume (and republished), never lost.
        losses, self.epoch_losses = self.epoch_losses, []
        weights = self.zero3_weights()
        if state.is_world_process_zero:
            train_loss = sum(losses) / len(losses) if losses else None
            self.publish(model, round(state.epoch), state.global_step, train_loss, weights)

    def zero3_weights(self) -> dict[str, torch.Tensor] | None:
        """ZeRO-3 holds a slice of every weight per process: gather them (a collective, so every
        process calls it; rank 0 gets the whole model). None: the model holds them whole."""
        if not self.trainer.is_deepspeed_enabled:
            return None
        engine = self.trainer.model_wrapped
        if engine.zero_optimization_stage() != 3:
            return None
        return self.trainer.accelerator.get_state_dict(engine)

    def publish(
        self,
        model: PreTrainedModel,
        epoch: int,
        step: int,
        train_loss: float | None,
        weights: dict[str, torch.Tensor] | None,
    ) -> None:
        final = self.paths.sft_epoch(epoch)
        meta = {
            "epoch": epoch,
            "global_step": step,
            "train_loss": train_loss,
            "base_model": self.base_model,
            "samples": self.samples,
            # precision=auto depends on the hardware (engine/precision.py): say what it was
            "compute_dtype": "bfloat16" if self.trainer.args.bf16 else "float32",
        }
        with staged(final, meta) as staging:  # a full disk: one message, no leftovers
            # The weights as trained (fp32 master weights), so GRPO starts from exactly them.
            # The Trainer switches the KV cache off for training; the published model is for
            # generation, so its config gets it back.
            use_cache, model.config.use_cache = model.config.use_cache, True
            try:
                model.save_pretrained(staging, safe_serialization=True, state_dict=weights)
            finally:
                model.config.use_cache = use_cache
            self.tokenizer.save_pretrained(staging)  # tokenizer + chat_template.jinja
        logger.info("sft: published epoch %d (train loss %s) to %s", epoch, train_loss, final)


def write_loss_mask_example(
    trainer: SFTTrainer, tokenizer: PreTrainedTokenizerBase, path: Path
) -> None:
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
