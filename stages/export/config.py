"""Typed config of the export stage.

proactive export --run-dir checkpoints/default --set checkpoint=final --out exports/default
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from proactive_rl.shared.config import StageConfig


class ExportConfig(StageConfig):
    checkpoint: str = Field(
        "final",
        min_length=1,
        description="Which published checkpoint of the run to export, named as eval names them: "
        "'final' (newest policy), 'policy:N', 'sft' (last SFT epoch), 'sft:N'; or by folder: "
        "'step_000003', 'policies/step_000003', 'epoch_000001', 'sft/epoch_000001'; 'latest' "
        "is the newest policy, else the newest SFT epoch. A LoRA adapter policy is merged into "
        "the base its adapter_config.json names.",
    )
    reports: list[str] | None = Field(
        None,
        description="Evaluation reports (<run>/eval/<name>/report.json) whose tables the model "
        "card shows. A JSON list or comma-separated; unset: every published report of the run.",
    )
    max_shard_size: str = Field(
        "5GB",
        pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|KiB|MiB|GiB)$",
        description="Largest safetensors shard (transformers' save_pretrained max_shard_size).",
    )

    @field_validator("reports", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        # `--set reports=report,final` reads easier than JSON, as eval's checkpoints do
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
