"""What VllmBackend computes before it calls vLLM: per-request seeds and the shape test that
decides between an in-place reload and a new engine. The engine itself: tests/vllm."""

from __future__ import annotations

import json

from proactive_rl.engine.generation import SamplingConfig, VllmBackend, model_shape


def test_no_two_samples_of_a_batch_share_a_seed():
    sampling = SamplingConfig()
    args = VllmBackend.request_args(64, 16, sampling, seed=0)
    # vLLM gives sample j of a request the seed request_seed + j
    streams = [a["seed"] + j for a in args for j in range(a["n"])]
    assert len(set(streams)) == len(streams)
    assert all(0 <= s < 2**31 + 16 for s in streams)
    assert args == VllmBackend.request_args(64, 16, sampling, seed=0)
    assert [a["seed"] for a in args] != [
        a["seed"] for a in VllmBackend.request_args(64, 16, sampling, 1)
    ]


def model_folder(path, hidden=64, dtype="bfloat16"):
    path.mkdir(parents=True)
    config = {"architectures": ["Qwen3ForCausalLM"], "hidden_size": hidden, "torch_dtype": dtype}
    (path / "config.json").write_text(json.dumps({**config, "_name_or_path": str(path)}))
    return path


def test_model_shape_ignores_bookkeeping_but_not_sizes(tmp_path):
    a = model_shape(model_folder(tmp_path / "a"))
    assert a == model_shape(model_folder(tmp_path / "b", dtype="float32"))
    assert a != model_shape(model_folder(tmp_path / "c", hidden=32))


def test_ignore_eos_reaches_every_request():
    """The engine's own behaviour with it: tests/vllm/test_engine.py (SmolLM2, which ends its
    answers)."""
    for ignore in (False, True):
        args = VllmBackend.request_args(3, 2, SamplingConfig(ignore_eos=ignore), seed=0)
        assert [a["ignore_eos"] for a in args] == [ignore] * 3
