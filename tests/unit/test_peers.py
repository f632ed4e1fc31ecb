"""Peers and waiting (shared/peers.py): a worker's status file, and the verdict a waiting
consumer reaches from its peer's status and the clock, as a table of cases (`judge`), then the
polling loop around it (`wait_for`) with real files and threads."""

from __future__ import annotations

import os
import threading
import time

import pytest

from proactive_rl.shared.peers import (
    FAILURE_GRACE_S,
    PeerFailed,
    PeerState,
    PeerStatus,
    Verdict,
    WaitTimeout,
    judge,
    read_peer_status,
    wait_for,
    worker_status,
    write_status,
)
from proactive_rl.shared.publish import is_stable, read_json, read_marker
from tests.unit.test_publish import published

# ---------------------------------------------------------------- judge: one poll, one verdict

START = 1_000_000.0  # our start time (wall clock) in the cases below
WHAT = "rollouts of step 5"
TIMEOUT = 3600.0
QUIET = 120.0


def status(state: str | None, written: float, **fields) -> PeerStatus:
    """The peer's status file: `state` written `written` seconds after our start."""
    return PeerStatus(state=state, time=START + written, **fields)


# (case, the peer's status (None: no file), our clock: seconds since our start, seconds waited,
#  the verdict's kind, the message or a part of it)
CASES = [
    ("no status file: wait", None, 5, 5, "wait", ""),
    ("no status file: up to the timeout", None, 3600, 3600, "wait", ""),
    (
        "no status file: then time out",
        None,
        3601,
        3600.5,
        "timed_out",
        "timed out after 3600s waiting for rollouts of step 5 from the rollout worker; "
        "is it running? check its logs",
    ),
    ("alive: wait", status("running", +50), 55, 55, "wait", ""),
    (
        "failed after our start: fail at once",
        status("failed", +1, error="RuntimeError: CUDA out of memory"),
        2,
        1,
        "peer_failed",
        "the rollout worker failed while we waited for rollouts of step 5: "
        "RuntimeError: CUDA out of memory (see its logs)",
    ),
    ("failed without detail", status("failed", +1), 2, 1, "peer_failed", ": no detail (see"),
    ("failed at start-up, before our start", status("failed", -10), 1, 1, "peer_failed", "failed"),
    (
        "failed at the grace's edge",
        status("failed", -FAILURE_GRACE_S),
        1,
        1,
        "peer_failed",
        "",
    ),
    ("an earlier run's failure: ignored", status("failed", -FAILURE_GRACE_S - 1), 1, 1, "wait", ""),
    (
        "failed before our start for want of us: ignored",
        status("failed", -10, peer_caused=True),
        1,
        1,
        "wait",
        "",
    ),
    (
        "failed after our start for want of us: it still failed",
        status("failed", +1, peer_caused=True),
        2,
        1,
        "peer_failed",
        "failed while we waited",
    ),
    (
        "done after our start: look once more",
        status("done", +3),
        4,
        4,
        "peer_done",
        "the rollout worker finished without publishing rollouts of step 5",
    ),
    (
        "done before our start: no grace",
        status("done", -10),
        1,
        1,
        "wait",
        "",
    ),
    ("an unknown state: wait", status("paused", +1), 2, 2, "wait", ""),
    (
        "heartbeat older than peer_quiet_timeout: killed",
        status("running", +10),
        131,
        131,
        "peer_failed",
        "the rollout worker went quiet (no heartbeat for 121s) while we waited for rollouts of "
        "step 5; was it killed (out of memory?) - check its logs",
    ),
    (
        "heartbeat just quiet_after old",
        status("running", +10),
        130,
        130,
        "wait",
        "",
    ),
    ("an earlier run's quiet heartbeat: wait", status("running", -500), 100, 100, "wait", ""),
    (
        "not written since our start for peer_quiet_timeout: not coming",
        status("done", -500),
        121,
        121,
        "peer_failed",
        "the rollout worker has not run since we started 121s ago (its status file says 'done', "
        "written 621s ago) while we waited for rollouts of step 5: start the rollout worker too, "
        "with --resume to continue this run (the two must start within "
        "peer_quiet_timeout=120s of each other)",
    ),
    (
        "not written since, not for long",
        status("done", -500),
        120,
        120,
        "wait",
        "",
    ),
    (
        "an unreadable status file reads as empty",
        PeerStatus(),
        121,
        121,
        "peer_failed",
        "its status file says None, written 1000121s ago",
    ),
    (
        "the peer's failure before the timeout",
        status("failed", +1, error="boom"),
        4000,
        4000,
        "peer_failed",
        "boom",
    ),
    (
        "a peer that is not coming before the timeout",
        status("done", -500),
        4000,
        4000,
        "peer_failed",
        "has not run since we started",
    ),
    (
        "alive, but the timeout is the timeout",
        status("running", +3990),
        4000,
        4000,
        "timed_out",
        "timed out after 3600s",
    ),
]


