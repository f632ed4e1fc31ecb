"""proactive export: one checkpoint of a run -> a standard Hugging Face model folder with a model
card, ready for transformers, vLLM or the Hub:

    proactive export --run-dir checkpoints/default --set checkpoint=final --out exports/default

A LoRA adapter policy is merged into the base its adapter_config.json names; the weights keep
the checkpoint's dtype. docs/export.md shows how to load and push the folder.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import ADAPTER_CONFIG, DataPaths, RunPaths, adapter_base, record_path
from proactive_rl.shared.publish import MARKER, is_stable, read_json, read_marker
from proactive_rl.stages.common import check_free_space, check_writable, config_options, dir_options
from proactive_rl.stages.export.config import ExportConfig

if TYPE_CHECKING:
    from proactive_rl.stages.export.card import CardInputs
    from proactive_rl.stages.export.checkpoints import Chosen

logger = logging.getLogger(__name__)


@click.command(
    help="Export one checkpoint of a run (default: the newest policy) as a standard Hugging Face "
    "model folder at --out: config.json, safetensors weights in the checkpoint's dtype, the "
    "tokenizer, generation_config.json and a model card (README.md) with the run's settings, "
    "its data sources and its evaluation tables with 95% intervals. A LoRA adapter policy is "
    "merged into its base, so the folder loads with plain transformers or vLLM. The folder "
    "appears whole or not at all; an existing non-empty --out is refused unless --force. "
    "See docs/export.md.",
    epilog="\b\nConfig fields (--set key=value, dotted for nested):\n"
    + describe(ExportConfig, stage="export"),
)
@dir_options
@config_options
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="The folder to write (created; its parent must be writable).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing --out that holds an earlier export or model folder.",
)
def command(run_dir, data_dir, recipe, config_file, overrides, out, force):
    config = load_config(ExportConfig, config_file, overrides, recipe or None, "export")
    run(config, run_dir, data_dir, out, force)


DAMAGED = "Export another checkpoint, or train this one again"


def run(
    config: ExportConfig, run_dir: Path, data_dir: Path, out: Path, force: bool = False
) -> Path:
    """Resolve and verify the checkpoint, check --out, load it (LoRA merged), and publish the
    folder with its card. Returns the published folder."""
    from proactive_rl.engine.model_checks import check_model_folder
    from proactive_rl.shared.publish import staged, verified_model
    from proactive_rl.stages.export.card import card
    from proactive_rl.stages.export.checkpoints import check_run_dir, resolve_checkpoint

    started = time.perf_counter()
    check_run_dir(run_dir)
    paths = RunPaths(run_dir)
    chosen = resolve_checkpoint(config.checkpoint, paths)
    reports = read_reports(config.reports, paths)
    base = adapter_base(chosen.path)
    check_out(out, force, paths.root, [p for p in (chosen.path, base) if p is not None])
    check_model_folder(chosen.path, DAMAGED)
    if base is not None:
        check_base(base, chosen.path)
    verified_model(chosen.path, DAMAGED)
    weights = base if base is not None else chosen.path
    check_free_space(
        out.absolute().parent, _weight_bytes(weights), "the export", "pass another --out"
    )
    logger.info("exporting %s (%s) from %s", chosen.label, chosen.path, paths.root)
    model, tokenizer, dtype = load_merged(chosen.path, base)
    info = card_inputs(reports, paths, DataPaths(data_dir), chosen, base, model, dtype)
    meta = {
        "stage": "export",
        "run_dir": str(paths.root.absolute()),
        "checkpoint": chosen.spec,
        "source": record_path(chosen.path, paths.root),
        "dtype": dtype,
        "lora_merged": base is not None,
    }
    with staged(out, meta) as staging:
        write_model(model, tokenizer, staging, config.max_shard_size)
        (staging / "README.md").write_text(card(info))
    logger.info(
        "exported %s to %s (%s, %.1fM parameters, %.1f s)",
        chosen.label,
        out,
        dtype,
        info.parameters / 1e6,
        time.perf_counter() - started,
    )
    return out


def check_out(out: Path, force: bool, run_dir: Path, models: list[Path]) -> None:
    """--out is a folder we may (re)place: not a file, not a folder holding the run or the
    models being exported, not inside those models (published folders stay as published),
    and, when it has files, an earlier export replaced only with --force (so a mistyped --out
    never deletes someone's folder)."""
    target = out.absolute()
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {out} is a file: pass a folder to create")
    for folder in (run_dir, *models):
        if folder.resolve().is_relative_to(target.resolve()):
            raise UserError(
                f"--out {out} holds {folder}, which the export reads: pass a folder outside it"
            )
    for folder in models:
        if target.resolve().is_relative_to(folder.resolve()):
            raise UserError(f"--out {out} lies inside the published model {folder}: pass another")
    if not target.is_dir() or not any(target.iterdir()):
        check_writable([target.parent], "pass another --out")
        return
    if not force:
        raise UserError(
            f"--out {out} exists and is not empty: pass --force to replace it, or another --out"
        )
    if not (target / MARKER).is_file() and not (target / "config.json").is_file():
        raise UserError(
            f"--out {out} holds files but no model (no config.json or {MARKER}): --force "
            "replaces only an earlier export or model folder; pass another --out"
        )
    check_writable([target.parent], "pass another --out")


def check_base(base: Path, adapter: Path) -> None:
    """The base a LoRA adapter names is here and is a whole model."""
    from proactive_rl.engine.model_checks import check_model_folder

    if not base.is_dir():
        raise UserError(
            f"{adapter / ADAPTER_CONFIG} names its base model {base}, which is not a folder "
            "here: the run directory was copied without it; copy the base along"
        )
    check_model_folder(base, f"the base of the LoRA adapter {adapter} is damaged")


def _weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def weights_dtype(folder: Path) -> str:
    """The floating dtype most of a folder's weights are stored in (e.g. "bfloat16"). Read from
    the safetensors headers, not config.json: GRPO publishes float32 masters in the compute
    dtype while the config may still say float32."""
    from safetensors import safe_open

    counts: dict[str, int] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():
                dtype = str(weights.get_slice(key).get_dtype())
                if dtype.startswith(("F", "BF")):
                    numel = 1
                    for size in weights.get_slice(key).get_shape():
                        numel *= size
                    counts[dtype] = counts.get(dtype, 0) + numel
    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}
    if not counts:
        return "float32"
    return names.get(max(counts, key=counts.__getitem__), "float32")


