"""vLLM on a GPU at a real model's layer shapes, with what only a GPU has: CUDA graphs
(enforce_eager=False) across an in-place policy reload. Marked `gpu` (skipped without CUDA).
Everything else about the vLLM backend runs on the CPU build too: tests/vllm (`make test-vllm`),
which `make gpu-check` also runs on the GPU."""

from __future__ import annotations

import pytest

from proactive_rl.engine.generation import SamplingConfig, VllmBackend, VllmConfig
from tests.vllm.test_engine import chat_prompts, differences, perturbed_copy, trainer_logprobs

pytestmark = [pytest.mark.gpu, pytest.mark.vllm]


@pytest.fixture(scope="module")
def small_qwen3(tmp_path_factory):
    from proactive_rl.engine.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("qwen3") / "model", shape="qwen3-0.6b")


def test_cuda_graphs_sample_the_reloaded_policy(small_qwen3, tmp_path):
    backend = VllmBackend("bf16", VllmConfig(gpu_memory_utilization=0.3), 512)
    backend.load(small_qwen3)
    engine = backend.llm
    prompts = chat_prompts(small_qwen3)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=24)
    try:
        groups = backend.generate(prompts, 4, sampling, seed=0)
        assert differences(groups, trainer_logprobs(small_qwen3, prompts, groups))[1] < 0.05
        new = perturbed_copy(small_qwen3, tmp_path / "policy_1", scale=0.02)
        backend.load(new)
        assert backend.llm is engine  # no restart: the captured graphs read the new weights
        groups = backend.generate(prompts, 4, sampling, seed=1)
        on_new = differences(groups, trainer_logprobs(new, prompts, groups))[1]
        on_old = differences(groups, trainer_logprobs(small_qwen3, prompts, groups))[1]
        assert on_new < 0.05 and on_new < on_old / 2
    finally:
        backend.close()
