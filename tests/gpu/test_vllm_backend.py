"""The vLLM rollout backend on a real GPU (marked `gpu`: skipped where CUDA is absent; vLLM runs
only on a GPU, so this is the one place its code is exercised — `make gpu-check` is the other).

A random Qwen3 with real layer shapes (head_dim 128, as vLLM's attention kernels expect) is built
offline; nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

vllm = pytest.importorskip("vllm", reason="vLLM is installed in the CUDA images only")


@pytest.fixture(scope="module")
def small_qwen3(tmp_path_factory):
    from proactive_rl.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("qwen3") / "model", shape="qwen3-0.6b")


def prompts_of(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        for q in ("What is 2 + 2?", "Who wrote the first novel you know of?")
    ]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def perturbed_copy(src, dst):
    """The same model with every weight moved: a stand-in for the next policy version."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(dst, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def trainer_logprobs(model_dir, prompts, groups, temperature):
    from transformers import AutoModelForCausalLM

    from proactive_rl.grpo.update import logprobs_of

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda()
    rows = [
        {"prompt_ids": p, "response_ids": s.token_ids}
        for p, g in zip(prompts, groups, strict=True)
        for s in g
    ]
    out = logprobs_of(model, rows, temperature, 8, torch.device("cuda"))
    del model
    torch.cuda.empty_cache()
    return rows, out


def mean_abs_diff(groups, trainer):
    flat = [s for g in groups for s in g]
    diffs = torch.cat(
        [
            (torch.tensor(s.logprobs) - t.float().cpu()).abs()
            for s, t in zip(flat, trainer, strict=True)
        ]
    )
    return float(diffs.mean())


def test_vllm_samples_groups_and_reloads_policies_in_place(small_qwen3, tmp_path):
    from proactive_rl.rollout.backend import VllmBackend, make_backend
    from proactive_rl.rollout.config import SamplingConfig, VllmConfig

    settings = VllmConfig(gpu_memory_utilization=0.3, enforce_eager=True)
    backend = make_backend("auto", "bf16", settings, 512)
    assert isinstance(backend, VllmBackend)
    backend.load(small_qwen3)
    engine = backend.llm
    prompts = prompts_of(small_qwen3)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=24)
    groups = backend.generate(prompts, 4, sampling, seed=0)
    assert [len(g) for g in groups] == [4, 4]
    for sample in (s for g in groups for s in g):
        assert 1 <= len(sample.token_ids) <= 24
        assert len(sample.logprobs) == len(sample.token_ids)
        assert all(lp <= 0.0 for lp in sample.logprobs)
        assert sample.finish_reason in ("stop", "length")
        if sample.finish_reason == "length":
            assert len(sample.token_ids) == 24
    # the sampler's logprobs are the trainer's (bf16 on both sides: loose tolerance)
    _, trainer = trainer_logprobs(small_qwen3, prompts, groups, 1.0)
    assert mean_abs_diff(groups, trainer) < 0.05

    # a new policy version: loaded into the same engine, and sampling follows the new weights
    new = perturbed_copy(small_qwen3, tmp_path / "policy_1")
    backend.load(new)
    assert backend.llm is engine  # no restart
    groups = backend.generate(prompts, 4, sampling, seed=1)
    _, trainer_new = trainer_logprobs(new, prompts, groups, 1.0)
    _, trainer_old = trainer_logprobs(small_qwen3, prompts, groups, 1.0)
    assert mean_abs_diff(groups, trainer_new) < 0.05
    assert mean_abs_diff(groups, trainer_new) < mean_abs_diff(groups, trainer_old) / 2


def test_vllm_seeds_make_sampling_reproducible(small_qwen3):
    from proactive_rl.rollout.backend import VllmBackend
    from proactive_rl.rollout.config import SamplingConfig, VllmConfig

    backend = VllmBackend("bf16", VllmConfig(gpu_memory_utilization=0.3, enforce_eager=True), 512)
    backend.load(small_qwen3)
    prompts = prompts_of(small_qwen3)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=16)
    first = backend.generate(prompts, 3, sampling, seed=7)
    again = backend.generate(prompts, 3, sampling, seed=7)
    other = backend.generate(prompts, 3, sampling, seed=8)
    tokens = lambda gs: [s.token_ids for g in gs for s in g]  # noqa: E731
    assert tokens(first) == tokens(again)
    assert tokens(first) != tokens(other)


def test_vllm_samples_lora_policies_as_adapters(small_qwen3, tmp_path):
    """LoRA mode: the engine keeps the base weights and each policy version is a new adapter;
    the sampler's logprobs are those of the adapted model, not the base."""
    from proactive_rl.grpo.config import GrpoConfig
    from proactive_rl.grpo.policy import build_policy, save_policy
    from proactive_rl.rollout.backend import VllmBackend, load_causal_lm
    from proactive_rl.rollout.config import SamplingConfig, VllmConfig

    policy = build_policy(
        GrpoConfig(lora={"enabled": True, "rank": 16}), small_qwen3, small_qwen3, torch.bfloat16
    )
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    folder = tmp_path / "policies" / "step_000001"
    save_policy(policy, folder, folder, small_qwen3)

    def merged_logprobs(prompts, groups):
        from proactive_rl.grpo.update import logprobs_of

        model = load_causal_lm(folder, torch.bfloat16).cuda()
        rows = [
            {"prompt_ids": p, "response_ids": s.token_ids}
            for p, g in zip(prompts, groups, strict=True)
            for s in g
        ]
        out = logprobs_of(model, rows, 1.0, 8, torch.device("cuda"))
        del model
        torch.cuda.empty_cache()
        return out

    backend = VllmBackend("bf16", VllmConfig(gpu_memory_utilization=0.3, enforce_eager=True), 512)
    backend.load(folder)
    assert backend.lora is not None
    prompts = prompts_of(small_qwen3)
    groups = backend.generate(prompts, 4, SamplingConfig(temperature=1.0, max_new_tokens=24), 0)
    _, base = trainer_logprobs(small_qwen3, prompts, groups, 1.0)
    adapted = merged_logprobs(prompts, groups)
    assert mean_abs_diff(groups, adapted) < 0.05
    assert mean_abs_diff(groups, adapted) < mean_abs_diff(groups, base) / 2
    backend.close()
