"""Choosing the generation backend: 'auto' falls back to transformers where vLLM cannot run,
and asking for vLLM there is a clear error instead of an import traceback."""

from __future__ import annotations

import pytest
import torch

from proactive_rl.rollout.backend import TransformersBackend, make_backend, vllm_usable
from proactive_rl.rollout.config import VllmConfig
from proactive_rl.shared.errors import UserError

no_vllm = pytest.mark.skipif(vllm_usable(), reason="vLLM can run here (see tests/gpu)")


@no_vllm
def test_auto_is_transformers_without_vllm():
    assert isinstance(make_backend("auto", "fp32", VllmConfig(), 64), TransformersBackend)
    assert isinstance(make_backend("transformers", "fp32", VllmConfig(), 64), TransformersBackend)


@no_vllm
def test_vllm_without_a_gpu_is_a_user_error():
    with pytest.raises(UserError, match="backend=vllm needs vLLM and a CUDA GPU"):
        make_backend("vllm", "auto", VllmConfig(), 64)


def test_vllm_usable_needs_cuda():
    if not torch.cuda.is_available():
        assert not vllm_usable()
