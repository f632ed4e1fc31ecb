"""The pieces --resume relies on, one at a time: the metrics log after a crash, the test-only
crash hook, which Trainer checkpoints count as complete, and a peer that is not coming back.
The whole workers are killed and resumed in tests/stages/test_crash_resume.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from proactive_rl.shared.metrics import MetricsLogger, read_metrics
from proactive_rl.shared.peers import PeerFailed, WaitTimeout, wait_for, write_status
from proactive_rl.stages.sft.main import checkpoint_complete, remove_incomplete_checkpoints


def test_a_resumed_metrics_log_keeps_one_line_per_step(tmp_path):
    """Killed after logging steps 0-2 (step 3 torn mid-write); resumed at step 2: the lines of
    steps 2 and later go (they are logged again), a line says where it resumed."""
    log = MetricsLogger(tmp_path, tensorboard=False)
    for step in range(3):
        log.log(step, {"loss": float(step)})
    with open(log.path, "a") as fh:
        fh.write('{"loss": 3.0, "st')  # the kill came while this line was written
    resumed = MetricsLogger(tmp_path, tensorboard=False, resume_at=2)
    assert resumed.dropped == 2 and resumed.steps() == {0, 1}
    resumed.event(2, "resume", dropped_lines=resumed.dropped)
    for step in range(2, 4):
        resumed.log(step, {"loss": float(step), "nan": float("nan")})
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records if "event" not in r] == [0, 1, 2, 3]
    assert [(r["event"], r["step"]) for r in records if "event" in r] == [("resume", 2)]
    assert records[-1]["nan"] is None  # strict JSON


def test_the_crash_hook_kills_only_at_its_named_point(tmp_path):
    code = (
        "from proactive_rl.shared.faults import crash_point\n"
        "crash_point('grpo', 'after_policy_marker', 1)\n"
        "crash_point('grpo', 'after_optimizer_save', 2)\n"
        "print('survived')\n"
    )
    for spec, returncode in [
        ("", 0),
        ("grpo:after_policy_marker:2", 0),
        ("rollout:after_policy_marker:1", 0),
        ("grpo:after_optimizer_save:2", -9),
    ]:
        env = {"PROACTIVE_CRASH_AT": spec}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
        assert proc.returncode == returncode, spec
        assert (b"survived" in proc.stdout) == (returncode == 0)


def trainer_state(step: int) -> str:
    return json.dumps({"global_step": step, "log_history": []})


# what a kill inside the Trainer's save leaves in checkpoint-4: is it complete?
CHECKPOINTS = [
    ({"model.safetensors": "w", "optimizer.pt": "o", "trainer_state.json": trainer_state(4)}, True),
    ({"model.safetensors": "w", "optimizer.pt": "o"}, False),  # killed before the state
    ({"model.safetensors": "w", "trainer_state.json": trainer_state(4)[:20]}, False),  # torn
    ({"trainer_state.json": trainer_state(2)}, False),  # another step's state
    ({}, False),  # the folder was just made
]


@pytest.mark.parametrize("files, complete", CHECKPOINTS)
def test_a_trainer_checkpoint_is_complete_once_its_state_is_written(tmp_path, files, complete):
    older = tmp_path / "checkpoint-2"
    older.mkdir()
    (older / "trainer_state.json").write_text(trainer_state(2))
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    assert checkpoint_complete(folder, 4) is complete
    remove_incomplete_checkpoints(tmp_path)
    assert folder.exists() is complete and older.exists()


def stale_status(path, state: str, age: float) -> None:
    """A status file as a worker that died `age` seconds ago left it."""
    write_status(path, state, peer_caused=True)
    status = json.loads(path.read_text())
    status["time"] -= age
    path.write_text(json.dumps(status))


@pytest.mark.parametrize("state", ["running", "failed", "done"])
def test_a_peer_silent_since_our_start_is_to_be_restarted_too(tmp_path, state):
    """Both workers died; this one was restarted 50 s ago, the peer last wrote 100 s ago: after
    quiet_after (20 s) without a word from it, say to restart it instead of waiting an hour."""
    peer = tmp_path / "grpo.json"
    stale_status(peer, state, age=100)
    with pytest.raises(PeerFailed, match="start the grpo worker too, with --resume") as err:
        wait_for(
            lambda: None, "policy 3", timeout=5, peer="grpo", peer_status=peer,
            started_after=time.time() - 50, quiet_after=20, poll=0.01,
        )  # fmt: skip
    assert "has not run since we started 50s ago" in str(err.value)
    # restarted 5 s ago: the peer may be starting too, so it is waited for
    with pytest.raises(WaitTimeout):
        wait_for(
            lambda: None, "policy 3", timeout=0.2, peer="grpo", peer_status=peer,
            started_after=time.time() - 5, quiet_after=20, poll=0.01,
        )  # fmt: skip


def test_a_peer_that_failed_for_want_of_us_does_not_stop_us_restarting(tmp_path):
    """A worker restarted alone stopped, telling to start its peer; the user starts both a few
    seconds later: its `failed` (caused by the absent peer) lies within the start-up grace but
    is not a failure of a worker starting beside us."""
    peer = tmp_path / "rollout.json"
    stale_status(peer, "failed", age=3)
    with pytest.raises(WaitTimeout):
        wait_for(
            lambda: None, "rollouts of step 2", timeout=0.2, peer="rollout", peer_status=peer,
            started_after=time.time() - 1, quiet_after=20, poll=0.01,
        )  # fmt: skip
    write_status(peer, "failed", error="bad config")  # a failure of its own: fail at once
    with pytest.raises(PeerFailed, match="bad config"):
        wait_for(
            lambda: None, "rollouts of step 2", timeout=5, peer="rollout", peer_status=peer,
            started_after=time.time() + 1, quiet_after=20, poll=0.01,
        )  # fmt: skip
