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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class Check:
    """What this check runs: the machine, the model shape and the GRPO settings."""

    workdir: Path
    gpu: bool
    device: str
    shape: str
    backend: str
    steps: int
    prompts: int
    n: int
    max_new_tokens: int
    lora: bool

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def run(self) -> Path:
        return self.workdir / "run"

    @property
    def precision(self) -> str:
        return "bf16" if self.gpu else "fp32"

    @property
    def tokens(self) -> int:
        """Response length: short on a CPU, where generation is slow."""
        return 16 if not self.gpu else self.max_new_tokens

    def common(self) -> list[str]:
        return ["--data-dir", str(self.data), "--run-dir", str(self.run)]


@dataclass
class Throughput:
    """Tokens and seconds over the measured GRPO steps."""

    response_tokens: float = 0.0
    update_tokens: float = 0.0
    generate_s: float = 0.0
    update_s: float = 0.0


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("checkpoints/gpu-check"))
@click.option("--shape", default=None, help="Model shape (default: qwen3-0.6b, tiny on CPU).")
@click.option("--steps", default=3, show_default=True, help="GRPO steps.")
@click.option("--prompts", default=16, show_default=True, help="Prompts per GRPO step.")
@click.option("--n", default=8, show_default=True, help="Responses per prompt.")
@click.option("--max-new-tokens", default=256, show_default=True)
@click.option("--lora", is_flag=True, help="GRPO in LoRA mode (adapters as policy versions).")
@click.option("--allow-cpu", is_flag=True, help="Run without a GPU (tiny shape, CI).")
def main(
    workdir: Path,
    shape: str | None,
    steps: int,
    prompts: int,
    n: int,
    max_new_tokens: int,
    lora: bool,
    allow_cpu: bool,
) -> None:
    check = detect(workdir, shape, allow_cpu, steps, prompts, n, max_new_tokens, lora)
    announce(check)
    base, build_s = prepare(check)
    finish(proactive("prep", "--data-dir", str(check.data), cwd=REPO), "prep")
    sft_s = fine_tune(check, base)
    train(check)

    metrics = read_jsonl(check.run / "logs" / "grpo" / "metrics.jsonl")
    problems = find_problems(check, metrics)
    figures = measure(check, base, metrics, build_s, sft_s, problems)
    report(check.workdir, figures)


def detect(
    workdir: Path,
    shape: str | None,
    allow_cpu: bool,
    steps: int,
    prompts: int,
    n: int,
    max_new_tokens: int,
    lora: bool,
) -> Check:
    """The device, the model shape and the rollout backend; refuses a machine without CUDA
    unless --allow-cpu."""
    import torch

    from proactive_rl.engine.generation import resolve_backend
    from proactive_rl.engine.models import SHAPES

    gpu = torch.cuda.is_available()
    if not gpu and not allow_cpu:
        raise click.ClickException("no CUDA GPU visible (torch.cuda.is_available() is False)")
    shape = shape or ("qwen3-0.6b" if gpu else "tiny")
    if shape not in SHAPES:
        raise click.ClickException(f"--shape must be one of {', '.join(SHAPES)}")
    device = torch.cuda.get_device_name(0) if gpu else "cpu"
    backend = resolve_backend("auto")
    return Check(workdir, gpu, device, shape, backend, steps, prompts, n, max_new_tokens, lora)


def announce(check: Check) -> None:
    import torch

    click.echo(
        f"gpu-check: {check.device} x{torch.cuda.device_count() if check.gpu else 0}, "
        f"torch {torch.__version__}, model {check.shape}, rollout backend {check.backend}"
        + (", LoRA" if check.lora else "")
    )


def prepare(check: Check) -> tuple[Path, float]:
    """A fresh workdir with the sample data and a random-initialised base model; the model's
    path and the seconds it took to build."""
    from proactive_rl.engine.models import build_tiny_model

    shutil.rmtree(check.workdir, ignore_errors=True)
    shutil.copytree(REPO / "data" / "sample", check.data / "sample")
    t0 = time.perf_counter()
    base = build_tiny_model(check.workdir / "base", shape=check.shape)
    return base, time.perf_counter() - t0


