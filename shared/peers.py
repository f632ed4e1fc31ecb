"""Peers and waiting: how a worker tells its peers how it is doing, and how a consumer decides,
from its peer's status file and its own clock, whether to keep waiting for an artifact.

A worker writes `status/<name>.json` (`write_status`): `running` with a heartbeat every
HEARTBEAT_S seconds (`worker_status`), then `done`, or `failed` with the error (also for errors
before its config is read: `failure_reported`). Every write carries the writer's `boot` (random,
fixed for the process) and `seq` (one more each write): the heartbeat a consumer watches. A
consumer takes a `PeerWatch` when it starts (what the status files held then) and polls for what
it needs (`wait_for`); each poll, the watch notes, on the consumer's own time.monotonic(), when
the peer's (boot, seq) last changed, and `judge`, a pure function of that reading and history,
decides, so every rule of the protocol is a row in a table of cases (tests/unit/test_peers.py)
instead of a branch in a sleeping loop. No rule compares the peer's clock with ours: two hosts'
clocks may differ by minutes (docs/contract.md, "Waiting").
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.publish import read_json, write_json_atomic

logger = logging.getLogger(__name__)

T = TypeVar("T")

HEARTBEAT_S = 10.0
# Seconds between two looks of a wait. Every policy and every step's rollouts pass through a
# wait, twice a step on the path of an on-policy step, so a look costs half this on average
# each time; a look (a stat and the peer's status file read) takes about 90 us on a 2-core EPYC
# (2026-12-05): 0.2% of a core at 0.05 s, which was 0.2 s and cost about 0.1 s a handoff.
POLL_S = 0.05


# The two peer timeouts of grpo's and rollout's configs, defined once: each worker waits for the
# other with the same meaning.
def peer_quiet_timeout_field() -> Any:
    return Field(
        120.0,
        gt=HEARTBEAT_S,
        description="Seconds without a new heartbeat from a running peer worker (it refreshes its "
        f"status every {HEARTBEAT_S:.0f} s while it runs), counted on this worker's own clock, "
        "before it is taken for dead (killed, out of memory) and this worker stops, naming it.",
    )


def peer_start_timeout_field() -> Any:
    return Field(
        900.0,
        gt=HEARTBEAT_S,
        le=86400.0,
        description="Seconds to wait for a peer worker that has not (re)started since this one "
        "started (its status file unchanged: being rescheduled, pulling a large image after a "
        "restart, or not restarted at all), counted on this worker's own clock, before this "
        "worker stops, naming it. A peer without a status file is waited for up to wait_timeout.",
    )


# A peer's `failed` status counts if written up to this long before we started: the two workers
# start together, and one may fail (a bad config or reward file) before the other has taken its
# baseline. Its age is read from file mtimes, both stamped by the volume (`file_ages`).
FAILURE_GRACE_S = 30.0

Beat = tuple[str, int]  # (boot, seq): differs with every write of a status file
Clock = Callable[[], float]


class WaitTimeout(UserError):
    """A peer did not publish what we waited for in time."""


class PeerFailed(UserError):
    """The peer we wait on wrote a `failed` status (or went quiet, or is not coming)."""


# ---------------------------------------------------------------- a worker's own status

_boots: dict[int, str] = {}  # by pid: a forked child is another process, with its own boot
_seq = itertools.count(1)
_seq_lock = threading.Lock()


def boot_id() -> str:
    """This process's random id: a restarted worker (same host, maybe same pid) differs."""
    return _boots.setdefault(os.getpid(), uuid.uuid4().hex[:16])


def _next_seq() -> int:
    with _seq_lock:  # the heartbeat thread and the worker's own writes
        return next(_seq)


