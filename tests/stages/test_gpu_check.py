"""scripts/gpu_check.py (what `make gpu-check` runs on a CUDA machine) on the CPU with the tiny
shape: the same stages, checks and figures, vLLM's CPU build generating, so the script cannot rot
on machines without a GPU. On a GPU it runs the real Qwen3-0.6B layer shapes (docs/gpu.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def check_gpu_check_figures(workdir, lora: bool) -> None:
    """What gpu_check.py must report after a passing run in `workdir`."""
    figures = json.loads((workdir / "gpu_check.json").read_text())
    assert figures["problems"] == []
    # the rollout engine is vLLM here too (its CPU build), as on a GPU
    assert figures["shape"] == "tiny" and figures["backend"] == "vllm"
    assert figures["lora"] is lora
    assert figures["parameters"] > 100_000
    assert figures["rollout_tokens_per_s"] > 0 and figures["update_tokens_per_s"] > 0
    assert figures["publish_policy_s"] > 0 and figures["reload_policy_s"] > 0
    assert figures["mfu"] is None  # no peak FLOP/s for a CPU
    assert figures["sampler_logprob_abs_diff"] < 1e-3


@pytest.mark.slow
def test_gpu_check_runs_the_lora_pipeline_and_reports_figures(tmp_path):
    """LoRA mode here; the whole model's run is scripts/bench.py's pipeline, checked with the
    same function in tests/stages/test_bench.py (each run costs over a minute on 2 cores)."""
    workdir = tmp_path / "gpu-check"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "gpu_check.py"),
            "--allow-cpu",
            "--workdir",
            str(workdir),
            "--steps",
            "2",
            "--prompts",
            "4",
            "--n",
            "4",
            "--lora",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_gpu_check_figures(workdir, lora=True)
    assert "gpu-check: passed" in proc.stdout


def test_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "no CUDA GPU visible" in proc.stderr and "Traceback" not in proc.stderr
