"""`ROLLOUT_WORKERS=2 docker compose up pipeline`: the services rollout (worker 0) and rollout-1
(worker 1) split every RL step, grpo merges both parts, eval reports. Runs the chain through
scripts/smoke.sh (Docker set up, images built when stale, every container's exit code checked)
at a smaller size: n=2, 2 steps, the transformers engine. Needs Docker (CI's container phase):

    .venv/bin/pytest -m docker tests/e2e/test_compose_workers.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import REPO

RUN = "e2e-workers"
STEPS = 2
SETTINGS = {
    "RUN_NAME": RUN,
    "ROLLOUT_WORKERS": "2",
    "RL_ROLLOUTS": "2",
    "GRPO_ARGS": f"--set prompts_per_step=4 --set mini_batch_prompts=4 --set max_steps={STEPS}",
    "ROLLOUT_ARGS": "--set sampling.max_new_tokens=16 --set backend=transformers",
    "EVAL_ARGS": "--set sampling.max_new_tokens=16 --set n=2 --set max_questions=2 "
    "--set backend=transformers --set plots=false",
    "SMOKE_ENGINE": "transformers",
    "SMOKE_MIN_POLICIES": str(STEPS + 1),
    "SMOKE_MIN_ROLLOUTS": str(2 * STEPS),  # two parts a step
    "COMPOSE_PROJECT_NAME": "proactive-rl-e2e-workers",
}


@pytest.mark.docker
def test_two_rollout_workers_in_compose():
    run = REPO / "checkpoints" / RUN
    # smoke.env fills what is not set here (the knobs of the caller are replaced)
    env = {**os.environ, **SETTINGS}
    try:
        proc = subprocess.run(
            ["scripts/smoke.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=2400
        )
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        assert "ok   rollout-1 exited 0" in proc.stdout
        plan = json.loads((run / "policies" / "plan.json").read_text())
        assert plan["rollout_workers"] == 2
        for step in range(STEPS):
            groups = []
            for worker in (0, 1):
                folder = run / "rollouts" / f"part-{worker}-of-2" / f"step_{step:06d}"
                marker = json.loads((folder / "STABLE.json").read_text())
                assert (marker["worker"], marker["workers"], marker["step"]) == (worker, 2, step)
                assert marker["plan_id"] == plan["plan_id"] and marker["groups"] == 2
                groups.append(marker["groups"])
            assert sum(groups) == 4  # the step's 4 prompts, 2 from each worker
        # grpo merged and trained on every step; both workers ran to the end
        lines = (run / "logs" / "grpo" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == list(range(STEPS))
        for name in ("rollout", "rollout-1"):
            status = json.loads((run / "status" / f"{name}.json").read_text())
            assert status["state"] == "done", name
    finally:
        shutil.rmtree(run, ignore_errors=True)
