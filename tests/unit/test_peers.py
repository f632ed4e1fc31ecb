"""Peers and waiting (shared/peers.py): the verdict a waiting consumer reaches from its peer's
status and what it observed of it on its own clock, as a table of cases (`judge`); the same
rules through the polling loop (`wait_for`) with real status files, for peers whose clock is 10
minutes ahead of ours and behind; and the loop's own behaviour. Writing and watching status
files: tests/unit/test_peer_status.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from proactive_rl.shared.peers import (
    FAILURE_GRACE_S,
    PeerFailed,
    PeerState,
    PeerStatus,
    PeerWatch,
    Seen,
    Verdict,
    WaitTimeout,
    judge,
    wait_for,
    write_status,
)
from proactive_rl.shared.publish import is_stable, read_marker
from tests.unit.test_peer_status import Ticks, backdate, peer_writes
from tests.unit.test_publish import published

# ---------------------------------------------------------------- judge: one poll, one verdict

WHAT = "rollouts of step 5"
TIMEOUT = 3600.0
QUIET = 120.0
START = 900.0
BEFORE = ("b0", 7)  # the peer's heartbeat (boot, seq) when we started
SINCE = ("b1", 3)  # one written since (a new seq, or a restarted peer's new boot)


def status(state: str | None, beat: tuple[str, int] | None = SINCE, **fields) -> PeerStatus:
    return PeerStatus(state=state, beat=beat, **fields)


def seen(
    unchanged: float = 0, since_start: float = 5, age: float | None = None, at_start=BEFORE
) -> Seen:
    """What we observed: the heartbeat at our start (`at_start`, `age` seconds old then by the
    volume's clock), unchanged for `unchanged` s, `since_start` s after our start."""
    return Seen(at_start, age, unchanged, since_start)


# (case, the peer's status (None: no file), what we observed, seconds waited, the verdict's
#  kind, the message or a part of it)
CASES = [
    ("no status file: wait", None, seen(), 5, "wait", ""),
    ("no status file: up to the timeout", None, seen(since_start=3600), 3600, "wait", ""),
    (
        "no status file: then time out",
        None,
        seen(since_start=3601),
        3600.5,
        "timed_out",
        "timed out after 3600s waiting for rollouts of step 5 from the rollout worker; "
        "is it running? check its logs",
    ),
    ("alive: wait", status("running"), seen(unchanged=5, since_start=55), 55, "wait", ""),
    (
        "failed since our start: fail at once",
        status("failed", error="RuntimeError: CUDA out of memory"),
        seen(),
        1,
        "peer_failed",
        "the rollout worker failed while we waited for rollouts of step 5: "
        "RuntimeError: CUDA out of memory (see its logs)",
    ),
    ("failed without detail", status("failed"), seen(), 1, "peer_failed", ": no detail (see"),
    (
        "failed at start-up, before our start",
        status("failed", BEFORE),
        seen(age=10),
        1,
        "peer_failed",
        "failed",
    ),
    (
        "failed at the grace's edge",
        status("failed", BEFORE),
        seen(age=FAILURE_GRACE_S),
        1,
        "peer_failed",
        "",
    ),
    (
        "an earlier run's failure: ignored",
        status("failed", BEFORE),
        seen(age=FAILURE_GRACE_S + 1),
        1,
        "wait",
        "",
    ),
    (
        "a failure of unknown age (no probe file): ignored",
        status("failed", BEFORE),
        seen(age=None),
        1,
        "wait",
        "",
    ),
    (
        "failed before our start for want of us: ignored",
        status("failed", BEFORE, peer_caused=True),
        seen(age=10),
        1,
        "wait",
        "",
    ),
    (
        "failed since our start for want of us: it still failed",
        status("failed", peer_caused=True),
        seen(),
        1,
        "peer_failed",
        "failed while we waited",
    ),
    (
        "done since our start: look once more",
        status("done"),
        seen(),
        4,
        "peer_done",
        "the rollout worker finished without publishing rollouts of step 5",
    ),
    ("done before our start: no grace", status("done", BEFORE), seen(age=1), 1, "wait", ""),
    ("an unknown state: wait", status("paused"), seen(unchanged=500), 2, "wait", ""),
    (
        "no new heartbeat for peer_quiet_timeout of our clock: killed",
        status("running"),
        seen(unchanged=121, since_start=131),
        131,
        "peer_failed",
        "the rollout worker went quiet (no heartbeat for 121s) while we waited for rollouts of "
        "step 5; was it killed (out of memory?) - check its logs",
    ),
    (
        "no new heartbeat for just peer_quiet_timeout",
        status("running"),
        seen(unchanged=120, since_start=130),
        130,
        "wait",
        "",
    ),
    (
        "an earlier run's heartbeat: wait for its restart",
        status("running", BEFORE),
        seen(unchanged=500, since_start=500),
        500,
        "wait",
        "",
    ),
    (
        "not (re)started since our start for peer_start_timeout: not coming",
        status("done", BEFORE),
        seen(since_start=901),
        901,
        "peer_failed",
        "the rollout worker has not run since we started 901s ago (its status file still says "
        "'done', as when we started) while we waited for rollouts of step 5: start the rollout "
        "worker too, with --resume to continue this run (the two must start within "
        "peer_start_timeout=900s of each other)",
    ),
    (
        "a slow (re)start (rescheduled, pulling its image): up to peer_start_timeout",
        status("running", BEFORE),
        seen(unchanged=900, since_start=900),
        900,
        "wait",
        "",
    ),
    (
        "a peer that stopped for want of us, being restarted: waited for",
        status("failed", BEFORE, peer_caused=True),
        seen(since_start=899, age=12),
        899,
        "wait",
        "",
    ),
    (
        "an unreadable status file reads as empty",
        PeerStatus(),
        seen(since_start=901),
        901,
        "peer_failed",
        "its status file still says None",
    ),
    ("a status file without a heartbeat is not news", status("done", None), seen(), 1, "wait", ""),
    (
        "the peer's failure before the timeout",
        status("failed", error="boom"),
        seen(since_start=4000),
        4000,
        "peer_failed",
        "boom",
    ),
    (
        "a peer that is not coming before the timeout",
        status("done", BEFORE),
        seen(since_start=4000),
        4000,
        "peer_failed",
        "has not run since we started",
    ),
    (
        "alive, but the timeout is the timeout",
        status("running"),
        seen(unchanged=3, since_start=4000),
        4000,
        "timed_out",
        "timed out after 3600s",
    ),
    # Without a baseline (no file at our start) every status with a heartbeat is news.
    (
        "no file at our start: a failure is news",
        status("failed", BEFORE, error="boom"),
        seen(at_start=None),
        1,
        "peer_failed",
        "boom (see its logs)",
    ),
    (
        "no file at our start: done is news",
        status("done", BEFORE),
        seen(at_start=None),
        1,
        "peer_done",
        "finished without publishing",
    ),
    (
        "no file at our start: quiet is counted from when we first saw it",
        status("running", BEFORE),
        seen(unchanged=121, since_start=5000, at_start=None),
        121,
        "peer_failed",
        "went quiet (no heartbeat for 121s)",
    ),
]


@pytest.mark.parametrize(
    "peer_status, observed, waited, kind, message",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_judge(peer_status, observed, waited, kind, message):
    state = PeerState(WHAT, "rollout", peer_status, observed, waited, TIMEOUT, QUIET, START)
    verdict = judge(state)
    assert verdict.kind == kind
    assert message in verdict.message
    if kind == "wait":
        assert verdict == Verdict("wait")


def test_judge_names_no_peer_when_there_is_none():
    state = PeerState("policy 3", None, None, Seen(), 11, 10, QUIET, START)
    assert judge(state) == Verdict("timed_out", "timed out after 10s waiting for policy 3")


# ---------------------------------------------------------------- peers with another clock

QUIET_T, START_T, TIMEOUT_T = 12.0, 30.0, 60.0  # in ticks of the test's clock
SKEWS = [+600.0, -600.0]  # the peer's clock 10 minutes ahead of ours, and behind

# What the peer's status file holds at our start, and what the peer writes at each tick after
# (`skew`: its clock's offset from ours, written into `time`; never read).
Before = Callable[[Path, float], None]
Peer = Callable[[int, Path, float], None]


def no_file(path: Path, skew: float) -> None:
    pass


def silent(tick: int, path: Path, skew: float) -> None:
    pass


def left(state: str, age: float, **fields) -> Before:
    """A status an earlier process left `age` seconds before our start."""

    def before(path: Path, skew: float) -> None:
        peer_writes(path, state, "earlier", 9, skew, **fields)
        backdate(path, age)

    return before


def beating(boot: str = "b", since: int = 0, until: int = 10**9) -> Peer:
    """A process heartbeating every 3 ticks from tick `since` to tick `until`."""

    def peer(tick: int, path: Path, skew: float) -> None:
        if tick % 3 == 0 and since <= tick <= until:
            peer_writes(path, "running", boot, tick, skew)

    return peer


def fails_at(at: int, error: str) -> Peer:
    def peer(tick: int, path: Path, skew: float) -> None:
        if tick == at:
            peer_writes(path, "failed", "again", 1, skew, error=error)

    return peer


# (case, at our start, the peer after, the error that ends the wait, in its message, at tick)
CLOCK_CASES = [
    ("alive: waited for", left("running", 1), beating(), WaitTimeout, "timed out", 61),
    (
        "killed: quiet after quiet_after of our clock",
        no_file,
        beating(until=9),
        PeerFailed,
        "went quiet (no heartbeat for 13s)",
        9 + QUIET_T + 1,  # the last heartbeat, seen at tick 9, then quiet_after
    ),
    (
        "restarted slowly (rescheduled), just before peer_start_timeout",
        left("running", 300),
        beating("restarted", since=27),
        WaitTimeout,
        "timed out",
        61,
    ),
    (
        "not restarted: named after peer_start_timeout",
        left("running", 300),
        silent,
        PeerFailed,
        "has not run since we started 31s ago",
        START_T + 1,
    ),
    (
        "failed just before us: at once",
        left("failed", 10, error="bad reward file"),
        silent,
        PeerFailed,
        "bad reward file",
        1,
    ),
    (
        "failed long before us: an earlier run's",
        left("failed", FAILURE_GRACE_S + 30),
        silent,
        PeerFailed,
        "has not run since we started",
        START_T + 1,
    ),
    (
        "stopped for want of us, then failed on its own",
        left("failed", 3, peer_caused=True),
        fails_at(5, "bad config"),
        PeerFailed,
        "bad config",
        5,
    ),
    (
        "restarted alone, its peer done long ago: not coming",
        left("done", 100),
        silent,
        PeerFailed,
        "start the rollout worker too, with --resume",
        START_T + 1,
    ),
]


@pytest.mark.parametrize("skew", SKEWS, ids=["ahead", "behind"])
@pytest.mark.parametrize(
    "before, peer, error, message, tick",
    [case[1:] for case in CLOCK_CASES],
    ids=[case[0] for case in CLOCK_CASES],
)
def test_a_peer_with_another_clock(tmp_path, skew, before, peer, error, message, tick):
    """Wait (on the test's clock: one tick a poll) for something that never comes, the peer's
    status file set up at our start and rewritten by the peer each tick."""
    path = tmp_path / "status" / "rollout.json"
    path.parent.mkdir()
    before(path, skew)
    clock = Ticks()
    watch = PeerWatch(path.parent, clock=clock)

    def check() -> None:
        clock.now += 1
        peer(int(clock.now), path, skew)

    with pytest.raises((PeerFailed, WaitTimeout)) as err:
        wait_for(
            check, WHAT, timeout=TIMEOUT_T, peer="rollout", peer_status=path, watch=watch,
            quiet_after=QUIET_T, start_after=START_T, poll=0,
        )  # fmt: skip
    assert err.type is error and message in str(err.value)
    assert clock.now == tick


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
    """On the test's clock (one tick a look): it gives up at the first look past the timeout,
    however slowly a loaded machine runs the loop."""
    clock = Ticks()

    def check() -> None:
        clock.now += 1

    with pytest.raises(WaitTimeout) as err:
        wait_for(
            check, "policy step_000003", timeout=3, peer="grpo",
            watch=PeerWatch(None, clock=clock), poll=0,
        )  # fmt: skip
    assert clock.now == 4  # waited 4 > 3 ticks; at 3 it still waits
    assert "policy step_000003" in str(err.value)
    assert "grpo" in str(err.value)


# (state the peer wrote, written after our watch started?, its age at our start, outcome)
PEER_CASES = [
    ("failed", True, 0, PeerFailed),  # failed during this run: fail at once
    ("failed", False, 10, PeerFailed),  # failed at start-up, before we took our watch
    ("failed", False, 60, WaitTimeout),  # stale failure of an earlier run: ignored
    ("done", False, 10, WaitTimeout),  # the grace is for failures only
    ("running", True, 0, WaitTimeout),  # alive (a new heartbeat): keep waiting
    ("done", True, 0, PeerFailed),  # finished without publishing what we wait for
    ("done", False, 60, WaitTimeout),  # an earlier run's peer finished: ignored
]


@pytest.mark.parametrize("state, after, age, expected", PEER_CASES)
def test_wait_for_checks_the_peer_status(tmp_path, state, after, age, expected):
    peer_status = tmp_path / "status" / "rollout.json"
    peer_status.parent.mkdir()
    if not after:
        write_status(peer_status, state, error="CUDA out of memory")
        backdate(peer_status, age)
    watch = PeerWatch(peer_status.parent)
    if after:
        write_status(peer_status, state, error="CUDA out of memory")

    # a failure is told at once: a timeout far beyond what this test takes tells it from a
    # wait that ended at the timeout, without a bound on how fast a loaded machine runs
    timeout = 300 if expected is PeerFailed else 0.2
    start = time.monotonic()
    with pytest.raises(expected) as err:
        wait_for(
            lambda: None, "rollouts of step 5", timeout=timeout, peer="rollout",
            peer_status=peer_status, watch=watch, poll=0.02,
        )  # fmt: skip
    elapsed = time.monotonic() - start
    message = str(err.value)
    assert "rollouts of step 5" in message and "rollout" in message
    if expected is PeerFailed:
        assert elapsed < timeout / 2  # at once, not after the timeout
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
    watch = PeerWatch(tmp_path)
    write_status(peer_status, "running")  # one heartbeat since our start, then silence
    with pytest.raises(PeerFailed, match="went quiet"):
        wait_for(
            lambda: None, "policy 3", timeout=300, peer="grpo", peer_status=peer_status,
            watch=watch, quiet_after=0.1, poll=0.02,
        )  # fmt: skip
    # a quiet heartbeat from before we started is an earlier run's: wait (and time out) instead
    with pytest.raises(WaitTimeout):
        wait_for(
            lambda: None, "policy 3", timeout=0.2, peer="grpo", peer_status=peer_status,
            watch=PeerWatch(tmp_path), quiet_after=0.1, poll=0.02,
        )  # fmt: skip


def test_a_peer_killed_before_its_next_heartbeat_is_noticed_once_it_published(tmp_path):
    """The two-host rehearsal's flake: the rollout worker's heartbeat at our start was its last
    (killed within HEARTBEAT_S, a fast run). Its status never changes, yet it ran in our time:
    it published the rollouts we waited for. Its silence is then a kill, named after
    peer_quiet_timeout, not an earlier run's status waited on for peer_start_timeout."""
    peer_status = tmp_path / "rollout.json"
    write_status(peer_status, "running")  # the heartbeat at our start, and its last
    watch = PeerWatch(tmp_path)
    published = iter([None, None, "step 0"])
    assert wait_for(
        lambda: next(published), "rollouts step 0", timeout=300, peer="rollout",
        peer_status=peer_status, watch=watch, quiet_after=0.1, start_after=300, poll=0.02,
    ) == "step 0"  # fmt: skip
    with pytest.raises(PeerFailed, match="went quiet"):
        wait_for(
            lambda: None, "rollouts step 1", timeout=300, peer="rollout",
            peer_status=peer_status, watch=watch, quiet_after=0.1, start_after=300, poll=0.02,
        )  # fmt: skip
    # found at the first look, it may be an earlier run's: that says nothing of the peer
    watch = PeerWatch(tmp_path)
    assert wait_for(
        lambda: "step 0", "rollouts step 0", timeout=300, peer="rollout",
        peer_status=peer_status, watch=watch, quiet_after=0.1, poll=0.02,
    ) == "step 0"  # fmt: skip
    with pytest.raises(WaitTimeout):
        wait_for(
            lambda: None, "rollouts step 1", timeout=0.3, peer="rollout",
            peer_status=peer_status, watch=watch, quiet_after=0.1, start_after=300, poll=0.02,
        )  # fmt: skip


def test_wait_for_looks_once_more_when_the_peer_finished(tmp_path):
    peer_status = tmp_path / "grpo.json"
    watch = PeerWatch(tmp_path)
    write_status(peer_status, "done")
    calls = []

    def check():
        calls.append(1)
        return "published just before finishing" if len(calls) == 2 else None

    found = wait_for(
        check, "policy 3", timeout=5, peer="grpo", peer_status=peer_status, watch=watch, poll=0.01
    )
    assert found == "published just before finishing" and len(calls) == 2
