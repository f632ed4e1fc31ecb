"""Atomic publishing and waiting: the rules every producer and consumer on the volume follows.

- A producer writes an artifact folder under a temporary name, fsyncs it, renames it into place
  with `os.replace`, and writes `STABLE.json` (file sizes + sha256, row counts, metadata) last.
- A consumer acts on `STABLE.json` only, waits with a timeout and a heartbeat log line, and fails
  fast, naming the peer, when that peer's status file says it failed.
- A stage refuses to start over outputs of an earlier run unless told `--resume` or `--clean`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import STEP_RE, numbered_children

logger = logging.getLogger(__name__)

MARKER = "STABLE.json"
T = TypeVar("T")


class WaitTimeout(UserError):
    """A peer did not publish what we waited for in time."""


class PeerFailed(UserError):
    """The peer we wait on wrote a `failed` status."""


def _unique() -> str:
    # containers sharing a volume are often all pid 1: the pid alone is not unique
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to `path` so readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{_unique()}")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def staging_dir(final: Path) -> Path:
    """A fresh, empty temporary folder beside `final` (same filesystem, so rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{_unique()}"
    tmp.mkdir()
    return tmp


def publish_dir(staging: Path, final: Path, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Move a finished `staging` folder to `final` and write its marker last.

    A leftover `final` without a marker (a crash between rename and marker) is replaced; a
    published one is replaced too, because callers decide about reuse before they produce.
    """
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        # transformers writes weights 0600; other uids sharing the volume must read them
        path.chmod(0o644)
        _fsync_file(path)
        files[str(path.relative_to(staging))] = {
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }
    _fsync_dir(staging)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    _fsync_dir(final.parent)
    marker = {"files": files, "published_at": time.time(), **(meta or {})}
    write_json_atomic(final / MARKER, marker)
    return marker


def is_stable(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def published(parent: Path, pattern: re.Pattern[str] = STEP_RE) -> list[tuple[int, Path]]:
    """(number, folder) of the published (marked) step_/epoch_ folders, sorted by number."""
    return [(n, f) for n, f in numbered_children(parent, pattern) if is_stable(f)]


def read_marker(folder: Path) -> dict[str, Any]:
    return read_json(folder / MARKER)


def verify(folder: Path) -> None:
    """Check every file the marker lists against its size and sha256."""
    marker = read_marker(folder)
    for name, info in marker["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != info["bytes"]:
            raise UserError(f"{path}: missing or wrong size; the artifact {folder} is damaged")
        if sha256_file(path) != info["sha256"]:
            raise UserError(f"{path}: checksum mismatch; the artifact {folder} is damaged")


def remove_unpublished(parent: Path) -> None:
    """Delete temporary folders and folders without a marker (leftovers of a crash)."""
    if not parent.is_dir():
        return
    for child in parent.iterdir():
        if child.name.startswith(".") and ".tmp-" in child.name:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        elif child.is_dir() and not is_stable(child) and child.name.startswith(("step_", "epoch_")):
            shutil.rmtree(child)


def claim_outputs(outputs: list[Path], stage: str, resume: bool, clean: bool) -> None:
    """Refuse to reuse a stage's outputs from an earlier run unless `--resume` or `--clean`."""
    if resume and clean:
        raise UserError("--resume and --clean exclude each other")
    used = [p for p in outputs if p.exists() and (p.is_file() or any(p.iterdir()))]
    if not used:
        return
    if clean:
        for path in used:
            logger.info("--clean: removing %s", path)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return
    if not resume:
        listing = ", ".join(str(p) for p in used)
        raise UserError(
            f"{stage}: the run directory already holds outputs ({listing}). "
            "Pass --resume to continue that run or --clean to delete them and start over "
            "(in compose: RUN_MODE=--resume or RUN_MODE=--clean)."
        )
    for path in used:
        if path.is_dir():
            remove_unpublished(path)


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


HEARTBEAT_S = 10.0
# A peer's `failed` status counts if written up to this long before we started waiting: the two
# workers start together, and one may fail (a bad config or reward file) before the other has
# taken its start time. (`done` and heartbeats count only from our start.)
FAILURE_GRACE_S = 30.0


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
            detail = "".join(traceback.format_exception_only(type(err), err)).strip()
            path.parent.mkdir(parents=True, exist_ok=True)
            write_status(path, "failed", error=detail)
        raise


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
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        write_status(path, "failed", error=detail, **fields)
        raise
    stop.set()
    thread.join()
    write_status(path, "done", **fields)


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
    heartbeat for `quiet_after` seconds (killed, e.g. out of memory).
    """
    start = time.monotonic()
    last_log = start
    while True:
        value = check()
        if value is not None:
            return value
        now = time.monotonic()
        if peer_status is not None and peer_status.is_file():
            try:
                status = read_json(peer_status)
            except (json.JSONDecodeError, OSError):
                # replaced between is_file() and the read (or a foreign file): look next poll
                status = {}
            beat = status.get("time", 0)
            fresh = started_after is None or beat >= started_after
            state = status.get("state")
            news = started_after is None or beat >= started_after - FAILURE_GRACE_S
            if news and state == "failed":
                raise PeerFailed(
                    f"the {peer} worker failed while we waited for {what}: "
                    f"{status.get('error', 'no detail')} (see its logs)"
                )
            if fresh and state == "done":
                value = check()  # it may have published just before finishing
                if value is not None:
                    return value
                raise PeerFailed(f"the {peer} worker finished without publishing {what}")
            if fresh and state == "running" and time.time() - beat > quiet_after:
                raise PeerFailed(
                    f"the {peer} worker went quiet (no heartbeat for {time.time() - beat:.0f}s) "
                    f"while we waited for {what}; was it killed (out of memory?) - check its logs"
                )
        if now - start > timeout:
            raise WaitTimeout(
                f"timed out after {timeout:.0f}s waiting for {what}"
                + (f" from the {peer} worker; is it running? check its logs" if peer else "")
            )
        if now - last_log >= heartbeat:
            logger.info("waiting for %s (%.0fs so far)", what, now - start)
            last_log = now
        time.sleep(poll)
