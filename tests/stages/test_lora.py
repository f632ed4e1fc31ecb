"""LoRA mode (grpo `lora.enabled`): the trainer updates an adapter on the frozen starting model
and publishes each policy version as a small adapter folder that names its base relative to
itself; rollout and eval load it (merged into the base); the KL reference is the policy with its
adapter off; --resume continues the adapter, and mixing modes in one run is a clear error."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from proactive_rl.engine.generation import load_causal_lm
from proactive_rl.shared.paths import RunPaths, adapter_base, numbered_children
from proactive_rl.shared.publish import verify
from tests.conftest import REPO, proactive
from tests.stages.test_rl_loop import run_rl

# builtin:tiny is materialised inside the run (base_models/), as SFT epochs are: the adapters
# then name their base inside the run directory
LORA = (
    "--set", "init_model=builtin:tiny", "--set", "lora.enabled=true", "--set", "lora.rank=4",
    "--set", "loss.kl_coef=0.05",
)  # fmt: skip


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model):
    workdir = tmp_path_factory.mktemp("lora")
    shutil.copytree(REPO / "data" / "sample", workdir / "data" / "sample")
    return workdir, run_rl(workdir, tiny_model, max_staleness=0, grpo_args=LORA)


def logits(model, ids=((5, 9, 14, 3, 7),)):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids)).logits


def test_policies_are_small_adapters_on_the_starting_model(lora_run):
    _, paths = lora_run
    policies = numbered_children(paths.policies)
    assert [v for v, _ in policies] == [0, 1, 2, 3]
    base = adapter_base(paths.policy(0))
    assert base is not None and base.is_relative_to(paths.base_models.resolve())
    base_bytes = sum(f.stat().st_size for f in base.glob("*.safetensors"))
    for _, folder in policies:
        verify(folder)
        assert (folder / "adapter_model.safetensors").is_file()
        assert not (folder / "model.safetensors").exists()
        assert (folder / "adapter_model.safetensors").stat().st_size < base_bytes / 5
        named = json.loads((folder / "adapter_config.json").read_text())
        assert not named["base_model_name_or_path"].startswith("/")  # relative: the run can move
        assert adapter_base(folder) == base
        assert (folder / "tokenizer_config.json").is_file()  # rollout reads the tokenizer here
    log = (paths.root / "grpo.log").read_text()
    assert "(LoRA r=4)" in log


def test_the_adapter_moves_the_policy_and_version_0_is_the_base(lora_run):
    _, paths = lora_run
    base = AutoModelForCausalLM.from_pretrained(adapter_base(paths.policy(0)), dtype=torch.float32)
    first = load_causal_lm(paths.policy(0), torch.float32)
    last = load_causal_lm(numbered_children(paths.policies)[-1][1], torch.float32)
    torch.testing.assert_close(logits(first), logits(base))  # LoRA starts as the identity
    assert (logits(last) - logits(base)).abs().max() > 1e-3
    lines = [json.loads(x) for x in (paths.logs("grpo") / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1, 2]
    assert all(m["opt/grad_norm"] > 0 for m in lines)
    assert lines[-1]["loss/kl"] > 0  # the reference (adapter off) differs from the policy


def test_the_run_moves_with_its_adapters(lora_run, tmp_path):
    """Adapters name their base relative to themselves: a copied run directory loads its
    policies against its own copy of the base."""
    _, paths = lora_run
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(paths.root, moved)
    policy = moved / paths.policy(2).relative_to(paths.root)
    assert adapter_base(policy).is_relative_to(moved)
    torch.testing.assert_close(
        logits(load_causal_lm(policy, torch.float32)),
        logits(load_causal_lm(paths.policy(2), torch.float32)),
    )


def test_resume_continues_adapters_and_refuses_a_whole_model(lora_run):
    workdir, paths = lora_run
    common = ["--run-dir", str(paths.root), "--set", "init_model=builtin:tiny"]
    full = proactive("grpo", *common, "--resume", cwd=workdir, check=False)
    assert full.returncode != 0
    assert "is a LoRA adapter" in full.stdout + full.stderr
    assert "Traceback" not in full.stdout + full.stderr
    # in LoRA mode it continues from the newest adapter (here: every step is done already)
    again = proactive("grpo", *common, *LORA, "--resume", cwd=workdir)
    assert "resuming plan" in again.stdout + again.stderr
    assert "(LoRA r=4)" in again.stdout + again.stderr


def test_the_reference_is_the_policy_with_its_adapter_off(tiny_model):
    from proactive_rl.stages.grpo.config import GrpoConfig
    from proactive_rl.stages.grpo.policy import AdapterOff, build_policy, reference_model

    config = GrpoConfig(lora={"enabled": True, "rank": 4}, loss={"kl_coef": 0.1})
    policy = build_policy(config, tiny_model, tiny_model, torch.float32)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)
    ref = reference_model(config, policy, tiny_model, torch.float32, torch.device("cpu"))
    assert isinstance(ref, AdapterOff)
    assert list(ref.parameters()) == []  # no second copy of the weights
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    torch.testing.assert_close(logits(ref), logits(base))
    assert (logits(policy) - logits(base)).abs().max() > 1e-3
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_whole_model_runs_refuse_to_resume_as_lora(tmp_path, tiny_model):
    from proactive_rl.shared.errors import UserError
    from proactive_rl.stages.grpo.config import GrpoConfig
    from proactive_rl.stages.grpo.policy import build_policy

    config = GrpoConfig(lora={"enabled": True})
    other = tmp_path / "policy_3"
    shutil.copytree(tiny_model, other)
    with pytest.raises(UserError, match="is a whole model"):
        build_policy(config, other, tiny_model, torch.float32)


def test_eval_reads_adapter_policies(lora_run):
    workdir, paths = lora_run
    proactive(
        "eval", "--run-dir", str(paths.root), "--set", "n=2", "--set", "max_questions=3",
        "--set", "sampling.max_new_tokens=8", "--set", "checkpoints=base,final",
        "--set", "plots=false", cwd=workdir,
    )  # fmt: skip
    report = json.loads(RunPaths(paths.root).eval_report("report").read_text())
    assert [c["spec"] for c in report["checkpoints"]] == ["base", "final"]


def test_lora_with_gradient_checkpointing_trains_the_adapter(tiny_model):
    """Checkpointed layers over a frozen base still backpropagate into the adapter."""
    from proactive_rl.stages.grpo.config import GrpoConfig
    from proactive_rl.stages.grpo.policy import build_policy

    config = GrpoConfig(lora={"enabled": True, "rank": 4}, gradient_checkpointing=True)
    policy = build_policy(config, tiny_model, tiny_model, torch.float32)
    policy.gradient_checkpointing_enable()
    policy.train()
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.01)  # B = 0 at the start would zero A's gradient
    policy(input_ids=torch.tensor([[5, 9, 14, 3, 7]])).logits.logsumexp(-1).mean().backward()
    grads = {n: p.grad for n, p in policy.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_an_adapter_is_not_a_starting_model(lora_run):
    workdir, paths = lora_run
    proc = proactive(
        "grpo", "--run-dir", str(workdir / "checkpoints" / "other"),
        "--set", f"init_model={paths.policy(1)}", cwd=workdir, check=False,
    )  # fmt: skip
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "is a LoRA adapter, not a whole model" in said
    assert "Traceback" not in said
