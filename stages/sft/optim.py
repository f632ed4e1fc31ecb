"""How an SFT optimizer step is formed and scheduled: as veRL 0.9.1's SFT trainer does it
(verl/trainer/sft_trainer.py with the FSDP engine), on the Hugging Face Trainer.

- A step is `train_batch_size` conversations over all processes (veRL's global
  data.train_batch_size), reached by summing micro batches of `per_device_batch_size` on each
  process (gradient accumulation). The loss is the token mean over the whole global batch on both
  sides (veRL's sft_loss divides by the batch's loss tokens; TRL by num_items_in_batch, counted
  across processes).
- An epoch is `len(data) // train_batch_size` steps: veRL's samplers drop the last, partial batch
  (drop_last=True), a random one each epoch, so every step has exactly the global batch.
- Warm-up is `int(ratio x total steps)` optimizer steps (veRL floors; transformers would round up)
  unless a positive `warmup_steps` is given; then constant or cosine down to min_lr_ratio.
- Weight decay applies to every parameter (veRL passes all of them to AdamW; the Trainer would
  spare biases and norms).
"""

from __future__ import annotations

import os
from typing import Any

from proactive_rl.shared.errors import UserError
from proactive_rl.stages.sft.config import SftConfig


def process_count(config: SftConfig) -> int:
    """Training processes: 1 for strategy=single; under torchrun its world size; before the
    relaunch, the count `parallel.relaunch` will start."""
    if config.strategy == "single":
        return 1
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    import torch

    return config.num_processes or max(torch.cuda.device_count(), 1)


def global_batch(config: SftConfig, processes: int) -> int:
    """Conversations per optimizer step (None = one micro batch on every process)."""
    return config.train_batch_size or config.per_device_batch_size * processes


def accumulation_steps(config: SftConfig, processes: int) -> int:
    """Micro batches each process sums per optimizer step; the global batch must be made of
    whole micro batches on every process."""
    per_round = config.per_device_batch_size * processes
    batch = global_batch(config, processes)
    if batch % per_round:
        lower, upper = batch // per_round * per_round, (batch // per_round + 1) * per_round
        options = f"{lower} or {upper}" if lower else f"{upper}"
        raise UserError(
            f"train_batch_size={batch} (veRL's data.train_batch_size) is not a multiple of "
            f"per_device_batch_size x processes = {config.per_device_batch_size} x {processes} = "
            f"{per_round}: every optimizer step sums whole micro batches on every process. Use "
            f"train_batch_size={options}, or another per_device_batch_size"
        )
    return batch // per_round


def check_enough_data(conversations: int, batch: int) -> None:
    """veRL drops a partial global batch: fewer conversations than one batch train nothing."""
    if conversations < batch:
        raise UserError(
            f"{conversations} conversations do not fill one global batch of train_batch_size="
            f"{batch} (veRL's data.train_batch_size; the partial batch is dropped, as in veRL, "
            "so nothing would be trained): lower train_batch_size or add conversations"
        )


def warmup_steps(config: SftConfig, total_steps: int) -> int:
    """veRL's FSDP engine: a positive lr_warmup_steps wins, else int(ratio x total steps)."""
    if config.warmup_steps > 0:
        return config.warmup_steps
    return int(config.warmup_ratio * total_steps)


def trainer_class(config: SftConfig, batch: int) -> type:
    """TRL's SFTTrainer with veRL's epoch length, LR schedule and weight-decay groups. Built here
    so torch and trl are imported by run() only."""
    from torch.utils.data import RandomSampler
    from transformers.optimization import get_scheduler
    from trl import SFTTrainer

    class VerlSftTrainer(SFTTrainer):
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            dataset = self.train_dataset if train_dataset is None else train_dataset
            # A fresh random subset of whole global batches every epoch (accelerate reseeds it
            # per epoch and keeps num_samples); the micro batches then split it evenly.
            return RandomSampler(dataset, num_samples=len(dataset) // batch * batch)

        def get_decay_parameter_names(self, model: Any) -> list[str]:
            return [name for name, _ in model.named_parameters()]

        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            if self.lr_scheduler is None:
                cosine = config.lr_scheduler == "cosine"
                self.lr_scheduler = get_scheduler(
                    "cosine_with_min_lr" if cosine else "constant_with_warmup",
                    optimizer=self.optimizer if optimizer is None else optimizer,
                    num_warmup_steps=warmup_steps(config, num_training_steps),
                    num_training_steps=num_training_steps,
                    scheduler_specific_kwargs={
                        "min_lr_rate": config.min_lr_ratio,
                        "num_cycles": config.num_cycles,
                    }
                    if cosine
                    else {},
                )
                self._created_lr_scheduler = True
            return self.lr_scheduler

    return VerlSftTrainer


def check_lengths(dataset: Any, max_length: int) -> None:
    """truncation=error (veRL's default): a conversation longer than max_length stops the run,
    here before the first step rather than when the data loader reaches it."""
    lengths = [len(ids) for ids in dataset["input_ids"]]
    longer = [n for n in lengths if n > max_length]
    if longer:
        raise UserError(
            f"{len(longer)} of {len(lengths)} conversations are longer than max_length="
            f"{max_length} tokens (the longest: {max(longer)}); raise max_length "
            "(veRL's data.max_length) or set truncation=right to cut their end"
        )
