"""scripts/bench.py (make bench) at small settings: it measures the reward, the pipeline and the
generation engine (the real vLLM engine, on the tiny model), writes bench.json and logs the
numbers to metrics.jsonl (no speed thresholds: figures are recorded in docs/benchmarks.md, not
asserted). Its pipeline is scripts/gpu_check.py on the whole tiny model, so this test also checks
what `make gpu-check` reports there (tests/stages/test_gpu_check.py runs its LoRA mode): one
run of that pipeline, not two, in `make test`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.stages.test_gpu_check import check_gpu_check_figures


@pytest.mark.slow
def test_bench_measures_the_reward_the_pipeline_and_the_engines(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--out", str(out), "--quick",
         "--groups", "50", "--n", "8", "--steps", "2", "--model", "builtin:tiny"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads((out / "bench.json").read_text())
    assert figures["reward/groups"] == 50 and figures["reward/n"] == 8
    assert figures["reward/responses_per_s"] > 0
    assert 0 < figures["reward/mean_score"] < 1.1  # right, wrong and hedged responses graded
    assert figures["pipeline/rollout_tokens_per_s"] > 0
    assert figures["pipeline/update_tokens_per_s"] > 0
    check_gpu_check_figures(out / "pipeline", lora=False)
    assert "gpu-check: passed" in proc.stdout
    # the engine ratios: each a positive, finite figure of this run
    ratios = ("ratio_over_raw_copy", "ratio_over_reused_copy")
    for key in ("generate/ratio_vllm_over_transformers", *(f"handoff/{r}" for r in ratios)):
        assert 0 < figures[key] < 1e6, key
    assert figures["generate/vllm_tokens_per_s"] > 0 and figures["handoff/reload_s"] > 0
    logged = json.loads((out / "logs" / "bench" / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["reward/responses_per_s"] == figures["reward/responses_per_s"]
    assert logged["pipeline/update_tokens_per_s"] == figures["pipeline/update_tokens_per_s"]


def test_bench_hash_times_the_handoff_and_every_hash(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_hash.py"), "--out", str(out),
         "--gb", "0.02", "--shards", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads((out / "hash.json").read_text())
    assert figures["shards"] == 2 and 0.015 < figures["policy_gb"] < 0.025
    assert figures["handoff_gb_s (blake3)"] > 0
    for name in ("sha256, one thread", "blake3, all cores", "verify() (blake3, sizes, marker)"):
        assert figures[f"{name}: GB/s"] > 0, name
        assert 0 < figures[f"{name}: / handoff"] < 1, name
    assert not (out / "hash").exists()  # the written policy is removed
