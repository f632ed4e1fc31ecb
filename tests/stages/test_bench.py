"""scripts/bench.py (make bench) at small settings: it measures the reward and the pipeline,
writes bench.json and logs the numbers to metrics.jsonl (no speed thresholds: figures are
recorded in docs/benchmarks.md, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_bench_measures_the_reward_and_the_pipeline(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--out", str(out), "--quick",
         "--groups", "50", "--n", "8", "--steps", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads((out / "bench.json").read_text())
    assert figures["reward/groups"] == 50 and figures["reward/n"] == 8
    assert figures["reward/responses_per_s"] > 0
    assert 0 < figures["reward/mean_score"] < 1.1  # right, wrong and hedged responses graded
    assert figures["pipeline/rollout_tokens_per_s"] > 0
    assert figures["pipeline/update_tokens_per_s"] > 0
    logged = json.loads((out / "logs" / "bench" / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["reward/responses_per_s"] == figures["reward/responses_per_s"]
    assert logged["pipeline/update_tokens_per_s"] == figures["pipeline/update_tokens_per_s"]
