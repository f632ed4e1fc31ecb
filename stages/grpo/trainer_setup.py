"""The training objects of one GRPO process (tokenizer, policy, KL reference, optimizer,
schedule) and the one call that trains an RL step on them. Imported only from inside grpo's
`run()`: it pulls in torch and transformers, which `proactive grpo --help` must not wait for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from proactive_rl.engine.host_memory import keep_freed_memory
from proactive_rl.engine.parallel import Parallel
from proactive_rl.engine.precision import training_dtype
from proactive_rl.shared.schedule import Plan
from proactive_rl.shared.schemas import RolloutRow
from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.grpo.policy import build_policy, is_adapter, master_dtype, reference_model
from proactive_rl.stages.grpo.schedule import (
    build_scheduler,
    describe_schedule,
    resume_scheduler,
    updates_actor,
)
from proactive_rl.stages.grpo.update import train_step


@dataclass(frozen=True)
class Precision:
    """The dtype forward passes compute in (policies are published in it) and the dtype the
    trainable weights are kept in (float32 masters: see master_dtype)."""

    compute: torch.dtype
    weights: torch.dtype

    @property
    def mixed(self) -> bool:
        """Float32 masters that compute in `compute` under autocast."""
        return self.weights != self.compute

    @property
    def publish_dtype(self) -> torch.dtype | None:
        """What a policy is converted to when published (None: as it is)."""
        return self.compute if self.mixed else None


@dataclass(frozen=True)
class WeightCount:
    """The policy's size, counted before the wrap (ZeRO-3 partitions the weights)."""

    trainable: int
    total: int
    lora_rank: int | None  # None: every weight trains

    @classmethod
    def of(cls, model: torch.nn.Module) -> WeightCount:
        return cls(
            trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
            total=sum(p.numel() for p in model.parameters()),
            lora_rank=model.peft_config["default"].r if is_adapter(model) else None,
        )


@dataclass
class Trainer:
    """What one process trains with. `module` is what forward passes go through: the model
    until Parallel.wrap replaces it with the DDP or DeepSpeed wrapper."""

    tokenizer: PreTrainedTokenizerBase
    model: torch.nn.Module  # the policy itself: saved and published
    module: torch.nn.Module
    ref_model: torch.nn.Module | None  # None without a KL penalty
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    precision: Precision
    span: int  # the RL steps the learning-rate schedule spans
    weights: WeightCount

    @property
    def masters(self) -> torch.nn.Module | None:
        """The model holding float32 master weights (saved with the optimizer state), if any."""
        return self.model if self.precision.mixed else None

    def update(
        self,
        config: GrpoConfig,
        par: Parallel,
        plan: Plan,
        step: int,
        rows: list[RolloutRow],
        marker: dict[str, Any],
    ) -> dict[str, float]:
        """Train RL step `step` on its rows; the step's metrics."""
        device = par.device
        with torch.autocast(
            device.type, dtype=self.precision.compute, enabled=self.precision.mixed
        ):
            return train_step(
                self.module,
                self.ref_model,
                self.optimizer,
                self.scheduler,
                rows,
                config,
                n=plan.n,
                temperature=marker["temperature"],
                max_new_tokens=marker["max_new_tokens"],
                device=device,
                par=par,
                update_actor=updates_actor(config, step),
            )

    def unwrap(self) -> None:
        """Drop this trainer's hold on the DDP or DeepSpeed wrapper."""
        self.module = self.model

    def resume_schedule(self, config: GrpoConfig, start_step: int) -> None:
        """Place the schedule at RL step `start_step` (after loading an optimizer state)."""
        self.scheduler = resume_scheduler(
            self.optimizer, self.scheduler, config, self.span, start_step
        )

    def describe_schedule(self, config: GrpoConfig) -> str:
        return describe_schedule(config, self.span)


def start_torch(config: GrpoConfig, device: torch.device) -> torch.dtype:
    """Seed torch (before a built-in starting model is drawn), keep the host memory a CPU
    update frees for its next micro-batch (engine/host_memory.py), pick the compute dtype."""
    torch.manual_seed(config.seed)
    if device.type == "cpu":
        keep_freed_memory()
    return training_dtype(config.precision)


def schedule_span(config: GrpoConfig, plan: Plan) -> int:
    """The RL steps the schedule spans, veRL's total_training_steps: max_steps when set, even
    beyond the data."""
    return plan.steps_per_epoch * plan.epochs if config.max_steps is None else config.max_steps


def load_policy(
    config: GrpoConfig, start_dir: Path, init_dir: Path, dtype: torch.dtype, device: torch.device
) -> torch.nn.Module:
    """The policy as of `start_dir` on `device`, in training mode."""
    model = build_policy(config, start_dir, init_dir, dtype).to(device)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    return model


def build_trainer(
    config: GrpoConfig,
    plan: Plan,
    start_dir: Path,
    init_dir: Path,
    device: torch.device,
    compute: torch.dtype,
) -> Trainer:
    """Tokenizer, policy, reference, optimizer and schedule as of `start_dir` (the starting
    model, or the policy --resume continues from); not yet wrapped."""
    tokenizer = AutoTokenizer.from_pretrained(start_dir)
    # float32 masters compute in `compute` (autocast); published in `compute`
    precision = Precision(compute=compute, weights=master_dtype(config, compute))
    model = load_policy(config, start_dir, init_dir, precision.weights, device)
    ref_model = reference_model(config, model, init_dir, compute, device)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],  # LoRA: the adapter alone
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        betas=config.betas,
        # one fused kernel per step (0.18 s against 0.49 s for SmolLM2-135M on 2 CPU cores);
        # DeepSpeed's ZeRO wraps the optimizer in its own, which wants the plain one
        fused=not config.strategy.startswith("zero"),
    )
    # counted in RL steps, as veRL's actor schedule: train_step steps it once per RL step
    span = schedule_span(config, plan)
    return Trainer(
        tokenizer=tokenizer,
        model=model,
        module=model,
        ref_model=ref_model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config, span),
        precision=precision,
        span=span,
        weights=WeightCount.of(model),
    )