def write_status(path: Path, state: str, **fields: Any) -> None:
    """The worker's state for its peers: running (with heartbeat), done, or failed. `boot` and
    `seq` are what peers judge; `time`, `host` and `pid` are for people reading the file."""
    write_json_atomic(
        path,
        {
            "state": state,
            "boot": boot_id(),
            "seq": _next_seq(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": time.time(),
            **fields,
        },
    )


@contextmanager
def failure_reported(path: Path) -> Iterator[None]:
    """Around a worker's whole command, from before it reads its config: an error is written to
    its status file as `failed`, which a peer waiting on it sees at its next poll, so a worker
    that dies at start-up (bad config, reward file, model folder, a refused run directory) does
    not leave its peer waiting for its timeout. A status file that another live worker of the
    same kind is heartbeating is left alone: a second, refused instance must not stop it."""
    try:
        yield
    except Exception as err:
        if not _owned_by_another_live_worker(path):
            _record_failure(path, error=_describe(err), peer_caused=_caused_by_peer(err))
        raise


def _describe(err: BaseException) -> str:
    """The error as its status file carries it: the exception's last line, no traceback."""
    return "".join(traceback.format_exception_only(type(err), err)).strip()


def _record_failure(path: Path, **fields: Any) -> None:
    """Write a `failed` status if the volume lets us: on a full or read-only volume the error
    being reported is the one the user must see, not a second one from writing the status."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_status(path, "failed", **fields)
    except OSError as err:
        logger.warning("could not record the failure in %s: %s", path, err)


def _caused_by_peer(err: BaseException) -> bool:
    """A worker stopped because its peer was dead or failed: that peer, restarted soon after,
    must not take this failure for one of a worker starting beside it (FAILURE_GRACE_S)."""
    return isinstance(err, (PeerFailed, WaitTimeout))


def _owned_by_another_live_worker(path: Path) -> bool:
    """A `running` status of another process written within 3 heartbeats, by the volume's
    clock (the other instance may run on another host, whose clock we do not trust)."""
    try:
        status = read_json(path)
    except (OSError, json.JSONDecodeError):
        return False
    mine = status.get("boot") == boot_id()
    age = file_ages([path]).get(path)
    fresh = age is not None and age < 3 * HEARTBEAT_S
    return status.get("state") == "running" and fresh and not mine


@contextmanager
def worker_status(path: Path, **fields: Any) -> Iterator[None]:
    """Mark the worker running while the block runs, refreshing the status every HEARTBEAT_S
    seconds from a background thread (so a killed worker goes visibly quiet), then done or
    failed (and re-raise)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            write_status(path, "running", **fields)

    write_status(path, "running", **fields)
    thread = threading.Thread(target=beat, name="status-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    except BaseException as err:
        stop.set()
        thread.join()
        _record_failure(path, error=_describe(err), peer_caused=_caused_by_peer(err), **fields)
        raise
    stop.set()
    thread.join()
    write_status(path, "done", **fields)


def file_ages(paths: list[Path]) -> dict[Path, float]:
    """Seconds since each file was last written, by the volume's clock: its mtime against that of
    a probe file we create beside it, both stamped by the same file system, so neither host's
    clock enters. (A file system that stamps mtimes with the writing client's clock, as some
    FUSE mounts of object stores do, brings that client's clock back in.) Files that cannot be
    read are left out; all of them, when the probe cannot be written."""
    if not paths:
        return {}
    folder = paths[0].parent
    probe = folder / f".probe-{boot_id()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        now = probe.stat().st_mtime
        probe.unlink()
    except OSError as err:
        logger.warning("could not write a probe file in %s: %s", folder, err)
        return {}
    ages = {}
    for path in paths:
        try:
            ages[path] = now - path.stat().st_mtime
        except OSError:
            continue
    return ages


# ---------------------------------------------------------------- a peer's status, observed


@dataclass(frozen=True)
class PeerStatus:
    """What a peer's status file said at one poll. A file that could not be parsed (replaced
    while we read it, or a foreign file) reads as an empty one: no state and no heartbeat. The
    writer's `time` is not kept: it is another host's clock, never compared with ours."""

    state: str | None = None  # running, done or failed
    beat: Beat | None = None  # (boot, seq); None: no heartbeat in the file
    error: str = "no detail"
    peer_caused: bool = False  # it failed for want of us (we were dead or failed)

    @classmethod
    def from_json(cls, status: dict[str, Any]) -> PeerStatus:
        boot, seq = status.get("boot"), status.get("seq")
        beat = (boot, seq) if isinstance(boot, str) and type(seq) is int else None
        return cls(
            state=status.get("state"),
            beat=beat,
            error=status.get("error", "no detail"),
            peer_caused=bool(status.get("peer_caused")),
        )


@dataclass(frozen=True)
class Seen:
    """What we observed of one status file, all on our own monotonic clock."""

    at_start: Beat | None = None  # its heartbeat when we started (None: no file, or none in it)
    age_at_start: float | None = None  # how old it was then (volume's clock); None: unknown
    unchanged_for: float = 0.0  # seconds since we first saw its current heartbeat
    since_start: float = 0.0  # seconds since we started
    # it published something we waited for while we watched: it ran since our start, even if
    # its heartbeat has not ticked since (HEARTBEAT_S apart, a fast run can fit between two)
    published: bool = False


def is_fresh(status: PeerStatus, seen: Seen) -> bool:
    """Running in our time: its heartbeat differs from the one it had when we started, or it
    published what we waited for while we watched."""
    return status.beat is not None and (status.beat != seen.at_start or seen.published)


def read_peer_status(path: Path | None) -> PeerStatus | None:
    """The peer's status as `judge` takes it: None without a file to read."""
    if path is None or not path.is_file():
        return None
    try:
        status = read_json(path)
    except (json.JSONDecodeError, OSError):
        # replaced between is_file() and the read (or a foreign file): look next poll
        status = {}
    return PeerStatus.from_json(status if isinstance(status, dict) else {})


@dataclass(frozen=True)
class _Start:
    beat: Beat | None
    age: float | None


class PeerWatch:
    """A worker's view of its peers' status files: the baseline taken once, when it starts
    (every status file in `status_dir`, so workers named later, such as the plan's rollout
    workers, are covered), and when each file's heartbeat last changed, on `clock`. One watch
    lives for the whole worker, across waits, so a peer's silence is counted across them too.
    `status_dir` None: no baseline, every status is news (a wait without a start to tell)."""

    def __init__(self, status_dir: Path | None, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self._start = _baseline(status_dir)
        self._last: dict[Path, tuple[Beat, float]] = {
            path: (start.beat, self.started)
            for path, start in self._start.items()
            if start.beat is not None
        }
        self._published: set[Path] = set()

    def published(self, path: Path) -> None:
        """The peer writing `path` published, while we watched, what we waited for: it has run
        since our start (a clock-free fact: the artifact was not there, then it was)."""
        self._published.add(path.absolute())

    def look(self, path: Path | None) -> tuple[PeerStatus | None, Seen]:
        """Read the peer's status once and note a new heartbeat (the first time it is seen)."""
        status = read_peer_status(path)
        now = self.clock()
        key = path.absolute() if path is not None else None
        if key is not None and status is not None and status.beat is not None:
            last = self._last.get(key)
            if last is None or last[0] != status.beat:
                self._last[key] = (status.beat, now)
        first_seen = self._last[key][1] if key in self._last else now
        start = self._start.get(key) if key is not None else None
        seen = Seen(
            at_start=start.beat if start else None,
            age_at_start=start.age if start else None,
            unchanged_for=now - first_seen,
            since_start=now - self.started,
            published=key in self._published,
        )
        return status, seen

    def news(self, path: Path) -> PeerStatus | None:
        """The peer's status if it was written since we started, else None."""
        status, seen = self.look(path)
        return status if status is not None and is_fresh(status, seen) else None


def _baseline(status_dir: Path | None) -> dict[Path, _Start]:
    """Each status file's heartbeat now and, for a failure that may be recent enough to count
    (FAILURE_GRACE_S), its age by the volume's clock (only then: it costs a probe file)."""
    if status_dir is None or not status_dir.is_dir():
        return {}
    statuses = {
        path.absolute(): read_peer_status(path) or PeerStatus()
        for path in sorted(status_dir.glob("*.json"))
    }
    failed = [p for p, s in statuses.items() if s.state == "failed" and not s.peer_caused]
    ages = file_ages(failed)
    return {path: _Start(s.beat, ages.get(path)) for path, s in statuses.items()}


# ---------------------------------------------------------------- a peer's status, judged


@dataclass(frozen=True)
class PeerState:
    """Everything one poll of `wait_for` knows: what it waits for, from whom, the peer's status
    (None: no status file watched, or the peer never wrote one), what we observed of it, and
    the limits."""

    what: str
    peer: str | None
    status: PeerStatus | None
    seen: Seen
    waited: float  # seconds since the wait began (our monotonic clock)
    timeout: float
    quiet_after: float  # peer_quiet_timeout
    start_after: float  # peer_start_timeout


VerdictKind = Literal["wait", "peer_done", "peer_failed", "timed_out"]


@dataclass(frozen=True)
class Verdict:
    """What to do after a poll. `peer_done`: the peer finished, so look for the artifact once
    more (it may have published just before finishing) and fail with `message` if it is not
    there. `peer_failed` and `timed_out` carry the error's message."""

    kind: VerdictKind
    message: str = ""


KEEP_WAITING = Verdict("wait")


def judge(state: PeerState) -> Verdict:
    """The peer protocol of docs/contract.md ("Waiting"), as a function of one poll's reading
    and what we observed before it.

    The peer's status rules first (a failed, finished, quiet or absent peer is named at once),
    then the timeout; a peer without a status file has never started in this run directory and
    is waited for up to the timeout."""
    if state.status is not None:
        verdict = _judge_peer(state, state.status)
        if verdict is not None:
            return verdict
    if state.waited > state.timeout:
        return Verdict("timed_out", _timeout_message(state))
    return KEEP_WAITING


def _judge_peer(state: PeerState, status: PeerStatus) -> Verdict | None:
    """The verdict the peer's status forces, or None when it allows waiting on. A status not
    written since our start is an earlier run's (both workers died and one was restarted, or
    the peer is being rescheduled), except for a recent failure (`_failure_counts`)."""
    seen, peer, what = state.seen, state.peer, state.what
    fresh = is_fresh(status, seen)
    if status.state == "failed" and _failure_counts(status, seen, fresh):
        return Verdict(
            "peer_failed",
            f"the {peer} worker failed while we waited for {what}: {status.error} (see its logs)",
        )
    if fresh and status.state == "done":
        return Verdict("peer_done", f"the {peer} worker finished without publishing {what}")
    if fresh and status.state == "running" and seen.unchanged_for > state.quiet_after:
        return Verdict(
            "peer_failed",
            f"the {peer} worker went quiet (no heartbeat for {seen.unchanged_for:.0f}s) "
            f"while we waited for {what}; was it killed (out of memory?) - check its logs",
        )
    if not fresh and seen.since_start > state.start_after:
        return Verdict(
            "peer_failed",
            f"the {peer} worker has not run since we started {seen.since_start:.0f}s ago (its "
            f"status file still says {status.state!r}, as when we started) while we waited for "
            f"{what}: start the {peer} worker too, with --resume to continue this run (the two "
            f"must start within peer_start_timeout={state.start_after:.0f}s of each other)",
        )
    return None


def _failure_counts(status: PeerStatus, seen: Seen, fresh: bool) -> bool:
    """A `failed` status stops us if written since our start, or up to FAILURE_GRACE_S before
    it (a peer starting beside us may fail before we took our baseline) - unless that earlier
    failure was the peer stopping for want of us (`peer_caused`): restarted, we must not take
    it for news. An age we could not read counts as old."""
    if fresh:
        return True
    age = seen.age_at_start
    return not status.peer_caused and age is not None and age <= FAILURE_GRACE_S


def _timeout_message(state: PeerState) -> str:
    return f"timed out after {state.timeout:.0f}s waiting for {state.what}" + (
        f" from the {state.peer} worker; is it running? check its logs" if state.peer else ""
    )


# ---------------------------------------------------------------- the wait itself


def wait_for(
    check: Callable[[], T | None],
    what: str,
    *,
    timeout: float,
    peer: str | None = None,
    peer_status: Path | None = None,
    watch: PeerWatch | None = None,
    heartbeat: float = 10.0,
    quiet_after: float = 120.0,
    start_after: float = 900.0,
    poll: float = POLL_S,
) -> T:
    """Poll `check` until it returns a value; log every `heartbeat` seconds what we wait for.

    With `peer_status`, fail at once, naming the peer, when that peer (as seen since `watch`
    started, so a stale file from an earlier run does not count) wrote `failed`, finished
    (`done`) without publishing what we wait for, or has not changed its `running` heartbeat for
    `quiet_after` seconds of our clock (killed, e.g. out of memory); and when its status file
    has not changed since `watch` started for `start_after` seconds (a worker restarted alone:
    its peer is not coming). A peer without a status file has never started in this run
    directory and is waited for up to `timeout`. The rules are `judge`'s; all durations are
    read on `watch.clock` (time.monotonic), never the peer's.
    """
    watch = watch if watch is not None else PeerWatch(None)
    start = watch.clock()
    last_log = start
    first = True
    while True:
        value = check()
        if value is not None:
            if not first and peer_status is not None:
                watch.published(peer_status)  # it appeared while we looked: the peer ran
            return value
        first = False
        status, seen = watch.look(peer_status)
        now = watch.clock()
        state = PeerState(what, peer, status, seen, now - start, timeout, quiet_after, start_after)
        verdict = judge(state)
        if verdict.kind != "wait":
            return _conclude(verdict, check)
        if now - last_log >= heartbeat:
            logger.info("waiting for %s (%.0fs so far)", what, now - start)
            last_log = now
        time.sleep(poll)


def _conclude(verdict: Verdict, check: Callable[[], T | None]) -> T:
    """Act on a verdict that ends the wait: one last look when the peer finished, else raise."""
    if verdict.kind == "peer_done":
        value = check()  # it may have published just before finishing
        if value is not None:
            return value
    if verdict.kind == "timed_out":
        raise WaitTimeout(verdict.message)
    raise PeerFailed(verdict.message)
