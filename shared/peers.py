"""Peers and waiting: how a worker tells its peers how it is doing, and how a consumer decides,
from its peer's status file and the clock, whether to keep waiting for an artifact.

A worker writes `status/<name>.json` (`write_status`): `running` with a heartbeat every
HEARTBEAT_S seconds (`worker_status`), then `done`, or `failed` with the error (also for errors
before its config is read: `failure_reported`). A consumer polls for what it needs (`wait_for`)
and, each poll, hands what it read to `judge`, a pure function, so every rule of the protocol is
a row in a table of cases (tests/unit/test_peers.py) instead of a branch in a sleeping loop.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.publish import read_json, write_json_atomic

logger = logging.getLogger(__name__)

T = TypeVar("T")

HEARTBEAT_S = 10.0
# A peer's `failed` status counts if written up to this long before we started waiting: the two
# workers start together, and one may fail (a bad config or reward file) before the other has
# taken its start time. (`done` and heartbeats count only from our start.)
FAILURE_GRACE_S = 30.0


class WaitTimeout(UserError):
    """A peer did not publish what we waited for in time."""


class PeerFailed(UserError):
    """The peer we wait on wrote a `failed` status."""


# ---------------------------------------------------------------- a worker's own status


def write_status(path: Path, state: str, **fields: Any) -> None:
    """The worker's state for its peers: running (with heartbeat), done, or failed."""
    write_json_atomic(
        path,
        {
            "state": state,
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
    try:
        status = read_json(path)
    except (OSError, json.JSONDecodeError):
        return False
    mine = status.get("pid") == os.getpid() and status.get("host") == socket.gethostname()
    fresh = time.time() - status.get("time", 0) < 3 * HEARTBEAT_S
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


# ---------------------------------------------------------------- a peer's status, judged


@dataclass(frozen=True)
class PeerStatus:
    """What a peer's status file said at one poll. A file that could not be parsed (replaced
    while we read it, or a foreign file) reads as an empty one: no state, written at time 0."""

    state: str | None = None  # running, done or failed
    time: float = 0  # when it was written (wall clock)
    error: str = "no detail"
    peer_caused: bool = False  # it failed for want of us (we were dead or failed)

    @classmethod
    def from_json(cls, status: dict[str, Any]) -> PeerStatus:
        return cls(
            state=status.get("state"),
            time=status.get("time", 0),
            error=status.get("error", "no detail"),
            peer_caused=bool(status.get("peer_caused")),
        )


@dataclass(frozen=True)
class PeerState:
    """Everything one poll of `wait_for` knows: what it waits for, from whom, the peer's status
    (None: no status file watched, or the peer never wrote one), and the clock."""

    what: str
    peer: str | None
    status: PeerStatus | None
    started_after: float | None  # our start (wall clock); None: every status is news
    now: float  # wall clock, comparable with the status file's `time`
    waited: float  # seconds since the wait began (monotonic clock)
    timeout: float
    quiet_after: float


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
    """The peer protocol of docs/contract.md ("Waiting"), as a function of one poll's reading.

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
    """The verdict the peer's status forces, or None when it allows waiting on. A status written
    before our start is an earlier run's (both workers died and one was restarted), except for
    a failure (`_failure_counts`)."""
    since = state.started_after
    fresh = since is None or status.time >= since
    peer, what, quiet = state.peer, state.what, state.quiet_after
    if status.state == "failed" and _failure_counts(status, since, fresh):
        return Verdict(
            "peer_failed",
            f"the {peer} worker failed while we waited for {what}: {status.error} (see its logs)",
        )
    if fresh and status.state == "done":
        return Verdict("peer_done", f"the {peer} worker finished without publishing {what}")
    if fresh and status.state == "running" and state.now - status.time > quiet:
        return Verdict(
            "peer_failed",
            f"the {peer} worker went quiet (no heartbeat for {state.now - status.time:.0f}s) "
            f"while we waited for {what}; was it killed (out of memory?) - check its logs",
        )
    if since is not None and not fresh and state.now - since > quiet:
        return Verdict(
            "peer_failed",
            f"the {peer} worker has not run since we started "
            f"{state.now - since:.0f}s ago (its status file says {status.state!r}, "
            f"written {state.now - status.time:.0f}s ago) while we waited for {what}: "
            f"start the {peer} worker too, with --resume to continue this run (the two "
            f"must start within peer_quiet_timeout={quiet:.0f}s of each other)",
        )
    return None


def _failure_counts(status: PeerStatus, since: float | None, fresh: bool) -> bool:
    """A `failed` status stops us if written since our start, or up to FAILURE_GRACE_S before
    it (a peer starting beside us may fail before we took our start time) - unless that earlier
    failure was the peer stopping for want of us (`peer_caused`): restarted, we must not take
    it for news."""
    news = since is None or status.time >= since - FAILURE_GRACE_S
    caused_by_us = status.peer_caused and not fresh
    return news and not caused_by_us


def _timeout_message(state: PeerState) -> str:
    return f"timed out after {state.timeout:.0f}s waiting for {state.what}" + (
        f" from the {state.peer} worker; is it running? check its logs" if state.peer else ""
    )


# ---------------------------------------------------------------- the wait itself


def read_peer_status(path: Path | None) -> PeerStatus | None:
    """The peer's status as `judge` takes it: None without a file to read."""
    if path is None or not path.is_file():
        return None
    try:
        status = read_json(path)
    except (json.JSONDecodeError, OSError):
        # replaced between is_file() and the read (or a foreign file): look next poll
        status = {}
    return PeerStatus.from_json(status)


def wait_for(
    check: Callable[[], T | None],
    what: str,
    *,
    timeout: float,
    peer: str | None = None,
    peer_status: Path | None = None,
    started_after: float | None = None,
    heartbeat: float = 10.0,
    quiet_after: float = 120.0,
    poll: float = 0.2,
) -> T:
    """Poll `check` until it returns a value; log every `heartbeat` seconds what we wait for.

    With `peer_status`, fail at once, naming the peer, when that peer (as seen after
    `started_after`, so a stale file from an earlier run does not count) wrote `failed`,
    finished (`done`) without publishing what we wait for, or stopped refreshing its `running`
    heartbeat for `quiet_after` seconds (killed, e.g. out of memory); and when its status file
    has not been written since `started_after` for `quiet_after` seconds (a worker restarted
    alone after both died: its peer is not coming). A peer without a status file has never
    started in this run directory and is waited for up to `timeout`. The rules are `judge`'s.
    """
    start = time.monotonic()
    last_log = start
    while True:
        value = check()
        if value is not None:
            return value
        now = time.monotonic()
        state = PeerState(
            what=what,
            peer=peer,
            status=read_peer_status(peer_status),
            started_after=started_after,
            now=time.time(),
            waited=now - start,
            timeout=timeout,
            quiet_after=quiet_after,
        )
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
