"""Two rollout workers split each RL step beside one grpo (rollout_workers=2): real processes on
the tiny model, exchanging parts and policies through the run directory."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from proactive_rl.shared.paths import RunPaths, numbered_children
from proactive_rl.shared.publish import read_json, read_marker, verify
from proactive_rl.shared.schedule import read_plan
from proactive_rl.shared.schemas import ROLLOUTS, read_table
from tests.conftest import REPO, proactive, start

N = 2
PROMPTS = 3  # odd: worker 0 samples 2 prompts a step, worker 1 one
STEPS = 2


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, tiny_model):
    workdir = tmp_path_factory.mktemp("workers")
    shutil.copytree(REPO / "data" / "sample", workdir / "data" / "sample")
    proactive("prep", "--set", "max_rl_rows=12", "--set", "test_fraction=0.25", cwd=workdir)
    run_dir = workdir / "checkpoints" / "run"
    common = ["--run-dir", str(run_dir)]
    grpo = start(
        "grpo",
        *common,
        *("--set", f"init_model={tiny_model}", "--set", f"prompts_per_step={PROMPTS}"),
        *("--set", f"n={N}", "--set", f"max_steps={STEPS}", "--set", "rollout_workers=2"),
        *("--set", "learning_rate=1e-3", "--set", "min_lr_ratio=0.1"),
        cwd=workdir,
    )
    rollout = ["--set", "sampling.max_new_tokens=8", "--set", "num_examine=0"]
    workers = [
        start("rollout", *common, *rollout, "--set", f"worker={w}", cwd=workdir) for w in (0, 1)
    ]
    procs = [grpo, *workers]
    # every pipe drained at once: a worker blocked on a full pipe would stall the others
    with ThreadPoolExecutor(len(procs)) as pool:
        outs = list(pool.map(lambda p: p.communicate(timeout=600)[0], procs))
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out
    return workdir, RunPaths(run_dir), outs


def test_every_step_is_merged_from_both_parts_whole(two_workers):
    _, paths, outs = two_workers
    plan = read_plan(paths.plan)
    assert plan.rollout_workers == 2 and plan.total_steps == STEPS
    assert not numbered_children(paths.rollouts)  # no one-worker step folders
    for step in range(STEPS):
        merged = []
        for worker, folder in enumerate(paths.rollout_parts(step, 2)):
            marker = verify(folder)
            assert marker["plan_id"] == plan.plan_id and marker["step"] == step
            assert (marker["worker"], marker["workers"], marker["dropped"]) == (worker, 2, [])
            rows = read_table(folder / "rollouts.parquet", ROLLOUTS).to_pylist()
            groups = [r["group_id"] for r in rows]
            assert sorted(set(groups)) == sorted(plan.worker_prompts(step, worker))
            assert marker["rows"] == len(rows) == N * len(set(groups))
            merged += rows
        # the union: every prompt of the step exactly once, with its n responses
        counts = {}
        for row in merged:
            counts.setdefault(row["group_id"], []).append(row["sample_index"])
        assert sorted(counts) == sorted(plan.step_prompts(step))
        assert all(sorted(v) == list(range(N)) for v in counts.values())
    assert "part 1 of 2" in outs[2] and "worker 1 of 2" in outs[2]


def test_the_trainer_published_every_policy_and_both_workers_finished(two_workers):
    _, paths, outs = two_workers
    assert [v for v, _ in numbered_children(paths.policies)] == list(range(STEPS + 1))
    for _, folder in numbered_children(paths.policies):
        verify(folder)
    lines = (paths.logs("grpo") / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(STEPS))
    for name in ("rollout", "rollout-1"):
        assert read_json(paths.status(name))["state"] == "done", name
        assert json.loads(paths.config(name).read_text())["worker"] == int(name == "rollout-1")
    assert "rollout_workers=2" in outs[0]


def test_a_worker_beyond_rollout_workers_is_refused(two_workers):
    workdir, paths, _ = two_workers
    proc = proactive(
        "rollout", "--run-dir", str(paths.root), "--set", "worker=2", cwd=workdir, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "worker=2, but the plan" in out and "has rollout_workers=2" in out
    assert "Traceback" not in out
    # refused before it claimed or wrote anything of the run's; its failure is its own
    assert not paths.config("rollout-2").exists()
    assert read_json(paths.status("rollout-2"))["state"] == "failed"
    assert read_json(paths.status("rollout"))["state"] == "done"
    assert read_marker(paths.rollout_parts(0, 2)[0])["worker"] == 0
