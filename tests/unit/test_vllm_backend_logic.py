"""VllmBackend's own logic on the CPU: when it reuses the engine (a new policy version of the same
model: weights reloaded in place, prefix cache reset), when it restarts it (another
architecture), how it shuts it down, and how vLLM's outputs become Samples.

vLLM cannot run without a GPU, so here a stand-in `vllm` module records what the backend asks of
it. That the calls match the real vLLM's API is checked in tests/unit/test_vllm_api.py (where
vLLM is installed); real sampling and reloading in tests/gpu/test_vllm_backend.py (`gpu`).
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field

import pytest

from proactive_rl.rollout.backend import VllmBackend, model_shape
from proactive_rl.rollout.config import SamplingConfig, VllmConfig


@dataclass
class Logprob:
    logprob: float


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]]
    finish_reason: str


@dataclass
class StandInLLM:
    """Records calls; `generate` answers each request with n completions."""

    kwargs: dict
    calls: list = field(default_factory=list)
    shut_down: bool = False

    def __post_init__(self):
        self.llm_engine = types.SimpleNamespace(
            engine_core=types.SimpleNamespace(shutdown=self._shutdown)
        )

    def _shutdown(self):
        self.shut_down = True

    def collective_rpc(self, method, kwargs=None):
        self.calls.append(("rpc", method, kwargs))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))

    def generate(self, prompts, params, use_tqdm, lora_request=None):
        self.calls.append(("generate", prompts, params, lora_request))
        answers = []
        for prompt, p in zip(prompts, params, strict=True):
            first = prompt["prompt_token_ids"][0]
            outs = []
            for j in range(p["n"]):
                tokens = [first, first + j + 1]  # the 2nd step also lists a runner-up token
                steps = [{tokens[0]: Logprob(-0.5)}, {tokens[1]: Logprob(-1.5), 99: Logprob(-3)}]
                outs.append(Completion(tokens, steps, "length" if j == 0 else "stop"))
            answers.append(types.SimpleNamespace(outputs=outs))
        return answers


@pytest.fixture
def engines(monkeypatch):
    made: list[StandInLLM] = []

    def llm(**kwargs):
        made.append(StandInLLM(kwargs))
        return made[-1]

    fake = types.ModuleType("vllm")
    fake.LLM = llm
    fake.SamplingParams = dict  # the backend's keyword arguments, as given
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, id_, path: (name, id_, path)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    return made


def model_folder(path, hidden=64, dtype="bfloat16"):
    path.mkdir(parents=True)
    config = {"architectures": ["Qwen3ForCausalLM"], "hidden_size": hidden, "torch_dtype": dtype}
    (path / "config.json").write_text(json.dumps({**config, "_name_or_path": str(path)}))
    return path


def test_new_versions_reload_in_place_and_another_architecture_restarts(engines, tmp_path):
    backend = VllmBackend("bf16", VllmConfig(gpu_memory_utilization=0.5), 1024)
    backend.load(model_folder(tmp_path / "policy_0"))
    assert len(engines) == 1
    assert engines[0].kwargs["model"] == str(tmp_path / "policy_0")
    assert engines[0].kwargs["gpu_memory_utilization"] == 0.5
    assert engines[0].kwargs["logprobs_mode"] == "processed_logprobs"

    backend.load(model_folder(tmp_path / "policy_1", dtype="float32"))
    assert len(engines) == 1  # same engine
    assert engines[0].calls == [
        ("rpc", "reload_weights", {"weights_path": str(tmp_path / "policy_1")}),
        ("reset_prefix_cache",),
    ]

    backend.load(model_folder(tmp_path / "other", hidden=128))
    assert engines[0].shut_down and len(engines) == 2
    assert engines[1].kwargs["model"] == str(tmp_path / "other")

    backend.close()
    assert engines[1].shut_down and backend.llm is None
    backend.close()  # closing twice is harmless


def test_outputs_become_samples_with_the_sampled_tokens_logprobs(engines, tmp_path):
    backend = VllmBackend("bf16", VllmConfig(), 1024)
    backend.load(model_folder(tmp_path / "policy_0"))
    sampling = SamplingConfig(temperature=0.8, top_k=0, max_new_tokens=2)
    groups = backend.generate([[10, 11], [20]], 3, sampling, seed=4)
    assert [[s.token_ids for s in g] for g in groups] == [
        [[10, 11], [10, 12], [10, 13]],
        [[20, 21], [20, 22], [20, 23]],
    ]
    assert all(s.logprobs == [-0.5, -1.5] for g in groups for s in g)
    assert [s.finish_reason for s in groups[0]] == ["length", "stop", "stop"]
    _, prompts, params, lora = engines[0].calls[-1]
    assert lora is None
    assert prompts == [{"prompt_token_ids": [10, 11]}, {"prompt_token_ids": [20]}]
    assert params == VllmBackend.request_args(2, 3, sampling, 4)


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


def test_model_shape_ignores_bookkeeping_but_not_sizes(tmp_path):
    a = model_shape(model_folder(tmp_path / "a"))
    assert a == model_shape(model_folder(tmp_path / "b", dtype="float32"))
    assert a != model_shape(model_folder(tmp_path / "c", hidden=32))


def adapter_folder(path, base, rank=4):
    path.mkdir(parents=True)
    config = {"base_model_name_or_path": str(base), "r": rank, "peft_type": "LORA"}
    (path / "adapter_config.json").write_text(json.dumps(config))
    return path


def test_lora_policies_are_new_adapters_on_an_unchanged_engine(engines, tmp_path):
    base = model_folder(tmp_path / "base")
    backend = VllmBackend("bf16", VllmConfig(), 1024)
    backend.load(adapter_folder(tmp_path / "policies" / "step_0", "../../base", rank=12))
    assert len(engines) == 1
    args = engines[0].kwargs
    assert args["model"] == str(base.resolve())  # the engine holds the base weights
    assert args["enable_lora"] is True and args["max_lora_rank"] == 16  # vLLM's next size up
    assert args["max_loras"] == 1
    first = backend.lora
    assert first == ("policy-1", 1, str(tmp_path / "policies" / "step_0"))

    backend.load(adapter_folder(tmp_path / "policies" / "step_1", "../../base", rank=12))
    assert len(engines) == 1 and engines[0].calls == []  # no weight reload, no restart
    assert backend.lora == ("policy-2", 2, str(tmp_path / "policies" / "step_1"))
    backend.generate([[10]], 2, SamplingConfig(), seed=0)
    assert engines[0].calls[-1][3] == backend.lora  # sampled with the newest adapter

    backend.load(base)  # a whole model: another engine (no LoRA), no adapter on requests
    assert len(engines) == 2 and engines[0].shut_down
    assert "enable_lora" not in engines[1].kwargs and backend.lora is None
