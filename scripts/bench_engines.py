"""The generation engine's figures for `make bench` (scripts/bench.py), each a ratio of two
things measured in the same run on the same model (SmolLM2-135M-Instruct by default):

1. generate: vLLM tokens/s / transformers `generate` tokens/s (same prompts, n, max tokens;
   each engine warmed up first; engine start-up reported apart);
2. handoff: a policy version's publish (as grpo writes it on-policy: into the page cache of
   the version before, which the engine has loaded) + its in-place reload into the running
   vLLM engine / a plain copy of the same bytes (read, write, fsync) into new files, and / the
   same copy written into the pages of the copy before (as the publish is): the medians of
   HANDOFFS versions, as the pipeline publishes one every step.

`start_rl` starts grpo beside a vLLM rollout worker (make bench-peers' run of ours): the
trainer and the engine each get one core of their own (the GPU layout has separate GPUs for
them), so step times measure the pipelining, not two jobs fighting over the same cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = (
    "What is the capital of France?",
    "Who wrote Hamlet?",
    "What is 7 times 8?",
    "Name the largest planet of the solar system.",
    "In which year did the Second World War end?",
    "What is the chemical symbol of gold?",
    "Who painted the Mona Lisa?",
    "What is the boiling point of water in Celsius?",
)


def chat_prompts(
    model_dir: Path, count: int, questions: tuple[str, ...] | list[str] = QUESTIONS
) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = [[{"role": "user", "content": q}] for q in questions[:count]]
    texts = [
        tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
        for m in messages
    ]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def timed_generate(backend, prompts, n: int, tokens: int) -> tuple[float, int]:
    """(seconds, generated tokens) of one batch, after a short warm-up batch."""
    from proactive_rl.engine.generation import SamplingConfig

    backend.generate(prompts[:1], 1, SamplingConfig(max_new_tokens=4), seed=0)
    start = time.perf_counter()
    groups = backend.generate(prompts, n, SamplingConfig(max_new_tokens=tokens), seed=1)
    seconds = time.perf_counter() - start
    return seconds, sum(len(s.token_ids) for group in groups for s in group)


def copy_bytes(src: Path, dst: Path, reuse: Path | None = None) -> float:
    """Seconds to copy a folder's files and fsync them: the floor of any handoff. `reuse`: a
    copy before, whose cached pages are dropped first (inside the time), so that this one's
    writes reuse them as grpo's publish does (engine/host_memory.py)."""
    from proactive_rl.engine.host_memory import drop_cached_pages

    dst.mkdir(parents=True)
    start = time.perf_counter()
    if reuse is not None:
        drop_cached_pages(reuse)
    for path in sorted(src.iterdir()):
        if path.is_file():
            with open(path, "rb") as fin, open(dst / path.name, "wb") as fout:
                shutil.copyfileobj(fin, fout, 16 << 20)
                fout.flush()
                os.fsync(fout.fileno())
    return time.perf_counter() - start


# a policy is published every step: the median of a few, not the process's first (nor the
# second: the first has no pages of a version before to write into)
HANDOFFS = 5