@pytest.mark.parametrize(
    "peer_status, clock, waited, kind, message",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_judge(peer_status, clock, waited, kind, message):
    state = PeerState(
        what=WHAT,
        peer="rollout",
        status=peer_status,
        started_after=START,
        now=START + clock,
        waited=waited,
        timeout=TIMEOUT,
        quiet_after=QUIET,
    )
    verdict = judge(state)
    assert verdict.kind == kind
    assert message in verdict.message
    if kind == "wait":
        assert verdict == Verdict("wait")


# Without a start time (no peer restart to tell apart) every status is news.
NO_START_CASES = [
    (status("failed", -5000, error="boom"), "peer_failed", "boom (see its logs)"),
    (status("done", -5000), "peer_done", "finished without publishing"),
    (status("running", -5000), "peer_failed", "went quiet (no heartbeat for 5001s)"),
    (status("running", -5), "wait", ""),
    (PeerStatus(), "wait", ""),
]


@pytest.mark.parametrize("peer_status, kind, message", NO_START_CASES)
def test_judge_without_a_start_time(peer_status, kind, message):
    state = PeerState(WHAT, "grpo", peer_status, None, START + 1, 1, TIMEOUT, QUIET)
    verdict = judge(state)
    assert verdict.kind == kind and message in verdict.message


def test_judge_names_no_peer_when_there_is_none():
    state = PeerState("policy 3", None, None, None, START, 11, 10, QUIET)
    assert judge(state) == Verdict("timed_out", "timed out after 10s waiting for policy 3")


def test_read_peer_status(tmp_path):
    path = tmp_path / "status" / "grpo.json"
    assert read_peer_status(None) is None
    assert read_peer_status(path) is None  # never started here
    write_status(path, "failed", error="boom", peer_caused=True)
    seen = read_peer_status(path)
    assert seen == PeerStatus("failed", read_json(path)["time"], "boom", True)
    path.write_text('{"state": "fail')  # torn write by a foreign tool
    assert read_peer_status(path) == PeerStatus()


# ---------------------------------------------------------------- worker status


def test_worker_status_running_then_done(tmp_path):
    path = tmp_path / "status" / "rollout.json"
    before = time.time()
    with worker_status(path, plan_id="p1"):
        during = read_json(path)
    after = read_json(path)

    assert during["state"] == "running" and during["plan_id"] == "p1"
    assert after["state"] == "done" and after["plan_id"] == "p1"
    assert after["pid"] == os.getpid()
    assert before <= during["time"] <= after["time"] <= time.time()


def test_worker_status_failed_records_error_and_reraises(tmp_path):
    path = tmp_path / "grpo.json"
    with pytest.raises(ValueError, match="boom 42"):
        with worker_status(path, plan_id="p1"):
            assert read_json(path)["state"] == "running"
            raise ValueError("boom 42")
    status = read_json(path)
    assert status["state"] == "failed"
    assert status["error"] == "ValueError: boom 42"
    assert status["plan_id"] == "p1"


# ---------------------------------------------------------------- wait_for


def test_wait_for_returns_once_check_succeeds():
    calls = []

    def check():
        calls.append(1)
        return "ready" if len(calls) >= 3 else None

    assert wait_for(check, "the thing", timeout=5, poll=0.01) == "ready"
    assert len(calls) == 3


def test_wait_for_sees_an_artifact_published_by_another_thread(tmp_path):
    final = tmp_path / "rollouts" / "step_000000"

    def producer():
        time.sleep(0.1)
        published(final, meta={"rows": 7})

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        marker = wait_for(
            lambda: read_marker(final) if is_stable(final) else None,
            "rollouts of step 0",
            timeout=5,
            poll=0.02,
        )
    finally:
        thread.join()
    assert marker["rows"] == 7


def test_wait_for_times_out_naming_what_and_peer():
    start = time.monotonic()
    with pytest.raises(WaitTimeout) as err:
        wait_for(lambda: None, "policy step_000003", timeout=0.3, peer="grpo", poll=0.05)
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 2.0
    assert "policy step_000003" in str(err.value)
    assert "grpo" in str(err.value)


# (state the peer wrote, its time relative to our start, expected outcome)
PEER_CASES = [
    ("failed", +1.0, PeerFailed),  # failed during this run: fail at once
    ("failed", -10.0, PeerFailed),  # failed at start-up, before we took our start time
    ("failed", -60.0, WaitTimeout),  # stale failure of an earlier run: ignored
    ("done", -10.0, WaitTimeout),  # the grace is for failures only
    ("running", +1.0, WaitTimeout),  # alive (fresh heartbeat): keep waiting
    ("done", +1.0, PeerFailed),  # finished without publishing what we wait for
    ("done", -60.0, WaitTimeout),  # an earlier run's peer finished: ignored
]


@pytest.mark.parametrize("state, offset, expected", PEER_CASES)
def test_wait_for_checks_the_peer_status(tmp_path, state, offset, expected):
    peer_status = tmp_path / "status" / "rollout.json"
    write_status(peer_status, state, error="CUDA out of memory")
    started_after = read_json(peer_status)["time"] - offset

    start = time.monotonic()
    with pytest.raises(expected) as err:
        wait_for(
            lambda: None,
            "rollouts of step 5",
            timeout=0.2,
            peer="rollout",
            peer_status=peer_status,
            started_after=started_after,
            poll=0.02,
        )
    elapsed = time.monotonic() - start
    message = str(err.value)
    assert "rollouts of step 5" in message and "rollout" in message
    if expected is PeerFailed:
        assert elapsed < 0.15  # at once, not after the timeout
        expect = "CUDA out of memory" if state == "failed" else "finished without publishing"
        assert expect in message
    else:
        assert elapsed >= 0.2


def test_wait_for_tolerates_an_unreadable_peer_status(tmp_path):
    peer_status = tmp_path / "rollout.json"
    peer_status.write_text('{"state": "fail')  # torn write by a foreign tool
    with pytest.raises(WaitTimeout):
        wait_for(lambda: None, "x", timeout=0.1, peer="rollout", peer_status=peer_status, poll=0.02)


def test_wait_for_fails_when_the_peer_goes_quiet(tmp_path):
    peer_status = tmp_path / "grpo.json"
    write_status(peer_status, "running")
    beat = read_json(peer_status)["time"]
    time.sleep(0.15)
    with pytest.raises(PeerFailed, match="went quiet"):
        wait_for(
            lambda: None,
            "policy 3",
            timeout=5,
            peer="grpo",
            peer_status=peer_status,
            started_after=beat - 1,
            quiet_after=0.1,
            poll=0.02,
        )
    # a quiet heartbeat from before we started is an earlier run's: wait (and time out) instead
    with pytest.raises(WaitTimeout):
        wait_for(
            lambda: None,
            "policy 3",
            timeout=0.2,
            peer="grpo",
            peer_status=peer_status,
            started_after=beat + 1,
            quiet_after=0.1,
            poll=0.02,
        )


def test_worker_status_refreshes_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr("proactive_rl.shared.peers.HEARTBEAT_S", 0.05)
    path = tmp_path / "status.json"
    with worker_status(path):
        first = read_json(path)["time"]
        time.sleep(0.3)
        assert read_json(path)["state"] == "running"
        assert read_json(path)["time"] > first
    assert read_json(path)["state"] == "done"


def test_wait_for_looks_once_more_when_the_peer_finished(tmp_path):
    peer_status = tmp_path / "grpo.json"
    write_status(peer_status, "done")
    calls = []

    def check():
        calls.append(1)
        return "published just before finishing" if len(calls) == 2 else None

    found = wait_for(
        check,
        "policy 3",
        timeout=5,
        peer="grpo",
        peer_status=peer_status,
        started_after=read_json(peer_status)["time"] - 1,
        poll=0.01,
    )
    assert found == "published just before finishing" and len(calls) == 2
