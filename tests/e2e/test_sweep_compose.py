"""The sweep's container launcher: every step of a small sweep (with vs without SFT on the tiny
model) runs as `docker compose run` of its stage's image over ./data and ./checkpoints, and the
comparison report is written. Needs Docker and the images (CI's container phase)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

NAME = "e2e-compose"
SMALL = """
name = "e2e-compose"
launcher = "compose"
base_model = "builtin:tiny"
[settings]
prep = ["max_rl_rows=8", "test_fraction=0.5"]
sft = ["epochs=1", "max_length=128"]
grpo = ["prompts_per_step=2", "mini_batch_prompts=2", "max_steps=1", "n=2"]
rollout = ["sampling.max_new_tokens=8", "backend=transformers"]
eval = ["n=2", "sampling.max_new_tokens=8", "backend=transformers", "plots=false"]
"""


@pytest.mark.docker
def test_a_sweep_in_containers(tmp_path):
    folders = [REPO / "checkpoints" / "sweeps" / NAME, REPO / "data" / "sweeps" / NAME]
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    config = tmp_path / "compose-sweep.toml"
    config.write_text(SMALL)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "proactive_rl.stages.cli", "sweep"]
            + ["--preset", "with_without_sft", "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        root = folders[0]
        report = json.loads((root / "report" / "report.json").read_text())
        assert [r["name"] for r in report["runs"]] == ["sft50_rl_beta0.5", "nosft_rl_beta0.5"]
        log = (root / "logs" / "sft50_rl_beta0.5-grpo.log").read_text()
        assert "grpo" in log
        assert "run --rm --no-deps -T grpo" in proc.stderr  # each step was a container
        grpo = json.loads((root / "nosft_rl_beta0.5" / "configs" / "grpo.json").read_text())
        assert grpo["init_model"] == "builtin:tiny"  # without SFT: RL from the base model
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
