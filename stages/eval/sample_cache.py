"""Sampled responses kept for other evaluations (EvalConfig.sample_cache).

The rewards of a sweep are compared on the same base model and the same SFT epoch: without a
cache each run samples both again, with the same seeds, to the same responses - two thirds of a
reward sweep's evaluation time on a CPU. A checkpoint's responses are kept under a key made of
everything that decides them: the model folder's files, the questions (their prompts), the
sampling settings and seeds, the engine and its settings. Another evaluation with that key
grades the kept responses with its own reward instead of sampling again; anything that differs
is another key, so a kept sample is never used where a fresh one could differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proactive_rl.shared.paths import adapter_base
from proactive_rl.shared.publish import is_stable, read_json, read_marker, write_json_atomic
from proactive_rl.stages.eval.config import EvalConfig

if TYPE_CHECKING:
    from proactive_rl.engine.generation import Sample

logger = logging.getLogger(__name__)

FORMAT = 1  # bumped when what a key covers, or the file's layout, changes


def model_identity(folder: Path) -> dict[str, Any]:
    """What a model folder holds: the checksums its marker lists (a published checkpoint), else
    each file's size and modification time (a folder the user brought, e.g. the base model:
    hashing 16 GB for a cache key would cost more than it saves). A LoRA adapter's base too."""
    folder = Path(folder)
    if is_stable(folder):
        files = read_marker(folder)["files"]
        identity: dict[str, Any] = {"checksums": {k: files[k] for k in sorted(files)}}
    else:
        found = sorted(p for p in folder.rglob("*") if p.is_file())
        identity = {
            "folder": str(folder.resolve()),
            "files": [
                [str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in found
            ],
        }
    base = adapter_base(folder)
    if base is not None:
        identity["adapter_base"] = model_identity(base)
    return identity


def cache_key(
    model_dir: Path, records: list[dict[str, Any]], config: EvalConfig, engine: str
) -> str:
    """The key of one checkpoint's responses to `records` under `config`'s sampling."""
    parts = {
        "format": FORMAT,
        "model": model_identity(model_dir),
        "questions": [[r["extra_info"]["index"], r["prompt"]] for r in records],
        "n": config.n,
        "seed": config.seed,
        "sampling": config.sampling.model_dump(mode="json"),
        "generation_batch_prompts": config.generation_batch_prompts,  # the seeds go by batch
        "engine": engine,
        "precision": config.precision,
        "vllm": config.vllm.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cache_file(cache: Path, key: str) -> Path:
    return Path(cache) / f"{key}.json"


def load_groups(path: Path, questions: int) -> list[list[Sample]] | None:
    """The kept responses, one group per question; None when there are none (or the file is
    not whole: then they are sampled again and the file replaced)."""
    from proactive_rl.engine.generation import Sample

    if not path.is_file():
        return None
    try:
        kept = read_json(path)
    except json.JSONDecodeError:
        logger.warning("%s is not valid JSON: sampling again", path)
        return None
    if len(kept["groups"]) != questions:
        logger.warning(
            "%s holds %d groups, not %d: sampling again", path, len(kept["groups"]), questions
        )
        return None
    return [
        [Sample(s["token_ids"], [], s["finish_reason"]) for s in group] for group in kept["groups"]
    ]


def save_groups(path: Path, groups: list[list[Sample]], label: str, model_dir: Path) -> None:
    """Keep one checkpoint's responses (written whole or not at all). Log-probabilities are
    not kept: eval does not read them."""
    write_json_atomic(
        path,
        {
            "format": FORMAT,
            "sampled_as": label,
            "model": str(model_dir),
            "groups": [
                [{"token_ids": s.token_ids, "finish_reason": s.finish_reason} for s in group]
                for group in groups
            ],
        },
    )