def load_merged(folder: Path, base: Path | None) -> tuple[Any, Any, str]:
    """The checkpoint as one plain model in its weights' dtype (a LoRA adapter merged into its
    base, in the base's dtype), its tokenizer, and that dtype's name."""
    import torch
    from transformers import AutoTokenizer

    from proactive_rl.engine.generation import load_causal_lm

    dtype = weights_dtype(base if base is not None else folder)
    model = load_causal_lm(folder, getattr(torch, dtype))
    # grpo publishes the tokenizer beside every adapter; an older adapter may lack it
    has_tokenizer = any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(folder if has_tokenizer or base is None else base)
    return model, tokenizer, dtype


def write_model(model: Any, tokenizer: Any, folder: Path, max_shard_size: str) -> None:
    """config.json, the safetensors weights, generation_config.json and the tokenizer files."""
    model.save_pretrained(folder, safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(folder)
    if not (folder / "generation_config.json").is_file():
        model.generation_config.save_pretrained(folder)


def card_inputs(
    reports: dict[str, Any],
    paths: RunPaths,
    data: DataPaths,
    chosen: Chosen,
    base: Path | None,
    model: Any,
    dtype: str,
) -> CardInputs:
    """What the card shows, read from the run directory (and the data folder when no report
    recorded the data)."""
    from proactive_rl.stages.export.card import CardInputs

    named = next((name for name, r in reports.items() if _data_of(r)), None)
    recorded = reports[named]["settings"]["data"] if named else None
    data_from = f"`{record_path(paths.eval_report(named), paths.root)}`" if named else ""
    if recorded is None and is_stable(data.processed):
        recorded, data_from = read_marker(data.processed), f"`{data.processed / MARKER}`"
    marker = read_marker(chosen.path)
    return CardInputs(
        title=f"{paths.root.absolute().name}: {chosen.label}",
        source=record_path(chosen.path, paths.root),
        spec=chosen.spec,
        run_dir=str(paths.root),
        label=chosen.label,
        dtype=dtype,
        parameters=sum(p.numel() for p in model.parameters()),
        marker={k: v for k, v in marker.items() if k != "files"},
        adapter=read_json(chosen.path / ADAPTER_CONFIG) if base is not None else None,
        base=record_path(base, paths.root) if base is not None else None,
        configs=read_configs(paths),
        data={k: v for k, v in (recorded or {}).items() if k != "files"},
        data_from=data_from,
        reports=reports,
    )


def _data_of(report: dict[str, Any]) -> bool:
    return bool(report.get("settings", {}).get("data"))


def read_configs(paths: RunPaths) -> dict[str, Any]:
    """configs/<stage>.json of every stage that ran, by stage name."""
    folder = paths.config("x").parent
    found = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return {p.stem: read_json(p) for p in found}


def read_reports(names: list[str] | None, paths: RunPaths) -> dict[str, Any]:
    """The published reports by name: the ones named (each must exist), or all of the run's."""
    published = (
        sorted(p.name for p in paths.eval.iterdir() if is_stable(p)) if paths.eval.is_dir() else []
    )
    if names is None:
        names = published
    missing = [n for n in names if n not in published]
    if missing:
        have = ", ".join(published) or "none"
        raise UserError(
            f"reports={','.join(missing)}: no published report of that name in {paths.eval} "
            f"(published: {have}); run `proactive eval --set name=...` or leave reports unset"
        )
    return {name: read_json(paths.eval_report(name)) for name in names}
