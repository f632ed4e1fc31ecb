"""DeepSpeed ZeRO for `sft` and `grpo`, wherever DeepSpeed is installed: on GPUs (NCCL), and on
a machine without one through DeepSpeed's CPU accelerator (gloo, two processes), which is how
`make test-deepspeed` exercises the same code in CI. The stages relaunch themselves under
torchrun; the published folders must be whole Hugging Face models (ZeRO-3 gathers the
partitioned weights) that transformers loads, and training must have moved the weights."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("deepspeed", reason="DeepSpeed is installed in the CUDA images only")

# 1-3 min a test on 2 cores (torchrun, two processes, DeepSpeed's CPU op built on first use):
# `make test` runs them, `make test-fast` does not
pytestmark = pytest.mark.slow

from transformers import AutoModelForCausalLM  # noqa: E402

from proactive_rl.shared.paths import RunPaths  # noqa: E402
from proactive_rl.shared.publish import is_stable, verify  # noqa: E402
from tests.conftest import proactive, start  # noqa: E402


def process_counts() -> list[int]:
    if not torch.cuda.is_available():
        return [2]  # CPU processes: the multi-process maths without GPUs
    return [1, 2] if torch.cuda.device_count() >= 2 else [1]


def weights(folder):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).state_dict()


def grpo_beside_rollout(workdir, common: list[str], *grpo_args: str) -> str:
    """Run the GRPO trainer and a rollout worker to the end; returns the trainer's output."""
    grpo = start("grpo", *common, *grpo_args, cwd=workdir)
    # transformers: this test is about training (a vLLM engine would only add its start-up)
    rollout = start(
        "rollout", *common, "--set", "sampling.max_new_tokens=16", "--set", "backend=transformers",
        cwd=workdir,
    )  # fmt: skip
    out_r, _ = rollout.communicate(timeout=900)
    out_g, _ = grpo.communicate(timeout=900)
    assert rollout.returncode == 0, out_r
    assert grpo.returncode == 0, out_g
    return out_g


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
@pytest.mark.parametrize("processes", process_counts())
def test_sft_and_grpo_with_zero(workdir, tiny_model, strategy, processes):
    run = workdir / "checkpoints" / "run"
    common = ["--run-dir", str(run)]
    parallel = ["--set", f"strategy={strategy}", "--set", f"num_processes={processes}"]
    proactive("prep", "--set", "max_rl_rows=24", cwd=workdir)
    sft_run = proactive(
        "sft", *common, "--set", f"base_model={tiny_model}", "--set", "epochs=1",
        "--set", "max_samples=16", "--set", "learning_rate=1e-3", *parallel, cwd=workdir,
    )  # fmt: skip
    paths = RunPaths(run)
    assert is_stable(paths.sft_epoch(1))
    base, sft = weights(tiny_model), weights(paths.sft_epoch(1))
    assert set(base) <= set(sft)  # whole tensors, not ZeRO-3 placeholders
    assert all(base[k].shape == sft[k].shape for k in base)
    assert any(not torch.equal(base[k], sft[k]) for k in base)
    assert f"training: {strategy} x{processes} (DeepSpeed)" in sft_run.stdout + sft_run.stderr

    # ZeRO-3 one step off, each policy gathered by every rank and written by rank 0 in a
    # background thread while the next step trains (what `auto` does on GPUs)
    background = ["--set", "max_staleness=1", "--set", "publish_in_background=always"]
    out_g = grpo_beside_rollout(
        workdir, common, "--set", "max_steps=2", "--set", "prompts_per_step=4", "--set", "n=4",
        # the random tiny model earns the same reward on every sample (zero advantages): the
        # entropy bonus gives the update a gradient anyway
        "--set", "learning_rate=1e-3", "--set", "loss.entropy_coef=0.1", *parallel,
        *(background if strategy == "zero3" else []),
    )  # fmt: skip
    assert f"training: {strategy} x{processes}" in out_g
    assert ("written in a background thread" in out_g) == (strategy == "zero3")
    for version in (0, 1, 2):
        verify(paths.policy(version))
    first, last = weights(paths.policy(0)), weights(paths.policy(2))
    assert any(not torch.equal(first[k], last[k]) for k in first)
    lines = [json.loads(x) for x in (paths.logs("grpo") / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1]
    assert all(x["opt/grad_norm"] > 0 for x in lines)

    # --resume reads the ZeRO optimizer state back (each process its partition); here every
    # step is done, so it loads the state of policy 2 and ends
    again = proactive(
        "grpo", *common, "--set", "max_steps=2", "--set", "prompts_per_step=4", "--set", "n=4",
        *parallel, "--resume", cwd=workdir,
    )  # fmt: skip
    said = again.stdout + again.stderr
    assert "resuming plan" in said and "no optimizer state" not in said
    assert (paths.grpo_state / "deepspeed" / "v2").is_dir()


@pytest.mark.parametrize("strategy", ["ddp", "zero3"])
def test_grpo_lora_over_processes_publishes_adapters(workdir, strategy):
    """LoRA under DDP and ZeRO-3 (the adapter gathered from the partitions for publishing)."""
    from proactive_rl.engine.generation import load_causal_lm
    from proactive_rl.shared.paths import adapter_base

    run = workdir / "checkpoints" / "run"
    common = ["--run-dir", str(run)]
    proactive("prep", "--set", "max_rl_rows=24", cwd=workdir)
    out_g = grpo_beside_rollout(
        workdir, common, "--set", "init_model=builtin:tiny", "--set", "max_steps=2",
        "--set", "prompts_per_step=4", "--set", "n=4", "--set", "learning_rate=1e-2",
        "--set", "loss.entropy_coef=0.1", "--set", "lora.enabled=true", "--set", "lora.rank=4",
        "--set", f"strategy={strategy}", "--set", "num_processes=2",
    )  # fmt: skip
    assert f"training: {strategy} x2" in out_g and "(LoRA r=4)" in out_g
    paths = RunPaths(run)
    for version in (0, 1, 2):
        verify(paths.policy(version))
        assert (paths.policy(version) / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(adapter_base(paths.policy(2)), dtype=torch.float32)
    last = load_causal_lm(paths.policy(2), torch.float32)
    ids = torch.tensor([[5, 9, 14, 3, 7]])
    with torch.no_grad():
        assert (last(input_ids=ids).logits - base(input_ids=ids).logits).abs().max() > 1e-4
