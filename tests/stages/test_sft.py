"""`proactive sft` on the builtin tiny model, CPU, a few seconds: the real stage command on eight
conversations in the users' format, two epochs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from proactive_rl.engine.models import TAG_TOKENS
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.metrics import read_metrics
from proactive_rl.shared.paths import DataPaths, RunPaths
from proactive_rl.shared.publish import is_stable, publish_dir, read_marker, staging_dir
from proactive_rl.stages.sft.main import command, ensure_tags

SYSTEM = "You are a helpful proactive assistant."
# Small max_length and a high rate: fast, and the weights move enough to see.
FAST = ["--set", "max_length=96", "--set", "learning_rate=1e-3"]


def conversation(i: int) -> dict:
    if i % 2:
        question, answer = (
            f"What is {i} + {i}?",
            f"<think>\nAdd the ones.\n</think>\n\nThe answer is {2 * i}.",
        )
    else:
        question, answer = (
            f"In what year was the first public library opened in Vellmarsk {i}?",
            "<think>\nAn exact year about a small village.\n</think>\n\n<proactive>\nI don't "
            "have reliable records about it.\n</proactive>\n\nI don't know the exact year.",
        )
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        "id": i,
        "sub_category": "simpleQA",
    }


def write_data(data_dir: Path, lines: list[str]) -> None:
    """Publish data/processed as prep does: the file, then STABLE.json."""
    final = DataPaths(data_dir).processed
    staging = staging_dir(final)
    (staging / DataPaths(data_dir).sft_train.name).write_text("\n".join(lines) + "\n")
    publish_dir(staging, final, {"stage": "prep"})


def sft(run_dir: Path, data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(
        command, ["--run-dir", str(run_dir), "--data-dir", str(data_dir), *FAST, *args]
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sft")
    data_dir, run_dir = root / "data", root / "run"
    write_data(data_dir, [json.dumps(conversation(i)) for i in range(8)])
    result = sft(run_dir, data_dir, "--set", "epochs=2")
    assert result.exit_code == 0, result.output + repr(result.exception)
    return run_dir, data_dir


def state_dict(folder: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def test_every_epoch_is_a_loadable_published_hf_folder(trained: tuple[Path, Path]) -> None:
    run_dir, _ = trained
    paths = RunPaths(run_dir)
    for epoch in (1, 2):
        folder = paths.sft_epoch(epoch)
        assert is_stable(folder)
        marker = read_marker(folder)
        assert marker["epoch"] == epoch and marker["samples"] == 8
        assert marker["base_model"] == "builtin:tiny" and marker["train_loss"] > 0
        for name in (
            "model.safetensors",
            "tokenizer.json",
            "chat_template.jinja",
            "generation_config.json",
        ):
            assert name in marker["files"], name
        model = AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert model.get_input_embeddings().num_embeddings >= len(tokenizer)
        assert model.config.use_cache  # the Trainer turns it off; generation wants it on
        assert tokenizer.chat_template
        for tag in ("<think>", "</think>", "<proactive>", "</proactive>"):
            assert len(tokenizer.encode(tag, add_special_tokens=False)) == 1, tag
    assert sorted(p.name for p in paths.sft.iterdir()) == ["epoch_000001", "epoch_000002"]
    assert json.loads(paths.config("sft").read_text())["epochs"] == 2
    assert json.loads(paths.status("sft").read_text())["state"] == "done"


def test_auto_precision_trains_in_bf16_on_a_cpu_with_amx(trained: tuple[Path, Path]) -> None:
    """precision=auto (the default): bf16 autocast over float32 masters where the CPU has AMX,
    float32 elsewhere; the epoch's marker says which, the weights stay float32 masters."""
    from proactive_rl.engine.precision import cpu_has_amx

    run_dir, _ = trained
    marker = read_marker(RunPaths(run_dir).sft_epoch(2))
    assert marker["compute_dtype"] == ("bfloat16" if cpu_has_amx() else "float32")
    weights = state_dict(RunPaths(run_dir).sft_epoch(2))
    assert all(w.dtype == torch.float32 for w in weights.values())


def test_training_changed_every_weight_and_lowered_the_loss(trained: tuple[Path, Path]) -> None:
    paths = RunPaths(trained[0])
    base = state_dict(paths.base_models / "tiny")
    epoch1, epoch2 = state_dict(paths.sft_epoch(1)), state_dict(paths.sft_epoch(2))
    assert base.keys() == epoch2.keys()
    unchanged = [k for k in base if torch.equal(base[k], epoch2[k])]
    assert not unchanged, f"parameters SFT did not change: {unchanged}"
    assert any(not torch.equal(epoch1[k], epoch2[k]) for k in base)
    assert epoch2["model.embed_tokens.weight"].dtype == torch.float32  # trained in fp32 on CPU
    loss1 = read_marker(paths.sft_epoch(1))["train_loss"]
    loss2 = read_marker(paths.sft_epoch(2))["train_loss"]
    assert loss2 < loss1


