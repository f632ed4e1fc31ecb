"""Choosing engines: backend 'auto' picks the faster engine for the machine, and asking for
vLLM, or for a DeepSpeed strategy, where it cannot run is a clear error instead of an import or
compiler traceback."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from proactive_rl.engine.generation import (
    TransformersBackend,
    VllmBackend,
    VllmConfig,
    make_backend,
)
from proactive_rl.shared.errors import UserError


def test_auto_is_vllm_where_it_is_installed_else_transformers(monkeypatch):
    """vLLM measured the faster on a CPU too (docs/benchmarks.md), so auto takes it wherever it
    is installed (both flavours' locks have it)."""
    assert isinstance(make_backend("auto", "fp32", VllmConfig(), 64), VllmBackend)
    assert isinstance(make_backend("transformers", "fp32", VllmConfig(), 64), TransformersBackend)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    assert isinstance(make_backend("auto", "fp32", VllmConfig(), 64), TransformersBackend)


def test_vllm_where_it_is_installed_and_a_user_error_where_not(monkeypatch):
    assert isinstance(make_backend("vllm", "fp32", VllmConfig(), 64), VllmBackend)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    with pytest.raises(UserError, match="backend=vllm needs vLLM, which is not installed here"):
        make_backend("vllm", "auto", VllmConfig(), 64)


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_zero_strategies_without_deepspeed_are_a_user_error(strategy, monkeypatch):
    from proactive_rl.engine.parallel import relaunch

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name)
    )
    with pytest.raises(UserError, match=f"strategy={strategy} needs DeepSpeed, a dependency"):
        relaunch(strategy, None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_zero_on_a_cpu_without_a_compiler_is_a_user_error(monkeypatch):
    from proactive_rl.engine.parallel import relaunch

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UserError, match="needs a C\\+\\+ compiler"):
        relaunch("zero2", None)


def test_transformers_ignore_eos_samples_on_past_the_end_token(tiny_model, tmp_path):
    """veRL's rollout.ignore_eos, as vLLM reads it: the end token is sampled like any other but
    ends nothing. The control is a copy of the tiny model whose end token is the one its first
    sample starts with (seeded: the same draws), so without the setting that sample ends there."""
    import json
    import shutil

    from proactive_rl.engine.generation import SamplingConfig

    on = SamplingConfig(max_new_tokens=16, ignore_eos=True)
    backend = TransformersBackend("fp32")
    backend.load(tiny_model)
    first = backend.generate([[1, 2, 3]], 4, on, seed=0)[0]
    end_token = first[0].token_ids[0]

    model = shutil.copytree(tiny_model, tmp_path / "model")
    config = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**config, "eos_token_id": end_token}))
    backend.load(model)
    stopped = backend.generate([[1, 2, 3]], 4, SamplingConfig(max_new_tokens=16), seed=0)[0]
    assert stopped[0].token_ids == [end_token] and stopped[0].finish_reason == "stop"
    ignored = backend.generate([[1, 2, 3]], 4, on, seed=0)[0]
    assert [s.token_ids for s in ignored] == [s.token_ids for s in first]
    assert all(len(s.token_ids) == 16 and s.finish_reason == "length" for s in ignored)
    assert all(len(s.logprobs) == 16 for s in ignored)
