"""`proactive export` on a real tiny run: a LoRA policy (merged into its base) and a whole SFT
epoch become standard Hugging Face folders that plain transformers (and vLLM's CPU build) load
and that answer as the checkpoint did; the model card holds the run's settings, its data and the
evaluation table with intervals; bad runs, specs and output folders are one-line errors."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from click.testing import CliRunner
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import adapter_base, numbered_children
from proactive_rl.shared.publish import publish_dir, staging_dir, verify
from proactive_rl.stages.export.config import ExportConfig
from proactive_rl.stages.export.main import command, run
from tests.conftest import REPO, proactive
from tests.stages.test_lora import LORA
from tests.stages.test_rl_loop import run_rl

QUESTIONS = ("What is the capital of France?", "Who wrote Hamlet?")
TOKENS = 4  # greedy first tokens compared


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model):
    """A LoRA GRPO run on the tiny model, one SFT epoch (a whole model) in the same run, and an
    evaluation report of both."""
    workdir = tmp_path_factory.mktemp("export")
    shutil.copytree(REPO / "data" / "sample", workdir / "data" / "sample")
    paths = run_rl(workdir, tiny_model, max_staleness=0, grpo_args=LORA)
    run = ["--run-dir", str(paths.root)]
    proactive(
        "sft", *run, "--set", "base_model=builtin:tiny", "--set", "epochs=1",
        "--set", "max_samples=8", "--set", "max_length=128", "--set", "truncation=right",
        cwd=workdir,
    )  # fmt: skip
    proactive(
        "eval", *run, "--set", "checkpoints=sft,final", "--set", "n=2",
        "--set", "max_questions=3", "--set", "sampling.max_new_tokens=8",
        "--set", "plots=false", "--set", "bootstrap_resamples=100", cwd=workdir,
    )  # fmt: skip
    return workdir, paths


@pytest.fixture(scope="module")
def lora_export(run_dir, tmp_path_factory):
    """The default export (the newest policy), in this process: the command line's own wiring
    is tested below, without the ~8 s of a second interpreter importing torch."""
    workdir, paths = run_dir
    out = tmp_path_factory.mktemp("exports") / "final"
    return run(ExportConfig(), paths.root, workdir / "data", out)


def prompts(model_dir) -> list[list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        for q in QUESTIONS
    ]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def greedy(model, ids: list[list[int]]) -> list[list[int]]:
    """The first TOKENS greedy tokens after each prompt."""
    out = []
    with torch.no_grad():
        for prompt in ids:
            tokens = model.generate(
                torch.tensor([prompt]),
                max_new_tokens=TOKENS,
                do_sample=False,
                min_new_tokens=TOKENS,
            )
            out.append(tokens[0, len(prompt) :].tolist())
    return out


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


def weights_dtypes(folder) -> set[str]:
    from safetensors import safe_open

    found = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as weights:
            found |= {str(weights.get_slice(k).get_dtype()) for k in weights.keys()}
    return found


def test_a_lora_policy_exports_as_a_plain_model_that_answers_as_base_plus_adapter(
    run_dir, lora_export
):
    _, paths = run_dir
    final = numbered_children(paths.policies)[-1][1]
    base_dir = adapter_base(final)
    for name in ("config.json", "generation_config.json", "README.md", "tokenizer.json"):
        assert (lora_export / name).is_file(), name
    assert list(lora_export.glob("*.safetensors"))
    assert not (lora_export / "adapter_config.json").exists()  # merged: no peft needed
    verify(lora_export)  # published atomically: STABLE.json checks every file
    assert weights_dtypes(lora_export) == weights_dtypes(base_dir)  # the checkpoint's dtype

    exported = AutoModelForCausalLM.from_pretrained(lora_export).eval()
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    original = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir), final
    ).eval()  # the original way: base + adapter, not merged
    ids = prompts(lora_export)
    assert ids == prompts(final)  # the tokenizer and chat template came along
    assert greedy(exported, ids) == greedy(original, ids)
    torch.testing.assert_close(logits(exported, ids[0]), logits(original, ids[0]))
    # the adapter is in the weights: the export is not the base model
    assert (logits(exported, ids[0]) - logits(base, ids[0])).abs().max() > 1e-3


def test_the_model_card_holds_settings_data_and_the_eval_table(run_dir, lora_export):
    _, paths = run_dir
    card = (lora_export / "README.md").read_text()
    final = numbered_children(paths.policies)[-1][0]
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert f"checkpoint `final`: the GRPO policy in `policies/step_{final:06d}`" in card
    assert "merged" in card and "r=4" in card
    # the run's resolved settings, each stage's
    for stage in ("grpo", "rollout", "sft", "eval"):
        assert f"### {stage}\n" in card
    grpo = json.loads(paths.config("grpo").read_text())
    assert f'"learning_rate": {grpo["learning_rate"]}' in card
    # the data sources, as prep recorded them
    assert "## Training data" in card and "data fingerprint" in card
    # the evaluation table: both checkpoints, this one marked, rates with 95% intervals
    report = json.loads(paths.eval_report("report").read_text())
    table = card[card.index("### Report `report`") :]
    assert f"**policy_{final} (this model)**" in table and "sft_epoch_1" in table
    accuracy = next(line for line in table.splitlines() if line.startswith("| accuracy (correct"))
    cells = accuracy.split("|")[2:-1]
    assert len(cells) == len(report["checkpoints"]) == 2
    assert all(re.fullmatch(r" \d+\.\d% \[\d+\.\d, \d+\.\d\] ", c) for c in cells), accuracy
    value = report["checkpoints"][1]["metrics"]["accuracy"]
    assert f"{100 * value:.1f}%" in cells[1]


def test_a_whole_sft_epoch_exports_unchanged(run_dir, tmp_path):
    workdir, paths = run_dir
    out = run(
        ExportConfig(checkpoint="sft/epoch_000001"), paths.root, workdir / "data", tmp_path / "e"
    )
    epoch = paths.sft_epoch(1)
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    original = AutoModelForCausalLM.from_pretrained(epoch).eval()
    for (name, a), (_, b) in zip(
        exported.state_dict().items(), original.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert weights_dtypes(out) == weights_dtypes(epoch)
    ids = prompts(out)
    assert ids == prompts(epoch)
    assert greedy(exported, ids) == greedy(original, ids)
    card = (out / "README.md").read_text()
    assert "the SFT epoch in `sft/epoch_000001`" in card and "merged" not in card


def test_the_export_keeps_the_weights_dtype_whatever_the_config_says(run_dir, tmp_path):
    """GRPO publishes float32 masters as bf16 weights under a config that still says float32
    (grpo's publish_dtype): the export stays bf16, and its config says so."""
    workdir, paths = run_dir
    model = AutoModelForCausalLM.from_pretrained(paths.sft_epoch(1))
    bf16 = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    final = tmp_path / "run" / "sft" / "epoch_000001"
    staging = staging_dir(final)
    model.save_pretrained(staging, state_dict=bf16)
    AutoTokenizer.from_pretrained(paths.sft_epoch(1)).save_pretrained(staging)
    publish_dir(staging, final)
    assert json.loads((final / "config.json").read_text())["dtype"] == "float32"
    out = run(ExportConfig(checkpoint="sft"), final.parents[1], workdir / "data", tmp_path / "e")
    assert weights_dtypes(out) == {"BF16"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    exported = AutoModelForCausalLM.from_pretrained(out, dtype="auto").state_dict()
    assert all(torch.equal(exported[k], v) for k, v in bf16.items() if k in exported)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("policy:99", r"policy version 99 is not published .* policy:0, policy:1"),
        ("sft:7", r"SFT epoch 7 is not published .* SFT epochs sft:1"),
        ("newest", r"unknown checkpoint 'newest': give one of final, latest"),
    ],
)
def test_an_unknown_checkpoint_lists_what_the_run_has(run_dir, tmp_path, spec, message):
    workdir, paths = run_dir
    with pytest.raises(UserError, match=message):
        run(ExportConfig(checkpoint=spec), paths.root, workdir / "data", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_help_explains_the_command():
    result = CliRunner().invoke(command, ["--help"], terminal_width=100)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for words in ("Hugging Face model folder", "merged into its base", "--force", "--out",
                  "checkpoint = 'final'", "'sft/epoch_000001'", "docs/export.md"):  # fmt: skip
        assert words in text, words


def test_a_missing_run_dir_is_one_line_naming_the_runs_there(run_dir, tmp_path):
    workdir, paths = run_dir
    proc = proactive(
        "export", "--run-dir", str(paths.root.parent / "nope"), "--out", str(tmp_path / "o"),
        cwd=workdir, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: run directory") and f"runs in {paths.root.parent}: run" in line


def test_an_existing_output_is_replaced_only_with_force(run_dir, lora_export, tmp_path):
    workdir, paths = run_dir
    out = tmp_path / "copy"
    shutil.copytree(lora_export, out)
    config = ExportConfig(checkpoint="sft:1")
    with pytest.raises(UserError, match="exists and is not empty: pass --force"):
        run(config, paths.root, workdir / "data", out)
    assert "sft_epoch_1 (this model)" not in (out / "README.md").read_text()
    run(config, paths.root, workdir / "data", out, force=True)
    assert "sft_epoch_1 (this model)" in (out / "README.md").read_text()
    verify(out)
    # --force never deletes a folder that is not a model, nor one that holds the run
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(UserError, match="holds files but no model"):
        run(config, paths.root, workdir / "data", notes, force=True)
    assert (notes / "todo.txt").read_text() == "keep me"
    with pytest.raises(UserError, match="which the export reads"):
        run(config, paths.root, workdir / "data", paths.root.parent, force=True)
    with pytest.raises(UserError, match="lies inside the published model"):
        run(config, paths.root, workdir / "data", paths.sft_epoch(1) / "export")
    assert not (paths.sft_epoch(1) / "export").exists()


@pytest.mark.vllm
def test_vllm_serves_the_export_with_the_same_first_tokens(lora_export):
    """The export is a plain model folder to vLLM (its CPU build here): greedy decoding gives
    the tokens transformers gives."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    ids = prompts(lora_export)
    expected = greedy(AutoModelForCausalLM.from_pretrained(lora_export).eval(), ids)
    llm = LLM(
        model=str(lora_export), dtype="float32", enforce_eager=True, max_model_len=256,
        kv_cache_memory_bytes=2**30, seed=0,
    )  # fmt: skip
    try:
        outputs = llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in ids],
            SamplingParams(temperature=0.0, max_tokens=TOKENS, min_tokens=TOKENS),
        )
    finally:
        llm.llm_engine.engine_core.shutdown()
    assert [list(o.outputs[0].token_ids) for o in outputs] == expected
