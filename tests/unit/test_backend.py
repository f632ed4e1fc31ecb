"""Choosing engines: backend 'auto' falls back to transformers where vLLM cannot run, and
asking for vLLM, or for a DeepSpeed strategy, where it cannot run is a clear error instead of an
import or compiler traceback."""

from __future__ import annotations

import importlib.util

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


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_vllm_usable_needs_cuda():
    assert not vllm_usable()


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_zero_strategies_without_deepspeed_are_a_user_error(strategy, monkeypatch):
    from proactive_rl.parallel import relaunch

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name)
    )
    with pytest.raises(UserError, match=f"strategy={strategy} needs DeepSpeed, a dependency"):
        relaunch(strategy, None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_zero_on_a_cpu_without_a_compiler_is_a_user_error(monkeypatch):
    from proactive_rl.parallel import relaunch

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UserError, match="needs a C\\+\\+ compiler"):
        relaunch("zero2", None)
