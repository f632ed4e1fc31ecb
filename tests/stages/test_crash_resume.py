"""Crash safety: workers killed with SIGKILL at chosen moments, then restarted with --resume,
end where an uninterrupted run ends (docs/reliability.md, "What --resume promises"): every step
once, every marker valid, one metrics line per step, and with max_staleness=0 on the CPU the
final weights bitwise equal to the uninterrupted run's.

Narrow windows are hit with the test-only hook PROACTIVE_CRASH_AT (shared/faults.py); the
other kills are real external `kill -9`s at a seeded moment (PROACTIVE_CRASH_SEED)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from proactive_rl.shared.faults import CRASH_ENV
from proactive_rl.shared.paths import RunPaths, numbered_children
from proactive_rl.shared.peers import write_status
from proactive_rl.shared.publish import is_stable, read_marker, verify
from tests.conftest import REPO, command, proactive
from tests.stages.test_rl_loop import USER_REWARD
from tests.stages.test_sft import FAST, conversation, write_data

pytestmark = pytest.mark.slow

STEPS = 3  # 9 train rows, 3 prompts a step, one epoch
QUIET = ("--set", "peer_quiet_timeout=11")  # the least allowed: above the 10 s heartbeat
START = ("--set", "peer_start_timeout=11")  # a peer not restarted with us: named after 11 s
# What a worker may take beyond such a limit before it says so (its start-up included: torch's
# import, slow on a loaded machine), far below the wait_timeout=600 it would otherwise wait.
SLACK_S = 120


def grpo_args(tiny_model: Path) -> list[str]:
    settings = [
        f"init_model={tiny_model}", "epochs=1", "prompts_per_step=3", "n=4",
        "learning_rate=1e-3", "min_lr_ratio=0.1", "max_staleness=0", "micro_batch_size=5",
    ]  # fmt: skip
    return [arg for s in settings for arg in ("--set", s)]


ROLLOUT_ARGS = [
    "--set", "reward=reward.py:length_reward", "--set", 'reward_kwargs={"scale": 2.0}',
    "--set", "sampling.max_new_tokens=12", "--set", "num_examine=1",
]  # fmt: skip


def launch(worker: str, run_dir: Path, *args: str, cwd: Path, crash: str | None = None):
    """`proactive <worker>` in the background; with `crash`, PROACTIVE_CRASH_AT=crash."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if crash:
        env[CRASH_ENV] = crash
    return subprocess.Popen(
        command((worker, "--run-dir", str(run_dir), *args)),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def finish(*procs: subprocess.Popen) -> list[str]:
    # every pipe drained at once: a worker blocked on a full pipe would stall the other
    with ThreadPoolExecutor(len(procs)) as pool:
        return list(pool.map(lambda p: p.communicate(timeout=300)[0], procs))


def both(
    workdir: Path,
    run_dir: Path,
    tiny_model: Path,
    *extra: str,
    crash: str | None = None,
    grpo_extra: tuple[str, ...] = (),
):
    """grpo and rollout side by side to their ends; returns (grpo, rollout) and their outputs."""
    grpo = launch(
        "grpo", run_dir, *grpo_args(tiny_model), *extra, *grpo_extra, cwd=workdir, crash=crash
    )
    rollout = launch("rollout", run_dir, *ROLLOUT_ARGS, *extra, cwd=workdir)
    out_grpo, out_rollout = finish(grpo, rollout)
    return grpo, rollout, out_grpo, out_rollout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Prepared data and the reward file, shared by every run of this module."""
    workdir = tmp_path_factory.mktemp("crash")
    shutil.copytree(REPO / "data" / "sample", workdir / "data" / "sample")
    proactive("prep", "--set", "max_rl_rows=12", "--set", "test_fraction=0.25", cwd=workdir)
    (workdir / "reward.py").write_text(USER_REWARD)
    return workdir


@pytest.fixture(scope="module")
def reference(workdir, tiny_model) -> RunPaths:
    """The uninterrupted run every crashed one is compared with."""
    run_dir = workdir / "checkpoints" / "reference"
    grpo, rollout, out_grpo, out_rollout = both(workdir, run_dir, tiny_model)
    assert grpo.returncode == 0 and rollout.returncode == 0, out_grpo + out_rollout
    return RunPaths(run_dir)


def step_lines(paths: RunPaths) -> list[dict]:
    """The metrics lines of steps (event lines, e.g. where a run resumed, aside)."""
    lines = (paths.logs("grpo") / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "event" not in r]


def weights(paths: RunPaths, version: int) -> dict[str, torch.Tensor]:
    return load_file(paths.policy(version) / "model.safetensors")


def assert_like_the_reference(paths: RunPaths, reference: RunPaths) -> None:
    """Every step once, every marker valid, one metrics line per step with the reference's
    learning rate, and the final weights bitwise equal to the reference's."""
    assert [s for s, _ in numbered_children(paths.rollouts)] == list(range(STEPS))
    assert [v for v, _ in numbered_children(paths.policies)] == list(range(STEPS + 1))
    for _, folder in numbered_children(paths.rollouts) + numbered_children(paths.policies):
        verify(folder)
    for step, folder in numbered_children(paths.rollouts):
        assert read_marker(folder)["policy_version"] == step  # on-policy, never regenerated
    lines, expected = step_lines(paths), step_lines(reference)
    assert [r["step"] for r in lines] == list(range(STEPS))
    # the schedule went on where it stopped (it is placed by the RL step on --resume)
    assert [r["opt/lr"] for r in lines] == [r["opt/lr"] for r in expected]
    assert [r["reward/mean"] for r in lines] == [r["reward/mean"] for r in expected]
    final, straight = weights(paths, STEPS), weights(reference, STEPS)
    assert final.keys() == straight.keys()
    differ = [k for k in final if not torch.equal(final[k], straight[k])]
    assert not differ, f"weights differ from the uninterrupted run: {differ}"


def kill_when_exited(victim: subprocess.Popen, other: subprocess.Popen) -> None:
    """`other` is SIGKILLed as soon as `victim` is dead: both workers are gone."""
    victim.wait(timeout=300)
    other.send_signal(signal.SIGKILL)
    finish(victim, other)


def test_grpo_killed_in_its_two_narrow_windows_resumes_exactly(workdir, tiny_model, reference):
    """grpo killed (1) after saving the optimizer state for policy 2 but before publishing it,
    (2) after policy 3's marker but before its metrics line. Between them, the rollout worker
    restarted alone is told to restart grpo too, instead of waiting for it for an hour."""
    run_dir = workdir / "checkpoints" / "windows"
    paths = RunPaths(run_dir)
    common = ("--set", "wait_timeout=600", *QUIET, *START)
    # The first run with the default peer limits: 11 s is 1 s above the heartbeat, which a
    # loaded machine can miss while both start; this part is about where grpo is killed.
    grpo = launch(
        "grpo", run_dir, *grpo_args(tiny_model), "--set", "wait_timeout=600", cwd=workdir,
        crash="grpo:after_optimizer_save:1",
    )  # fmt: skip
    rollout = launch("rollout", run_dir, *ROLLOUT_ARGS, "--set", "wait_timeout=600", cwd=workdir)
    kill_when_exited(grpo, rollout)
    assert grpo.returncode == -signal.SIGKILL
    assert paths.grpo_optimizer_state(2).is_file() and not is_stable(paths.policy(2))

    # both are dead; the rollout worker alone, resumed, waits for a policy grpo cannot publish
    alone = launch("rollout", run_dir, *ROLLOUT_ARGS, *common, "--resume", cwd=workdir)
    started = time.monotonic()
    out = finish(alone)[0]
    seconds = time.monotonic() - started
    print(f"the rollout worker restarted alone stopped after {seconds:.1f} s")
    assert alone.returncode == 75, out  # EX_TEMPFAIL: stopped for want of its peer
    assert "the grpo worker has not run since we started" in out
    assert "start the grpo worker too, with --resume" in out and "Traceback" not in out
    assert seconds < 11 + SLACK_S, f"told after {seconds:.0f} s"

    # both resumed; grpo is killed again after policy 3's marker, before step 2's metrics line.
    # The default quiet timeout here: on a loaded machine grpo's start-up (torch's import) can
    # outlast 11 s, and this part is not about the rollout worker giving up on its peer.
    grpo, rollout, out_grpo, out_rollout = both(
        workdir, run_dir, tiny_model, "--set", "wait_timeout=600", "--resume",
        crash="grpo:after_policy_marker:2",
    )  # fmt: skip
    assert grpo.returncode == -signal.SIGKILL and rollout.returncode == 0, out_rollout
    assert "no optimizer state" not in out_grpo  # the state of policy 1 was still there
    assert is_stable(paths.policy(STEPS)) and [r["step"] for r in step_lines(paths)] == [0, 1]

    # grpo alone: nothing left to train; step 2's line is written from policy 3's marker
    out_grpo = finish(launch("grpo", run_dir, *grpo_args(tiny_model), "--resume", cwd=workdir))[0]
    assert "metrics of step 2 written from policy 3's marker" in out_grpo
    assert_like_the_reference(paths, reference)
    assert step_lines(paths)[2]["recovered"] is True
    lines = (paths.logs("grpo") / "metrics.jsonl").read_text().splitlines()
    events = [r for r in map(json.loads, lines) if "event" in r]
    assert [(e["event"], e["step"]) for e in events] == [("resume", 1)]
    assert sorted(p.name for p in paths.grpo_state.iterdir()) == ["optimizer_step_000003.pt"]


def test_a_worker_killed_at_a_seeded_moment_and_resumed_beside_its_peer(
    workdir, tiny_model, reference
):
    """A real `kill -9` from outside, of a worker and at a moment drawn from a seed within the
    step after policy 1 (both workers are busy then: the rollout worker samples step 1, grpo
    waits for it and trains); the killed worker is restarted with --resume while its peer
    runs on."""
    seed = int(os.environ.get("PROACTIVE_CRASH_SEED", "11"))
    draw = random.Random(seed)
    step_s = read_marker(reference.policy(2))["published_at"]
    step_s -= read_marker(reference.policy(1))["published_at"]
    victim_name, delay = draw.choice(["grpo", "rollout"]), draw.uniform(0.0, 1.0) * step_s
    print(f"seed {seed}: kill -9 {victim_name} {delay:.2f} s after policy 1 (step {step_s:.1f} s)")
    run_dir = workdir / "checkpoints" / f"kill-{seed}"
    paths = RunPaths(run_dir)
    args = {"grpo": grpo_args(tiny_model), "rollout": ROLLOUT_ARGS}
    procs = {name: launch(name, run_dir, *args[name], cwd=workdir) for name in args}
    while not is_stable(paths.policy(1)) and all(p.poll() is None for p in procs.values()):
        time.sleep(0.02)
    time.sleep(delay)
    victim = procs[victim_name]
    victim.send_signal(signal.SIGKILL)
    out_victim = finish(victim)[0]
    assert victim.returncode == -signal.SIGKILL, out_victim  # killed, not finished before
    procs[victim_name] = launch(victim_name, run_dir, *args[victim_name], "--resume", cwd=workdir)
    outputs = finish(*procs.values())
    assert all(p.returncode == 0 for p in procs.values()), outputs
    assert_like_the_reference(paths, reference)


def test_a_rollout_clean_that_would_rewrite_trained_history_is_refused(workdir, reference):
    """rollout --clean after grpo trained on the rollouts would regenerate them from newer
    policies; it is refused, and the rollouts stay. With grpo running (a fresh heartbeat and
    the plan still in place) at once; with grpo gone, after peer_start_timeout."""
    paths = reference
    before = {s: read_marker(f)["published_at"] for s, f in numbered_children(paths.rollouts)}
    statuses = {w: paths.status(w).read_text() for w in ("grpo", "rollout")}
    # "at once" with grpo running: its start limit far beyond the test's bound, so a refusal
    # that waited for it fails the test, however slowly the worker starts up
    limits = {True: ("--set", "peer_start_timeout=600"), False: START}
    try:
        for grpo_alive in (True, False):
            started = time.monotonic()
            proc = launch(
                "rollout", paths.root, *ROLLOUT_ARGS, *QUIET, *limits[grpo_alive], "--clean",
                cwd=workdir,
            )  # fmt: skip
            while grpo_alive and proc.poll() is None:  # a grpo running on the same plan
                write_status(paths.status("grpo"), "running")
                time.sleep(0.5)
            out = finish(proc)[0]
            seconds = time.monotonic() - started
            assert proc.returncode == 2, out
            assert "rollout --clean would delete rollouts that grpo trained policies 1..3" in out
            assert "start both workers with --clean" in out and "Traceback" not in out
            if grpo_alive:
                assert seconds < SLACK_S, f"refused after {seconds:.0f} s"
            else:
                assert 11 <= seconds < 11 + SLACK_S, f"refused after {seconds:.0f} s"
            after = {
                s: read_marker(f)["published_at"] for s, f in numbered_children(paths.rollouts)
            }
            assert after == before
    finally:  # the reference run as it was, for the tests after this one
        for worker, text in statuses.items():
            paths.status(worker).write_text(text)


def test_both_workers_with_clean_start_the_run_over(workdir, tiny_model, reference):
    """RUN_MODE=--clean in compose starts both at once: the rollout worker waits for grpo to
    remove the trained plan instead of refusing, and the run starts over consistently."""
    run_dir = workdir / "checkpoints" / "clean-both"
    shutil.copytree(reference.root, run_dir)
    paths = RunPaths(run_dir)
    old_plan = json.loads(paths.plan.read_text())["plan_id"]
    grpo, rollout, out_grpo, out_rollout = both(
        workdir, run_dir, tiny_model, "--clean", grpo_extra=("--set", "max_steps=1")
    )
    assert grpo.returncode == 0 and rollout.returncode == 0, out_grpo + out_rollout
    plan = json.loads(paths.plan.read_text())["plan_id"]
    assert plan != old_plan
    assert [s for s, _ in numbered_children(paths.rollouts)] == [0]
    assert read_marker(paths.rollout(0))["plan_id"] == plan
    assert [v for v, _ in numbered_children(paths.policies)] == [0, 1]
    assert [r["step"] for r in step_lines(paths)] == [0]


def sft_run(run_dir: Path, data_dir: Path, *args: str, crash: str | None = None):
    """`proactive sft` (two epochs of four conversations a step: steps 1-2, then 3-4)."""
    args = ("--data-dir", str(data_dir), *FAST, "--set", "epochs=2", *args)
    return launch("sft", run_dir, *args, cwd=run_dir.parent, crash=crash)


def test_sft_killed_mid_epoch_with_a_half_written_checkpoint_resumes(tmp_path):
    """sft is killed in epoch 2 right after logging step 3, and the Trainer's checkpoint of
    step 4 is left half-written as a kill inside the Trainer's own save leaves it (weights and
    optimizer, no trainer_state.json; made by hand: no hook reaches inside the Trainer).
    --resume removes it, continues from checkpoint-2, logs each step once with a line saying
    where it resumed, and ends with the uninterrupted run's weights."""
    data_dir = tmp_path / "data"
    write_data(data_dir, [json.dumps(conversation(i)) for i in range(8)])
    straight = tmp_path / "straight"
    out = finish(sft_run(straight, data_dir))[0]
    assert is_stable(RunPaths(straight).sft_epoch(2)), out

    run_dir = tmp_path / "run"
    paths = RunPaths(run_dir)
    proc = sft_run(run_dir, data_dir, crash="sft:after_log:3")
    finish(proc)
    assert proc.returncode == -signal.SIGKILL and not is_stable(paths.sft_epoch(2))
    metrics = paths.logs("sft") / "metrics.jsonl"
    checkpoints = paths.sft_trainer_state
    assert [p.name for p in checkpoints.glob("checkpoint-*")] == ["checkpoint-2"]
    shutil.copytree(checkpoints / "checkpoint-2", checkpoints / "checkpoint-4")
    (checkpoints / "checkpoint-4" / "trainer_state.json").unlink()
    epoch1 = read_marker(paths.sft_epoch(1))

    resumed = sft_run(run_dir, data_dir, "--resume")
    out = finish(resumed)[0]
    assert resumed.returncode == 0, out
    assert "removing the incomplete Trainer checkpoint" in out and "checkpoint-4" in out
    assert read_marker(paths.sft_epoch(1)) == epoch1
    records = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    events = [r for r in records if "event" in r]
    assert [(e["event"], e["step"], e["checkpoint"]) for e in events] == [
        ("resume", 3, "checkpoint-2")
    ]
    final = load_file(paths.sft_epoch(2) / "model.safetensors")
    expected = load_file(RunPaths(straight).sft_epoch(2) / "model.safetensors")
    for key, value in expected.items():
        torch.testing.assert_close(final[key], value, rtol=0, atol=0, msg=key)


def test_grpo_killed_in_its_background_publish_resumes(workdir, tiny_model):
    """One step off-policy with each policy written in a background thread (forced here: `auto`
    does so on a GPU only), grpo killed in that thread after policy 2's marker, before step 1's
    metrics line (written once policy 2 is published, while step 2 trains). --resume writes
    that line from the marker and ends with every step once, every marker valid. The weights
    are not compared: one step off, which policy sampled a step depends on timing."""
    run_dir = workdir / "checkpoints" / "background"
    paths = RunPaths(run_dir)
    background = ("--set", "max_staleness=1", "--set", "publish_in_background=always")
    args = (*grpo_args(tiny_model), *background, "--set", "wait_timeout=600")
    grpo = launch("grpo", run_dir, *args, cwd=workdir, crash="grpo:after_policy_marker:1")
    rollout = launch("rollout", run_dir, *ROLLOUT_ARGS, "--set", "wait_timeout=600", cwd=workdir)
    kill_when_exited(grpo, rollout)
    assert grpo.returncode == -signal.SIGKILL
    assert is_stable(paths.policy(2)) and not is_stable(paths.policy(3))
    assert [r["step"] for r in step_lines(paths)] == [0]

    grpo = launch("grpo", run_dir, *args, "--resume", cwd=workdir)
    rollout = launch("rollout", run_dir, *ROLLOUT_ARGS, "--set", "wait_timeout=600", "--resume",
                     cwd=workdir)  # fmt: skip
    out_grpo, out_rollout = finish(grpo, rollout)
    assert grpo.returncode == 0 and rollout.returncode == 0, out_grpo + out_rollout
    assert "written in a background thread" in out_grpo
    assert "metrics of step 1 written from policy 2's marker" in out_grpo
    assert [v for v, _ in numbered_children(paths.policies)] == list(range(STEPS + 1))
    for _, folder in numbered_children(paths.rollouts) + numbered_children(paths.policies):
        verify(folder)
    for step, folder in numbered_children(paths.rollouts):
        assert step - 1 <= read_marker(folder)["policy_version"] <= step
    lines = step_lines(paths)
    assert [r["step"] for r in lines] == list(range(STEPS))
    assert [r.get("recovered", False) for r in lines] == [False, True, False]
    assert all("time/publish_s" in r and "time/publish_wait_s" in r for r in (lines[0], lines[2]))
