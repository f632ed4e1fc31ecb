"""A restart of a launch (PROACTIVE_LAUNCH_ID: the JobSet's uid, the same for every restart of
it) continues the run whatever RUN_MODE says, on the tiny model: sft restarted mid-way trains
only what is missing, sft, grpo and eval restarted after their end finish at once, and another
launch is still refused. Every start here passes --clean, as a launch with RUN_MODE=--clean
does: a restart must never wipe progress."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from proactive_rl.shared.claims import record_launch
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import RunPaths
from proactive_rl.shared.publish import publish_dir, read_marker, staging_dir
from proactive_rl.shared.schedule import Plan, write_plan
from proactive_rl.stages.grpo.main import command as grpo_command
from tests.conftest import proactive
from tests.stages.test_sft import conversation, sft, write_data

LAUNCH = "jobset-uid-1"


def published_at(folder: Path) -> float:
    return read_marker(folder)["published_at"]


def test_sft_restarted_in_its_launch_continues_and_after_its_end_does_nothing(
    tmp_path, monkeypatch, caplog
):
    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    paths = RunPaths(run_dir)
    write_data(data_dir, [json.dumps(conversation(i)) for i in range(8)])
    monkeypatch.setenv("PROACTIVE_LAUNCH_ID", LAUNCH)
    # the first start of the launch: killed after its first epoch (here: a one-epoch run)
    first = sft(run_dir, data_dir, "--set", "epochs=1", "--clean")
    assert first.exit_code == 0, repr(first.exception)
    epoch_1 = published_at(paths.sft_epoch(1))

    # restarted mid-way: continues with epoch 2, epoch 1 kept as it was
    with caplog.at_level(logging.INFO):
        resumed = sft(run_dir, data_dir, "--set", "epochs=2", "--clean")
    assert resumed.exit_code == 0, repr(resumed.exception)
    assert f"restart of launch {LAUNCH}" in caplog.text
    assert published_at(paths.sft_epoch(1)) == epoch_1
    epoch_2 = published_at(paths.sft_epoch(2))

    # restarted after its end: nothing is trained again
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = sft(run_dir, data_dir, "--set", "epochs=2", "--clean")
    assert again.exit_code == 0, repr(again.exception)
    assert "nothing to do" in caplog.text
    assert [published_at(paths.sft_epoch(e)) for e in (1, 2)] == [epoch_1, epoch_2]

    # another launch over these outputs is refused as before (it has no RUN_MODE here)
    monkeypatch.setenv("PROACTIVE_LAUNCH_ID", "jobset-uid-2")
    other = sft(run_dir, data_dir, "--set", "epochs=2")
    assert isinstance(other.exception, UserError) and "already holds" in str(other.exception)


def publish(folder: Path, meta: dict) -> None:
    staging = staging_dir(folder)
    (staging / "weights.bin").write_bytes(b"w")
    publish_dir(staging, folder, meta)


def test_grpo_restarted_after_its_last_step_exits_at_once(tmp_path, monkeypatch, caplog):
    paths = RunPaths(tmp_path / "run")
    plan = Plan("p1", train_rows=4, train_sha256="0" * 64, prompts_per_step=4, n=2, epochs=2,
                seed=1, max_staleness=0)  # fmt: skip
    write_plan(paths.plan, plan)
    for version in range(plan.total_steps + 1):
        publish(paths.policy(version), {"plan_id": "p1", "version": version})
    monkeypatch.setenv("PROACTIVE_LAUNCH_ID", LAUNCH)
    record_launch(paths.launch("grpo"))
    before = sorted(p.name for p in paths.policies.iterdir())
    with caplog.at_level(logging.INFO):
        # no data/processed, no model: a finished run needs neither
        result = CliRunner().invoke(grpo_command, ["--run-dir", str(paths.root), "--clean"])
    assert result.exit_code == 0, repr(result.exception)
    assert "nothing to do" in caplog.text
    assert sorted(p.name for p in paths.policies.iterdir()) == before


@pytest.fixture()
def prepared(workdir: Path) -> Path:
    args = ["--set", "max_rl_rows=16", "--set", "test_fraction=0.25", "--set", "num_sft_samples=8"]
    proactive("prep", *args, cwd=workdir)
    # prep restarted after its end: nothing to rebuild
    assert "nothing to do" in proactive("prep", *args, cwd=workdir).stderr
    return workdir


def test_eval_restarted_after_its_report_exits_at_once(prepared, tiny_model):
    args = ["eval", "--run-dir", "run", "--clean", "--set", f"checkpoints={tiny_model}"]
    args += ["--set", "n=1", "--set", "max_questions=2", "--set", "sampling.max_new_tokens=4"]
    args += ["--set", "plots=false"]
    proactive(*args, cwd=prepared, env={"PROACTIVE_LAUNCH_ID": LAUNCH})
    report = RunPaths(prepared / "run").eval_dir("report")
    first = published_at(report)

    again = proactive(*args, cwd=prepared, env={"PROACTIVE_LAUNCH_ID": LAUNCH})
    assert "already published: nothing to do" in again.stderr
    assert published_at(report) == first

    args.remove("--clean")
    other = proactive(*args, cwd=prepared, check=False, env={"PROACTIVE_LAUNCH_ID": "uid-2"})
    assert other.returncode == 2 and "already holds outputs" in other.stderr


def test_rollout_restarted_after_the_plans_last_step_exits_at_once(prepared):
    import pyarrow.parquet as pq

    from proactive_rl.shared.paths import DataPaths

    paths = RunPaths(prepared / "run")
    rows = pq.read_metadata(DataPaths(prepared / "data").rl_train).num_rows
    plan = Plan("p1", train_rows=rows, train_sha256="0" * 64, prompts_per_step=rows, n=2,
                epochs=2, seed=1, max_staleness=0)  # fmt: skip
    write_plan(paths.plan, plan)
    for step in range(plan.total_steps):
        publish(paths.rollout(step), {"plan_id": "p1", "step": step})
    env = {"PROACTIVE_LAUNCH_ID": LAUNCH}
    record_launch(paths.launch("rollout"), env)  # the launch's first start claimed them
    before = [published_at(paths.rollout(step)) for step in range(plan.total_steps)]
    # no grpo runs: a finished worker waits for nothing, and --clean deletes nothing
    again = proactive("rollout", "--run-dir", "run", "--clean", cwd=prepared, env=env, timeout=120)
    assert f"restart of launch {LAUNCH}" in again.stderr
    assert [published_at(paths.rollout(step)) for step in range(plan.total_steps)] == before