def handoff(engine, model_dir: Path, work: Path) -> dict[str, float]:
    """Policy versions published as grpo publishes them, each then reloaded in place into the
    running `engine`, against raw copies of the same bytes: the median of HANDOFFS of each
    (the first publish of a process also pays its imports and first-touch pages, which the
    pipeline pays once, not every step)."""
    import statistics

    import torch
    from transformers import AutoTokenizer

    from proactive_rl.engine.generation import load_causal_lm
    from proactive_rl.engine.precision import pick_dtype
    from proactive_rl.shared.paths import RunPaths
    from proactive_rl.stages.grpo.publishing import publish_policy

    paths = RunPaths(work / "run")
    model = load_causal_lm(model_dir, pick_dtype("auto"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    publish, reload, copy, reused = [], [], [], []
    for version in range(1, HANDOFFS + 1):
        with torch.no_grad():
            next(model.parameters()).add_(1e-3)
        start = time.perf_counter()
        # grpo on-policy (max_staleness 0): the version before is spent
        publish_policy(
            model, tokenizer, paths, version, {"bench": True}, model_dir, spent=version - 1
        )
        publish.append(time.perf_counter() - start)
        start = time.perf_counter()
        engine.load(paths.policy(version))
        reload.append(time.perf_counter() - start)
        copy.append(copy_bytes(paths.policy(version), work / f"raw_copy_{version}"))
        before = work / f"reused_copy_{version - 1}"
        reused.append(copy_bytes(paths.policy(version), work / f"reused_copy_{version}",
                                 before if version > 1 else None))  # fmt: skip
    size = sum(p.stat().st_size for p in paths.policy(1).iterdir() if p.is_file())
    publish_s, reload_s, copy_s, reused_s = map(statistics.median, (publish, reload, copy, reused))
    return {
        "handoff/policy_mb": round(size / 2**20, 1),
        "handoff/publish_s": round(publish_s, 2),
        "handoff/first_publish_s": round(publish[0], 2),
        "handoff/reload_s": round(reload_s, 2),
        "handoff/raw_copy_s": round(copy_s, 2),
        "handoff/reused_copy_s": round(reused_s, 2),
        "handoff/ratio_over_raw_copy": round((publish_s + reload_s) / copy_s, 2),
        "handoff/ratio_over_reused_copy": round((publish_s + reload_s) / reused_s, 2),
    }


def bench_generate_and_handoff(model_dir: Path, work: Path, prompts: int, n: int, tokens: int):
    from proactive_rl.engine.generation import TransformersBackend, VllmBackend, VllmConfig

    ids = chat_prompts(model_dir, prompts)
    hf = TransformersBackend("auto")
    hf.load(model_dir)
    hf_s, hf_tokens = timed_generate(hf, ids, n, tokens)
    hf.close()

    engine = VllmBackend("auto", VllmConfig(), 1024)
    start = time.perf_counter()
    engine.load(model_dir)
    start_s = time.perf_counter() - start
    vllm_s, vllm_tokens = timed_generate(engine, ids, n, tokens)
    figures = handoff(engine, model_dir, work)
    engine.close()
    return {
        "generate/prompts_x_n": f"{prompts}x{n}",
        "generate/max_new_tokens": tokens,
        "generate/transformers_tokens_per_s": round(hf_tokens / hf_s, 1),
        "generate/vllm_tokens_per_s": round(vllm_tokens / vllm_s, 1),
        "generate/vllm_engine_start_s": round(start_s, 1),
        "generate/ratio_vllm_over_transformers": round(
            (vllm_tokens / vllm_s) / (hf_tokens / hf_s), 2
        ),
        **figures,
    }


def one_core(core: int):
    return lambda: os.sched_setaffinity(0, {core})


def prepared_data(work: Path) -> Path:
    """The bundled sample questions, prepped once into `work`/data (prep's own output)."""
    data = work / "data"
    if not data.exists():
        shutil.copytree(REPO / "data" / "sample", data / "sample")
        prep = [sys.executable, "-m", "proactive_rl.stages.cli", "prep", "--data-dir", str(data)]
        subprocess.run(prep, check=True, capture_output=True)
    return data


def start_rl(
    model_dir: Path,
    data: Path,
    run: Path,
    grpo_args: list[str],
    rollout_args: list[str],
    pinned: bool = True,
) -> tuple[subprocess.Popen, subprocess.Popen]:
    """grpo beside a vLLM rollout worker, started; the caller waits. Pinned: grpo on core 1 and
    the rollout on core 0 (generation and update at once, each on its own core); else both see
    every core (on-policy they take turns)."""
    common = ["--data-dir", str(data), "--run-dir", str(run)]
    cli = [sys.executable, "-m", "proactive_rl.stages.cli"]
    cores = pinned and len(os.sched_getaffinity(0)) >= 2
    grpo = subprocess.Popen(
        [*cli, "grpo", *common, "--set", f"init_model={model_dir}", *grpo_args],
        env={**os.environ, "OMP_NUM_THREADS": "1"} if cores else None,
        preexec_fn=one_core(1) if cores else None,
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    rollout = subprocess.Popen(
        [*cli, "rollout", *common, "--set", "backend=vllm", *rollout_args],
        preexec_fn=one_core(0) if cores else None,
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return grpo, rollout
