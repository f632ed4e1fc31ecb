"""The model-folder checks: every damaged file is named (a table of cases), sound folders pass,
and the weight count a free-space estimate uses is the model's own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from proactive_rl.engine.model_checks import check_model_folder, weights_numel
from proactive_rl.shared.errors import UserError


def truncate(path: Path, keep: int | None = None) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2 if keep is None else keep)


def shard(folder: Path) -> None:
    """The weights as a sharded checkpoint whose index names a second file that is missing."""
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002.st"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def pickled(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 truncated")


CASES = [
    ("half the weights", lambda f: truncate(f / "model.safetensors"), "safetensors is damaged"),
    ("a cut header", lambda f: truncate(f / "model.safetensors", 20), "safetensors is damaged"),
    ("an empty weights file", lambda f: truncate(f / "model.safetensors", 0), "is damaged"),
    ("no weights", lambda f: (f / "model.safetensors").unlink(), "holds no weights"),
    ("a missing shard", shard, "names weight files that are missing: ['model-00002.st']"),
    ("a truncated .bin", pickled, "pytorch_model.bin is damaged or truncated"),
    ("config not JSON", lambda f: (f / "config.json").write_text("{"), "config.json is not valid"),
    ("config a list", lambda f: (f / "config.json").write_text("[]"), "holds list, not a JSON"),
    ("config of no model", lambda f: (f / "config.json").write_text("{}"), "has no model_type"),
    ("no config", lambda f: (f / "config.json").unlink(), "has no config.json"),
    ("no tokenizer", lambda f: (f / "tokenizer.json").unlink(), "has no tokenizer"),
    ("tokenizer cut", lambda f: truncate(f / "tokenizer.json"), "tokenizer.json is not a readable"),
    ("tokenizer of nothing", lambda f: (f / "tokenizer.json").write_text("{}"), "not a readable"),
    ("tokenizer settings", lambda f: (f / "tokenizer_config.json").write_bytes(b"\xff"), "valid"),
    ("generation settings", lambda f: (f / "generation_config.json").write_text("x"), "valid"),
]  # fmt: skip


@pytest.mark.parametrize(("damage", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_damaged_folder_is_refused_naming_the_file(tiny_model, tmp_path, damage, message):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    damage(folder)
    with pytest.raises(UserError, match="copy it again") as err:
        check_model_folder(folder, "copy it again")
    assert message in str(err.value)
    assert str(folder) in str(err.value)


def test_sound_folders_pass_and_count_their_weights(tiny_model, tmp_path):
    check_model_folder(tiny_model, "")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    # tied embeddings are stored once
    assert weights_numel(tiny_model) == sum(p.numel() for p in model.parameters())
    adapter = tmp_path / "adapter"  # a LoRA policy: adapter_config.json instead of config.json
    adapter.mkdir()
    shutil.copy(tiny_model / "tokenizer.json", adapter)
    shutil.copy(tiny_model / "model.safetensors", adapter / "adapter_model.safetensors")
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "../base"}')
    check_model_folder(adapter, "")
