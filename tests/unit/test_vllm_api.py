"""The vLLM backend against the vLLM the CUDA lock pins, without a GPU: every keyword the backend
passes is one vLLM accepts, and every engine/worker method it calls exists with the arguments
it uses. Runs wherever vLLM is installed (`.venv-cuda`, the CUDA images; `make gpu-check`
installs it) and skips in the CPU venv. Sampling itself needs a GPU: tests/gpu/test_vllm_backend.py.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is installed in the CUDA venv and images only")


@pytest.fixture
def backend():
    from proactive_rl.rollout.backend import VllmBackend
    from proactive_rl.rollout.config import VllmConfig

    return VllmBackend("bf16", VllmConfig(tensor_parallel_size=2), 2048)


def test_engine_args_are_vllm_engine_args(backend, tmp_path):
    from vllm.engine.arg_utils import EngineArgs

    args = backend.engine_args(tmp_path)
    fields = {f.name for f in dataclasses.fields(EngineArgs)}
    assert set(args) <= fields, set(args) - fields
    assert args["logprobs_mode"] in vllm.config.model.LogprobsMode.__args__
    assert args["tensor_parallel_size"] == 2 and args["max_model_len"] == 2048


def test_lora_engine_args_and_requests_are_vllm_ones(backend, tmp_path):
    from vllm.engine.arg_utils import EngineArgs
    from vllm.lora.request import LoRARequest

    args = backend.engine_args(tmp_path, lora_rank=12)
    assert set(args) <= {f.name for f in dataclasses.fields(EngineArgs)}
    assert args["max_lora_rank"] in vllm.config.lora.MaxLoRARanks.__args__
    request = LoRARequest("policy-3", 3, str(tmp_path))
    assert (request.lora_name, request.lora_int_id, request.lora_path) == (
        "policy-3",
        3,
        str(tmp_path),
    )
    assert "lora_request" in inspect.signature(vllm.LLM.generate).parameters


def test_request_args_make_valid_sampling_params():
    from vllm import SamplingParams

    from proactive_rl.rollout.backend import VllmBackend
    from proactive_rl.rollout.config import SamplingConfig

    for top_k in (0, 20):
        sampling = SamplingConfig(temperature=0.7, top_p=0.9, top_k=top_k, max_new_tokens=64)
        params = [SamplingParams(**a) for a in VllmBackend.request_args(3, 4, sampling, seed=5)]
        assert [p.n for p in params] == [4, 4, 4]
        assert params[0].temperature == 0.7 and params[0].top_p == 0.9
        assert params[0].top_k == top_k and params[0].max_tokens == 64
        assert params[0].logprobs == 0 and params[0].detokenize is False


def test_the_engine_methods_the_backend_calls_exist():
    from vllm import LLM
    from vllm.v1.engine.core_client import EngineCoreClient
    from vllm.v1.worker.gpu_worker import Worker

    rpc = inspect.signature(LLM.collective_rpc).parameters
    assert {"method", "kwargs"} <= set(rpc)
    assert callable(LLM.reset_prefix_cache)
    assert callable(Worker.reload_weights)  # forwards its arguments to the model runner's
    assert callable(EngineCoreClient.shutdown)
    assert "use_tqdm" in inspect.signature(LLM.generate).parameters


def test_the_model_runner_reloads_in_place_from_a_path():
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    params = inspect.signature(GPUModelRunner.reload_weights).parameters
    assert "weights_path" in params


def test_published_adapters_pass_vllms_own_checks(tiny_model, tmp_path):
    """A LoRA policy as grpo publishes it is an adapter vLLM accepts (its PEFT checks: rank,
    no bias, no DoRA, no saved modules), with the engine's max_lora_rank."""
    import torch
    from vllm.config.lora import LoRAConfig
    from vllm.lora.peft_helper import PEFTHelper

    from proactive_rl.grpo.config import GrpoConfig
    from proactive_rl.grpo.policy import build_policy, save_policy
    from proactive_rl.rollout.backend import VllmBackend, lora_rank
    from proactive_rl.rollout.config import VllmConfig

    config = GrpoConfig(lora={"enabled": True, "rank": 12})
    policy = build_policy(config, tiny_model, tiny_model, torch.float32)
    folder = tmp_path / "policies" / "step_000001"
    save_policy(policy, folder, folder, tiny_model)
    engine = VllmBackend("bf16", VllmConfig(), 512).engine_args(tiny_model, lora_rank(folder))
    helper = PEFTHelper.from_local_dir(str(folder), max_position_embeddings=512)
    helper.validate_legal(LoRAConfig(max_lora_rank=engine["max_lora_rank"]))
    assert helper.r == 12 and set(helper.target_modules) == set(config.lora.target_modules)