def sets(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


def sft_settings(check: Check, base: Path) -> list[str]:
    return [
        f"base_model={base}",
        "epochs=1",
        "max_samples=32",
        f"precision={check.precision}",
        f"gradient_checkpointing={str(check.gpu).lower()}",
    ]


def grpo_settings(check: Check) -> list[str]:
    return [
        f"n={check.n}",
        f"prompts_per_step={check.prompts}",
        f"mini_batch_prompts={check.prompts}",
        f"max_steps={check.steps}",
        f"precision={check.precision}",
        "loss.is_correction=token",
        f"gradient_checkpointing={str(check.gpu).lower()}",
        "micro_batch_size=8",
        *(("lora.enabled=true", "lora.rank=16") if check.lora else ()),
    ]


def rollout_settings(check: Check) -> list[str]:
    return [
        f"sampling.max_new_tokens={check.tokens}",
        f"precision={check.precision}",
        "num_examine=1",
        "vllm.gpu_memory_utilization=0.35",
    ]


def fine_tune(check: Check, base: Path) -> float:
    """A few SFT steps from the base model; their seconds."""
    t0 = time.perf_counter()
    finish(proactive("sft", *check.common(), *sets(sft_settings(check, base)), cwd=REPO), "sft")
    return time.perf_counter() - t0


def train(check: Check) -> None:
    """GRPO with the rollout worker beside it, both to their end."""
    grpo = proactive("grpo", *check.common(), *sets(grpo_settings(check)), cwd=REPO)
    rollout = proactive("rollout", *check.common(), *sets(rollout_settings(check)), cwd=REPO)
    finish(rollout, "rollout")
    finish(grpo, "grpo")


def find_problems(check: Check, metrics: list[dict]) -> list[str]:
    """Every step published, finite numbers, sampler and trainer agree."""
    problems = []
    if len(metrics) != check.steps:
        problems.append(f"{len(metrics)} GRPO steps logged, expected {check.steps}")
    problems += policy_problems(check)
    for m in metrics:
        for key in ("reward/mean", "opt/grad_norm", "loss/pg_loss"):
            if m.get(key) is None or not math.isfinite(m[key]):
                problems.append(f"step {m['step']}: {key} = {m.get(key)}")
    diff = logprob_diff(metrics)
    # bf16 engines differ in the last bits; a wrong temperature or stale weights differ by far more
    if diff > (0.05 if check.gpu else 1e-3):
        problems.append(f"sampler vs trainer logprobs differ by {diff:.4f} on average")
    return problems


def policy_problems(check: Check) -> list[str]:
    """The last policy is published, as an adapter exactly when --lora."""
    from proactive_rl.shared.paths import RunPaths

    last = RunPaths(check.run).policy(check.steps)
    if not (last / "STABLE.json").is_file():
        return [f"policy {check.steps} was not published"]
    if check.lora != (last / "adapter_model.safetensors").is_file():
        return [f"policy {check.steps} is {'not ' if check.lora else ''}a LoRA adapter"]
    return []


def logprob_diff(metrics: list[dict]) -> float:
    return max(m["rollout/sampler_logprob_abs_diff"] for m in metrics)


def count_parameters(base: Path) -> int:
    """The model's parameters, from its config on the meta device (no weights loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        shapes = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    return sum(p.numel() for p in shapes.parameters())  # tied embeddings counted once


def throughput(run: Path, later: list[dict]) -> Throughput:
    """Tokens generated and trained on, and the seconds spent on each, over `later` steps."""
    import pyarrow.parquet as pq

    from proactive_rl.shared.paths import RunPaths

    total = Throughput()
    for m in later:
        table = pq.read_table(RunPaths(run).rollout_file(m["step"])).to_pylist()
        total.response_tokens += sum(len(r["response_ids"]) for r in table)
        total.update_tokens += sum(len(r["prompt_ids"]) + len(r["response_ids"]) for r in table)
        total.generate_s += m["time/generate_s"]
        total.update_s += m["time/update_s"]
    return total


def update_flops(run: Path, lora: bool, params: int, update_tokens: float) -> float:
    """The FLOPs of grpo's updates over `update_tokens` tokens (prompt + response, each row
    once) in the run `run`, counted as its update computes them (stages/grpo/update.py)."""
    from proactive_rl.shared.paths import RunPaths
    from proactive_rl.stages.grpo.config import GrpoConfig

    cfg = GrpoConfig.model_validate_json(RunPaths(run).config("grpo").read_text())
    # every epoch trains each token: 6N (LoRA: 4N, no weight gradients of the frozen base),
    # and the KL reference makes a forward (2N) beside each training forward
    per_epoch = (4 if lora else 6) + (2 if cfg.loss.kl_coef > 0 else 0)
    # pi_old is one no-grad forward (2N) a row, except in the first mini-batch when the step
    # reads it off that update's own forward
    first_mini = min(1.0, cfg.mini_batch_prompts / cfg.prompts_per_step)
    old_forward = 2 * (1 - first_mini if cfg.reads_off_old_policy() else 1)
    return update_tokens * params * (cfg.ppo_epochs * per_epoch + old_forward)


def measure(
    check: Check,
    base: Path,
    metrics: list[dict],
    build_s: float,
    sft_s: float,
    problems: list[str],
) -> dict[str, Any]:
    """The figures gpu_check.json holds (step 0 excluded from rates: it includes engine start
    and warm-up)."""
    params = count_parameters(base)
    later = [m for m in metrics if m["step"] > 0] or metrics
    done = throughput(check.run, later)
    flops = update_flops(check.run, check.lora, params, done.update_tokens)
    peak = next((v for k, v in PEAK_BF16.items() if k in check.device), None)
    return {
        "device": check.device,
        "shape": check.shape,
        "parameters": params,
        "backend": check.backend,
        "lora": check.lora,
        "steps": check.steps,
        "prompts_x_n": f"{check.prompts}x{check.n}",
        "max_new_tokens": check.tokens,
        "build_model_s": round(build_s, 1),
        "sft_s": round(sft_s, 1),
        "rollout_tokens_per_s": round(done.response_tokens / done.generate_s, 1),
        "update_tokens_per_s": round(done.update_tokens / done.update_s, 1),
        # one trainer process
        "mfu": round(flops / done.update_s / peak, 4) if peak and check.gpu else None,
        "publish_policy_s": round(sum(m["time/publish_s"] for m in later) / len(later), 2),
        "engine_start_s": round(metrics[0].get("time/policy_load_s", 0.0), 2),
        "reload_policy_s": round(
            sum(m.get("time/policy_load_s", 0.0) for m in later) / len(later), 2
        ),
        "sampler_logprob_abs_diff": logprob_diff(metrics),
        "problems": problems,
    }


def report(workdir: Path, figures: dict[str, Any]) -> None:
    """gpu_check.json, the figures printed, and a failure when any check found a problem."""
    (workdir / "gpu_check.json").write_text(json.dumps(figures, indent=2) + "\n")
    width = max(map(len, figures))
    for key, value in figures.items():
        click.echo(f"  {key:<{width}}  {value}")
    problems = figures["problems"]
    if problems:
        raise click.ClickException("gpu-check FAILED: " + "; ".join(problems))
    click.echo(f"gpu-check: passed; figures in {workdir / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