def test_metrics_jsonl_and_tensorboard(trained: tuple[Path, Path]) -> None:
    log_dir = RunPaths(trained[0]).logs("sft")
    records = read_metrics(log_dir)
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 4  # 8 conversations / batch 4 x 2 epochs, logged every step
    for record in steps:
        assert {"loss", "learning_rate", "grad_norm", "epoch", "seconds"} <= record.keys()
        assert record["learning_rate"] == 1e-3  # veRL's default: constant, no warm-up
    assert list(log_dir.glob("events.out.tfevents.*"))


def train_steps(run_dir: Path, data_dir: Path, *args: str) -> list[dict]:
    """The optimizer steps of a fresh run (logged every step): one record each."""
    result = sft(run_dir, data_dir, *args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return [r for r in read_metrics(RunPaths(run_dir).logs("sft")) if "loss" in r]


def verl_batches(total: int, micro: int) -> list[str]:
    return [
        "--set",
        f"data.train_batch_size={total}",
        "--set",
        f"data.micro_batch_size_per_gpu={micro}",
    ]


def test_a_step_is_verls_global_batch(tmp_path: Path) -> None:
    """data.train_batch_size=4 from micro batches of 2 trains exactly as one batch of 4 (the
    loss is the token mean over the global batch) and not as steps of 2; 11 conversations give
    2 steps an epoch: veRL drops the partial batch (drop_last), the Trainer alone would not."""
    data_dir = tmp_path / "data"
    write_data(data_dir, [json.dumps(conversation(i)) for i in range(11)])
    # float32: the comparison below is at float32's rounding (bf16 autocast's is 2^16 coarser)
    one = ["--set", "epochs=1", "--set", "precision=fp32"]
    accumulated = train_steps(tmp_path / "a", data_dir, *one, *verl_batches(4, 2))
    whole = train_steps(tmp_path / "b", data_dir, *one, *verl_batches(4, 4))
    smaller = train_steps(tmp_path / "c", data_dir, *one, *verl_batches(2, 2))
    assert [r["step"] for r in accumulated] == [r["step"] for r in whole] == [1, 2]
    assert len(smaller) == 5
    assert read_marker(RunPaths(tmp_path / "a").sft_epoch(1))["samples"] == 11
    a, b, c = (state_dict(RunPaths(tmp_path / n).sft_epoch(1)) for n in "abc")
    # Whole-model distances, not elements: float32 sums over 2 + 2 rows and over 4 differ in
    # the last bits, and Adam's m / sqrt(v) can blow that up where a gradient is near zero
    # (one element of 8,192 went past rtol 1e-4 on one machine). Measured: |a - b| / |a - c|
    # = 1.3e-6; steps of 2 instead of 4 give 1.
    assert distance(a, b) < 1e-3 * distance(a, c)


def distance(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> float:
    """Euclidean distance between two models' parameters, all tensors together."""
    return sum(((x[k] - y[k]) ** 2).sum() for k in x).sqrt().item()


# veRL 0.9.1's own schedules (verl.utils.torch_functional, as its FSDP engine builds them) for
# 10 steps at lr 1e-3, warm-up int(0.25 x 10) = 2: get_cosine_schedule_with_warmup(opt, 2, 10,
# min_lr_ratio=0.1) and get_constant_schedule_with_warmup(opt, 2), the rate of each step.
VERL_COSINE = [0.0, 0.0005, 0.001, 0.000965745789630079, 0.0008681980515339465,
               0.0007222075445642905, 0.00055, 0.00037779245543570966, 0.00023180194846605367,
               0.00013425421036992102]  # fmt: skip
VERL_CONSTANT = [0.0, 0.0005] + [0.001] * 8


@pytest.mark.parametrize(
    ("kind", "expected"), [("cosine", VERL_COSINE), ("constant", VERL_CONSTANT)]
)
def test_the_learning_rate_follows_verls_schedule(
    tmp_path: Path, kind: str, expected: list
) -> None:
    """11 conversations in steps of 2, 2 epochs: 10 steps; the warm-up is veRL's int(0.25 x
    10) = 2 steps (transformers' own ratio would round up to 3)."""
    data_dir = tmp_path / "data"
    write_data(data_dir, [json.dumps(conversation(i)) for i in range(11)])
    schedule = ["optim.lr_warmup_steps_ratio=0.25", f"optim.lr_scheduler_type={kind}"]
    schedule += ["optim.min_lr_ratio=0.1"]
    args = [a for s in schedule for a in ("--set", s)]
    steps = train_steps(tmp_path / "run", data_dir, "--set", "epochs=2", *verl_batches(2, 1), *args)
    assert [r["step"] for r in steps] == list(range(1, 11))
    rates = [r["learning_rate"] for r in steps]
    assert rates == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_a_batch_the_data_or_the_micro_batches_cannot_make_fails_first(tmp_path: Path) -> None:
    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    write_data(data_dir, [json.dumps(conversation(i)) for i in range(8)])
    for args, message in [
        (verl_batches(6, 4), "train_batch_size=4 or 8"),  # 6 is not whole micro batches of 4
        (verl_batches(16, 4), "8 conversations do not fill one global batch"),
    ]:
        result = sft(run_dir, data_dir, *args)
        assert isinstance(result.exception, UserError), repr(result.exception)
        assert message in str(result.exception)
    assert not run_dir.exists()  # checked before anything is written


def test_truncation_error_refuses_a_conversation_longer_than_max_length(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_data(data_dir, [json.dumps(conversation(i)) for i in range(8)])
    result = sft(tmp_path / "run", data_dir, "--set", "truncation=error", "--set", "max_length=60")
    assert isinstance(result.exception, UserError), repr(result.exception)
    assert "4 of 8 conversations are longer than max_length=60" in str(result.exception)


def test_loss_is_on_the_assistant_turn_only(trained: tuple[Path, Path]) -> None:
    run_dir, _ = trained
    example = json.loads((RunPaths(run_dir).logs("sft") / "loss_mask_example.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(RunPaths(run_dir).sft_epoch(1))
    first = conversation(0)["messages"]
    prompt_ids = tokenizer.apply_chat_template(
        first[:2], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    ids, labels = example["input_ids"], example["labels"]
    # The rendered prompt (system, user, "<|im_start|>assistant\n") is exactly the masked prefix.
    assert ids[: len(prompt_ids)] == list(prompt_ids)
    assert all(label == -100 for label in labels[: len(prompt_ids)])
    assert labels[len(prompt_ids) :] == ids[len(prompt_ids) :]
    # The answer and its end-of-turn token are trained, so the model learns to stop.
    assert example["trained_text"].startswith(first[2]["content"] + "<|im_end|>")
    assert first[1]["content"] in example["masked_text"]
    assert first[1]["content"] not in example["trained_text"]


def test_second_run_is_refused_without_resume_or_clean(trained: tuple[Path, Path]) -> None:
    result = sft(*trained, "--set", "epochs=2")
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError)  # the CLI prints it as "error: ..." only
    assert "--resume" in str(result.exception) and "--clean" in str(result.exception)


def test_resume_after_completion_does_nothing(
    trained: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    paths = RunPaths(trained[0])
    before = [read_marker(paths.sft_epoch(e))["published_at"] for e in (1, 2)]
    with caplog.at_level(logging.INFO):
        result = sft(*trained, "--set", "epochs=2", "--resume")
    assert result.exit_code == 0, repr(result.exception)
    assert "nothing to do" in caplog.text
    assert [read_marker(paths.sft_epoch(e))["published_at"] for e in (1, 2)] == before


def test_resume_continues_from_the_last_epoch_checkpoint(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """One epoch, then --resume with epochs=2: epoch 1 is kept, only epoch 2 is trained, and the
    result equals the uninterrupted two-epoch run (same seed, optimizer state restored)."""
    _, data_dir = trained
    run_dir = tmp_path / "run"
    assert sft(run_dir, data_dir, "--set", "epochs=1").exit_code == 0
    first = read_marker(RunPaths(run_dir).sft_epoch(1))
    result = sft(run_dir, data_dir, "--set", "epochs=2", "--resume")
    assert result.exit_code == 0, repr(result.exception)
    assert read_marker(RunPaths(run_dir).sft_epoch(1)) == first
    resumed = state_dict(RunPaths(run_dir).sft_epoch(2))
    straight = state_dict(RunPaths(trained[0]).sft_epoch(2))
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, msg=key)


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    good = json.dumps(conversation(1))
    no_answer = json.dumps({"messages": conversation(2)["messages"][:2], "id": 2})
    for lines, line_no, why in [
        ([good, '{"messages": [', good], 2, "not valid JSON"),
        ([good, good, no_answer], 3, "assistant"),
    ]:
        data_dir = tmp_path / f"data{line_no}"
        write_data(data_dir, lines)
        result = sft(tmp_path / "run", data_dir)
        assert result.exit_code != 0
        assert isinstance(result.exception, UserError), repr(result.exception)
        message = str(result.exception)
        assert f"{DataPaths(data_dir).sft_train}:{line_no}:" in message and why in message
    assert not (tmp_path / "run").exists()  # checked before anything is written


def test_the_proactive_cli_prints_the_error_without_a_traceback(tmp_path: Path) -> None:
    write_data(tmp_path / "data", [json.dumps(conversation(1)), '{"messages": ['])
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from proactive_rl.stages.cli import main; main()",
            "sft",
            "--run-dir",
            str(tmp_path / "run"),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {DataPaths(tmp_path / 'data').sft_train}:2: ")
    assert "Traceback" not in result.stderr + result.stdout


def test_tags_are_added_to_a_tokenizer_without_them(trained: tuple[Path, Path]) -> None:
    """A base model lacking the tags (real Qwen3 has <think> but not <proactive>) gets them as
    single tokens, with embedding rows for them."""
    base = RunPaths(trained[0]).base_models / "tiny"
    tokenizer_json = json.loads((base / "tokenizer.json").read_text())
    tokenizer_json["added_tokens"] = [
        t for t in tokenizer_json["added_tokens"] if t["content"] not in TAG_TOKENS
    ]
    stripped = Tokenizer.from_str(json.dumps(tokenizer_json))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=stripped, eos_token="<|im_end|>")
    model = AutoModelForCausalLM.from_pretrained(base)
    model.resize_token_embeddings(len(tokenizer))
    assert len(tokenizer.encode("<proactive>", add_special_tokens=False)) > 1
    pieces = {tag: tokenizer.encode(tag, add_special_tokens=False) for tag in TAG_TOKENS}
    rows = model.get_input_embeddings().weight.detach().clone()
    ensure_tags(model, tokenizer)
    for tag in TAG_TOKENS:
        assert len(tokenizer.encode(tag, add_special_tokens=False)) == 1, tag
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    # a new tag starts as the mean of the pieces it used to be split into (so the model can
    # emit it from the first SFT step); tied embeddings make it the output row too
    embeddings = model.get_input_embeddings().weight
    for tag, ids in pieces.items():
        new = tokenizer.convert_tokens_to_ids(tag)
        torch.testing.assert_close(embeddings[new], rows[ids].mean(0))
        torch.testing.assert_close(model.get_output_embeddings().weight[new], rows[ids].mean(0))
    assert "<proactive>" in tokenizer.decode(
        tokenizer.encode("<proactive>"), skip_special_tokens=True
    )


def test_missing_prep_output_says_run_prep(tmp_path: Path) -> None:
    result = sft(tmp_path / "run", tmp_path / "empty")
    assert isinstance(result.exception, UserError)
    assert "proactive prep" in str(result.exception)


@pytest.mark.slow
def test_ddp_strategy_trains_in_two_processes_and_publishes_once(tmp_path: Path) -> None:
    """strategy=ddp: `proactive sft` re-executes itself under torchrun (2 processes, gloo on
    the CPU); the Trainer shards the data, rank 0 alone publishes each epoch and logs."""
    from tests.conftest import proactive

    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    write_data(data_dir, [json.dumps(conversation(i)) for i in range(8)])
    args = ["--set", "epochs=2", "--set", "strategy=ddp", "--set", "num_processes=2"]
    args += verl_batches(8, 2)  # 2 micro batches of 2 on each of the 2 processes
    proc = proactive(
        "sft", "--run-dir", str(run_dir), "--data-dir", str(data_dir), *FAST, *args, cwd=tmp_path
    )
    paths = RunPaths(run_dir)
    for epoch in (1, 2):
        assert is_stable(paths.sft_epoch(epoch)), proc.stdout
        assert read_marker(paths.sft_epoch(epoch))["epoch"] == epoch
    assert not (run_dir / "sft" / "epoch_000003").exists()
    # 8 conversations, a global batch of 8: one optimizer step per epoch
    records = read_metrics(paths.logs("sft"))
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == sorted(set(steps)) == [1, 2], records  # logged once, not once per process
    assert len(list(paths.logs("sft").glob("events.out.tfevents*"))) == 1
    base = state_dict(run_dir / "base_models" / "tiny")
    final = state_dict(paths.sft_epoch(2))
    assert any(not torch.equal(base[k], final[k]) for k in base)
