"""make gpu-check: the GPU path end to end on this machine, without Docker and without downloads.

A random-initialised Qwen3 of real architecture (layer shapes of Qwen3-0.6B by default; the
tiny tokenizer, so nothing is fetched) goes through the real stages: prep on the bundled sample
data, a few SFT steps, then GRPO steps with the rollout worker beside it (vLLM when it is
installed, else transformers). The outputs are checked and the figures printed and written to
<workdir>/gpu_check.json: rollout tokens/s, update tokens/s and MFU, the seconds to publish a
policy and to load it into the rollout engine.

Usage: python scripts/gpu_check.py [--shape qwen3-0.6b|qwen3-1.7b|tiny] [--steps 3] [--lora]
       (--allow-cpu runs the same checks on a CPU with the tiny shape: how CI keeps this script
       working on machines without a GPU)
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
# Dense bf16 peak FLOP/s per GPU (no sparsity), by a substring of torch's device name.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


def proactive(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "proactive_rl.stages.cli", *args], cwd=cwd)


def finish(proc: subprocess.Popen, what: str) -> None:
    if proc.wait() != 0:
        raise click.ClickException(f"{what} exited {proc.returncode} (its log is above)")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("checkpoints/gpu-check"))
@click.option("--shape", default=None, help="Model shape (default: qwen3-0.6b, tiny on CPU).")
@click.option("--steps", default=3, show_default=True, help="GRPO steps.")
@click.option("--prompts", default=16, show_default=True, help="Prompts per GRPO step.")
@click.option("--n", default=8, show_default=True, help="Responses per prompt.")
@click.option("--max-new-tokens", default=256, show_default=True)
@click.option("--lora", is_flag=True, help="GRPO in LoRA mode (adapters as policy versions).")
@click.option("--allow-cpu", is_flag=True, help="Run without a GPU (tiny shape, CI).")
def main(workdir, shape, steps, prompts, n, max_new_tokens, lora, allow_cpu) -> None:
    import torch

    from proactive_rl.engine.generation import resolve_backend
    from proactive_rl.engine.models import SHAPES, build_tiny_model
    from proactive_rl.shared.paths import RunPaths

    gpu = torch.cuda.is_available()
    if not gpu and not allow_cpu:
        raise click.ClickException("no CUDA GPU visible (torch.cuda.is_available() is False)")
    shape = shape or ("qwen3-0.6b" if gpu else "tiny")
    if shape not in SHAPES:
        raise click.ClickException(f"--shape must be one of {', '.join(SHAPES)}")
    device = torch.cuda.get_device_name(0) if gpu else "cpu"
    backend = resolve_backend("auto")
    click.echo(
        f"gpu-check: {device} x{torch.cuda.device_count() if gpu else 0}, "
        f"torch {torch.__version__}, model {shape}, rollout backend {backend}"
        + (", LoRA" if lora else "")
    )

    shutil.rmtree(workdir, ignore_errors=True)
    data = workdir / "data"
    shutil.copytree(REPO / "data" / "sample", data / "sample")
    run = workdir / "run"
    t0 = time.perf_counter()
    base = build_tiny_model(workdir / "base", shape=shape)
    build_s = time.perf_counter() - t0

    precision = "bf16" if gpu else "fp32"
    common = ["--data-dir", str(data), "--run-dir", str(run)]
    finish(proactive("prep", "--data-dir", str(data), cwd=REPO), "prep")
    t0 = time.perf_counter()
    finish(
        proactive(
            "sft",
            *common,
            "--set",
            f"base_model={base}",
            "--set",
            "epochs=1",
            "--set",
            "max_samples=32",
            "--set",
            f"precision={precision}",
            "--set",
            f"gradient_checkpointing={str(gpu).lower()}",
            cwd=REPO,
        ),
        "sft",
    )
    sft_s = time.perf_counter() - t0

    tokens = 16 if not gpu else max_new_tokens
    grpo = proactive(
        "grpo",
        *common,
        "--set",
        f"n={n}",
        "--set",
        f"prompts_per_step={prompts}",
        "--set",
        f"mini_batch_prompts={prompts}",
        "--set",
        f"max_steps={steps}",
        "--set",
        f"precision={precision}",
        "--set",
        "loss.is_correction=token",
        "--set",
        f"gradient_checkpointing={str(gpu).lower()}",
        "--set",
        "micro_batch_size=8",
        *(("--set", "lora.enabled=true", "--set", "lora.rank=16") if lora else ()),
        cwd=REPO,
    )
    rollout = proactive(
        "rollout",
        *common,
        "--set",
        f"sampling.max_new_tokens={tokens}",
        "--set",
        f"precision={precision}",
        "--set",
        "num_examine=1",
        "--set",
        "vllm.gpu_memory_utilization=0.35",
        cwd=REPO,
    )
    finish(rollout, "rollout")
    finish(grpo, "grpo")

    # -- checks: every step published, finite numbers, sampler and trainer agree
    metrics = read_jsonl(run / "logs" / "grpo" / "metrics.jsonl")
    problems = []
    if len(metrics) != steps:
        problems.append(f"{len(metrics)} GRPO steps logged, expected {steps}")
    last = RunPaths(run).policy(steps)
    if not (last / "STABLE.json").is_file():
        problems.append(f"policy {steps} was not published")
    elif lora != (last / "adapter_model.safetensors").is_file():
        problems.append(f"policy {steps} is {'not ' if lora else ''}a LoRA adapter")
    for m in metrics:
        for key in ("reward/mean", "opt/grad_norm", "loss/pg_loss"):
            if m.get(key) is None or not math.isfinite(m[key]):
                problems.append(f"step {m['step']}: {key} = {m.get(key)}")
    diff = max(m["rollout/sampler_logprob_abs_diff"] for m in metrics)
    # bf16 engines differ in the last bits; a wrong temperature or stale weights differ by far more
    if diff > (0.05 if gpu else 1e-3):
        problems.append(f"sampler vs trainer logprobs differ by {diff:.4f} on average")

    # -- figures (step 0 excluded from rates: it includes engine start and warm-up)
    import pyarrow.parquet as pq
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        shapes = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    params = sum(p.numel() for p in shapes.parameters())  # tied embeddings counted once
    later = [m for m in metrics if m["step"] > 0] or metrics
    resp_tokens = upd_tokens = gen_s = upd_s = 0.0
    for m in later:
        table = pq.read_table(RunPaths(run).rollout_file(m["step"])).to_pylist()
        resp_tokens += sum(len(r["response_ids"]) for r in table)
        upd_tokens += sum(len(r["prompt_ids"]) + len(r["response_ids"]) for r in table)
        gen_s += m["time/generate_s"]
        upd_s += m["time/update_s"]
    # trained tokens cost 6N (LoRA: 4N, no weight gradients of the frozen base); each extra
    # forward (old logprobs; the KL reference) 2N
    kl = json.loads((run / "configs" / "grpo.json").read_text())["loss"]["kl_coef"] > 0
    flops = upd_tokens * params * ((4 if lora else 6) + 2 + (2 if kl else 0))
    peak = next((v for k, v in PEAK_BF16.items() if k in device), None)
    figures = {
        "device": device,
        "shape": shape,
        "parameters": params,
        "backend": backend,
        "lora": lora,
        "steps": steps,
        "prompts_x_n": f"{prompts}x{n}",
        "max_new_tokens": tokens,
        "build_model_s": round(build_s, 1),
        "sft_s": round(sft_s, 1),
        "rollout_tokens_per_s": round(resp_tokens / gen_s, 1),
        "update_tokens_per_s": round(upd_tokens / upd_s, 1),
        "mfu": round(flops / upd_s / peak, 4) if peak and gpu else None,  # one trainer process
        "publish_policy_s": round(sum(m["time/publish_s"] for m in later) / len(later), 2),
        "engine_start_s": round(metrics[0].get("time/policy_load_s", 0.0), 2),
        "reload_policy_s": round(
            sum(m.get("time/policy_load_s", 0.0) for m in later) / len(later), 2
        ),
        "sampler_logprob_abs_diff": diff,
        "problems": problems,
    }
    (workdir / "gpu_check.json").write_text(json.dumps(figures, indent=2) + "\n")
    width = max(map(len, figures))
    for key, value in figures.items():
        click.echo(f"  {key:<{width}}  {value}")
    if problems:
        raise click.ClickException("gpu-check FAILED: " + "; ".join(problems))
    click.echo(f"gpu-check: passed; figures in {workdir / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
