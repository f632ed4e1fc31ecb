"""Cheap checks of a Hugging Face model folder, run where a stage picks its model folder.

A truncated safetensors file, a garbage config.json or a broken tokenizer file otherwise
surfaces as a traceback from deep inside transformers, minutes later, without the file's name.
These checks read only headers and small JSON files (milliseconds, even for an 8B model); the
weights are loaded once, later, by the stage itself.

    from proactive_rl.engine.model_checks import check_model_folder
    check_model_folder(Path("/models/Qwen3-0.6B"), "copy the model folder again")
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

from proactive_rl.shared.errors import UserError

# Files transformers reads besides the weights; each must be valid JSON where it exists.
JSON_FILES = (
    "config.json",
    "adapter_config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors.index.json",
    "adapter_model.safetensors.index.json",
)
# Any one of these is a tokenizer transformers can load.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "adapter_model.bin")


def check_model_folder(folder: Path, remedy: str) -> None:
    """Refuse a model folder (a whole model or a LoRA adapter) whose config, weights or
    tokenizer cannot be read, with one message naming the broken file; `remedy` says what to
    do about it (e.g. "copy the model folder again")."""
    folder = Path(folder)
    for name in JSON_FILES:
        if (folder / name).exists():
            read_json_object(folder / name, remedy)
    adapter = (folder / "adapter_config.json").is_file()
    if not adapter and not (folder / "config.json").is_file():
        raise UserError(
            f"{folder} has no config.json, so it is not a Hugging Face model folder: {remedy}"
        )
    if not adapter and "model_type" not in read_json_object(folder / "config.json", remedy):
        raise UserError(
            f"{folder / 'config.json'} has no model_type, so it is not a Hugging Face model "
            f"config: {remedy}"
        )
    _check_weights(folder, remedy)
    _check_tokenizer(folder, remedy)


def read_json_object(path: Path, remedy: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}): {remedy}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} holds {type(value).__name__}, not a JSON object: {remedy}")
    return value


def _check_weights(folder: Path, remedy: str) -> None:
    shards = sorted(folder.glob("*.safetensors"))
    for index in sorted(folder.glob("*.safetensors.index.json")):
        listed = read_json_object(index, remedy).get("weight_map", {}).values()
        missing = sorted({name for name in listed if not (folder / name).is_file()})
        if missing:
            raise UserError(f"{index} names weight files that are missing: {missing}: {remedy}")
    pickled = [folder / name for name in PICKLED_WEIGHTS if (folder / name).is_file()]
    if not shards and not pickled:
        raise UserError(
            f"{folder} holds no weights (no *.safetensors or pytorch_model.bin file): {remedy}"
        )
    for path in shards:
        safetensors_numel(path, remedy)
    for path in pickled:
        # torch.save files are zip archives whose directory sits at the end: a truncated one
        # fails to open, without reading the tensors
        try:
            zipfile.ZipFile(path).close()
        except (zipfile.BadZipFile, OSError) as err:
            raise UserError(f"{path} is damaged or truncated ({err}): {remedy}") from None


def safetensors_numel(path: Path, remedy: str) -> int:
    """The number of weights in one safetensors file. Opening it checks that the header parses
    and that the data it declares covers the file exactly (a truncated copy does not)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as weights:
            return sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path} is damaged or truncated ({err}): {remedy}") from None


def _check_tokenizer(folder: Path, remedy: str) -> None:
    present = [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if not present:
        raise UserError(
            f"{folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): {remedy}"
        )
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as err:  # the Rust library raises plain Exception for any bad file
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(
                f"{folder / 'tokenizer.json'} is not a readable tokenizer ({first}): {remedy}"
            ) from None


def weights_numel(folder: Path) -> int:
    """The number of weights in a checked model folder's safetensors files (0 with only
    pickled weights): what a free-space estimate scales with."""
    return sum(safetensors_numel(path, "") for path in Path(folder).glob("*.safetensors"))
