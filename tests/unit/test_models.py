"""The built-in tiny model (deterministic, loadable, chat-ready) and the sample data files."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proactive_rl.engine import models
from proactive_rl.engine.models import TAG_TOKENS, build_tiny_model, resolve_base_model
from proactive_rl.shared.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tokenizer(tiny_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


# --- the tiny model -------------------------------------------------------------------------


def test_build_is_byte_identical(tiny_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again")
    assert _files(again) == _files(tiny_dir)
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= set(
        _files(again)
    )


def test_other_seed_gives_other_weights(tiny_dir: Path, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert (other / "model.safetensors").read_bytes() != (
        tiny_dir / "model.safetensors"
    ).read_bytes()


@pytest.mark.slow
def test_build_is_identical_in_a_fresh_process(tiny_dir: Path, tmp_path: Path) -> None:
    # A different hash seed and a fresh interpreter: nothing may depend on set/dict order.
    code = "import sys; from pathlib import Path;"
    code += "from proactive_rl.engine.models import build_tiny_model;"
    code += "build_tiny_model(Path(sys.argv[1]))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "fresh")], check=True, env=env)
    assert _files(tmp_path / "fresh") == _files(tiny_dir)


def test_build_leaves_global_rng_alone(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    build_tiny_model(tmp_path / "m")
    assert torch.equal(torch.rand(3), expected)


def test_folder_is_tiny(tiny_dir: Path) -> None:
    total = sum(len(b) for b in _files(tiny_dir).values())
    assert total < 2_000_000


def test_loads_and_generates(tiny_dir: Path, tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.tie_word_embeddings
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert sum(p.numel() for p in model.parameters()) < 1_000_000

    messages = [{"role": "user", "content": "What is 17 + 25?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 8)
    assert isinstance(tokenizer.decode(out[0], skip_special_tokens=True), str)


def test_special_tokens(tokenizer) -> None:
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>")
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == ids[0]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nhi"


@pytest.mark.parametrize("tag", TAG_TOKENS)
def test_tags_are_single_tokens_kept_by_decode(tokenizer, tag: str) -> None:
    text = f"a {tag}b{tag}\n"
    ids = tokenizer.encode(text)
    tag_id = tokenizer.convert_tokens_to_ids(tag)
    assert tokenizer.encode(tag) == [tag_id]
    assert ids.count(tag_id) == 2
    # The reward parses the tags from decoded text, so skipping special tokens must keep them.
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_text_round_trips(tokenizer) -> None:
    text = "<think>\n12 * 3 = 36\n</think>\n\n<proactive>\nNot sure.\n</proactive>\n\nCafé 36, 日本"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_chat_template_renders_qwen_style(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful proactive assistant."},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful proactive assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    full = messages + [{"role": "assistant", "content": "4"}]
    assert tokenizer.apply_chat_template(full, tokenize=False) == (rendered + "4<|im_end|>\n")


def test_prompt_is_token_prefix_and_assistant_mask(tokenizer) -> None:
    # TRL's prompt/completion path needs the prompt's tokens to be a prefix of the full
    # conversation's; assistant_only_loss needs the mask to cover the reply and its <|im_end|>.
    prompt = [{"role": "user", "content": "Who was the first mayor of Vellmarsk?"}]
    reply = "<think>\nUnknown.\n</think>\n\n<proactive>\nNo records.\n</proactive>\n\nI don't know."
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"]
    full = tokenizer.apply_chat_template(
        prompt + [{"role": "assistant", "content": reply}],
        return_assistant_tokens_mask=True,
        return_dict=True,
    )
    assert full["input_ids"][: len(prompt_ids)] == prompt_ids
    masked = [i for i, m in zip(full["input_ids"], full["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(masked) == reply + "<|im_end|>"


@pytest.mark.slow
def test_trl_sft_trains_on_prompt_completion(tiny_dir: Path, tmp_path: Path) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    rows = [
        {
            "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
            "completion": [
                {"role": "assistant", "content": f"<think>\nEasy.\n</think>\n\n{2 * i}"}
            ],
        }
        for i in range(8)
    ]
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
    )
    SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows)).train()
    for name, param in model.named_parameters():
        assert not torch.equal(param, before[name]), f"{name} did not change"


# --- resolve_base_model -----------------------------------------------------------------------


def test_resolve_missing_path_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="BASE_MODEL_PATH") as err:
        resolve_base_model("Qwen/Qwen3-0.6B", tmp_path)
    assert "offline" in str(err.value)


def test_resolve_folder_without_config_is_user_error(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    with pytest.raises(UserError, match="config.json"):
        resolve_base_model(str(tmp_path / "weights"), tmp_path / "cache")


def test_resolve_local_folder(tiny_dir: Path, tmp_path: Path) -> None:
    assert resolve_base_model(str(tiny_dir), tmp_path) == tiny_dir.resolve()


def test_resolve_builtin_builds_once_then_reuses(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    path = resolve_base_model("builtin:tiny", cache)
    assert path == cache / "tiny"
    assert _files(path) == _files(tiny_dir)
    assert [p.name for p in cache.iterdir()] == ["tiny"]  # no temp folder left behind

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt a complete model")

    monkeypatch.setattr(models, "build_tiny_model", fail)
    assert resolve_base_model("builtin:tiny", cache) == path


def test_resolve_builtin_replaces_incomplete_folder(tiny_dir: Path, tmp_path: Path) -> None:
    half = tmp_path / "tiny"
    half.mkdir()
    (half / "config.json").write_text("{}")  # as if an old build stopped before the weights
    path = resolve_base_model("builtin:tiny", tmp_path)
    assert _files(path) == _files(tiny_dir)


# --- sample data --------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_sample_sft_schema() -> None:
    rows = _read_jsonl(SAMPLE / "sft.jsonl")
    assert 50 <= len(rows) <= 150
    assert [r["id"] for r in rows] == list(range(len(rows)))
    for row in rows:
        assert set(row) == {"messages", "id", "sub_category"}
        assert row["sub_category"] in {"arithmetic", "general", "obscure"}
        system, user, assistant = row["messages"]
        assert system == {"role": "system", "content": "You are a helpful proactive assistant."}
        assert user["role"] == "user" and user["content"].endswith("?")
        assert assistant["role"] == "assistant"
        reply = assistant["content"]
        assert reply.startswith("<think>\n") and "\n</think>\n\n" in reply
        final = reply.rsplit("\n\n", 1)[1]
        assert final and "<" not in final and len(final) < 80
        if row["sub_category"] == "obscure":
            assert "\n</think>\n\n<proactive>\n" in reply and "\n</proactive>\n\n" in reply
            assert final.startswith("I don't know")
        else:
            assert "<proactive>" not in reply


def test_sample_rl_schema() -> None:
    rows = _read_jsonl(SAMPLE / "rl.jsonl")
    assert 200 <= len(rows) <= 400
    assert [r["id"] for r in rows] == list(range(len(rows)))
    questions = set()
    for row in rows:
        assert set(row) == {"id", "messages", "answer", "sub_category"}
        assert row["sub_category"] in {"arithmetic", "general", "obscure"}
        user, assistant = row["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert row["answer"] == {"value": assistant["content"]}
        assert 0 < len(assistant["content"]) <= 40
        questions.add(user["content"])
    assert len(questions) == len(rows)  # no duplicates to leak across the train/test split
    # The pipeline's 5% test split is the file's tail: it should hold every kind of question.
    assert {r["sub_category"] for r in rows[-len(rows) // 20 :]} == {
        "arithmetic",
        "general",
        "obscure",
    }


def test_sample_files_match_the_generator(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_sample_data", REPO / "scripts" / "make_sample_data.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    sft, rl = script.build()
    script.write_jsonl(tmp_path / "sft.jsonl", sft)
    script.write_jsonl(tmp_path / "rl.jsonl", rl)
    for name in ("sft.jsonl", "rl.jsonl"):
        assert (tmp_path / name).read_bytes() == (SAMPLE / name).read_bytes(), (
            f"{name} is stale: run scripts/make_sample_data.py"
        )
    total = sum((SAMPLE / n).stat().st_size for n in ("sft.jsonl", "rl.jsonl"))
    assert total < 150_000
