"""Atomic publishing and waiting: the rules every producer and consumer on the volume follows.

- A producer writes an artifact folder under a temporary name (`staged`), fsyncs it, renames it
  into place with `os.replace`, and writes `STABLE.json` (file sizes + checksums, row counts,
  metadata) last. A failed write removes the temporary folder; a full disk is one clear error.
- A consumer acts on `STABLE.json` only, waits with a timeout and a heartbeat log line, and fails
  fast, naming the peer, when that peer's status file says it failed. Before it uses an artifact
  it checks the files against the marker (`verified`), once per publication.
- A stage refuses to start over outputs of an earlier run unless told `--resume` or `--clean`.
"""

from __future__ import annotations

import errno
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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import STEP_RE, DataPaths, adapter_base, numbered_children

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


# The checksum of new markers. blake3 hashes a file on every core: 14.6 GB/s on a 2-core machine
# against sha256's 1.9 GB/s (SHA extensions; 3.6 GB/s with a thread per shard), so verifying an
# 8B policy costs 2.5% of its handoff instead of 9-16% (scripts/bench_hash.py,
# docs/benchmarks.md). A marker names the algorithm per file: sha256 markers verify as they are.
HASH = "blake3"
HASHES = ("blake3", "sha256")


def file_digest(path: Path, algorithm: str = HASH) -> str:
    """Hex digest of a file's bytes with `algorithm` (one of HASHES)."""
    if algorithm == "blake3":
        from blake3 import blake3

        # Memory-mapped, so its threads hash the whole file at once (reading it through a
        # buffer halves the rate). Callers check the size first: a file truncated while mapped
        # would fault.
        return blake3(max_threads=blake3.AUTO).update_mmap(path).hexdigest()
    if algorithm != "sha256":
        raise UserError(f"{path}: unknown checksum algorithm {algorithm!r} (known: {HASHES})")
    digest = hashlib.sha256()
    buffer = bytearray(8 << 20)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while size := fh.readinto(buffer):
            digest.update(view[:size])  # releases the GIL: files hash in parallel threads
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def digest_files(paths: list[Path], algorithm: str = HASH) -> list[str]:
    """Digests of several files, hashed in parallel threads (both hashes release the GIL), so
    the shards of a policy take about the time of one pass over their bytes on all cores."""
    if len(paths) <= 1:
        return [file_digest(p, algorithm) for p in paths]
    with ThreadPoolExecutor(min(len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda p: file_digest(p, algorithm), paths))


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
    paths = sorted(p for p in staging.rglob("*") if p.is_file())
    for path in paths:
        # transformers writes weights 0600; other uids sharing the volume must read them
        path.chmod(0o644)
        _fsync_file(path)
    files = {
        str(path.relative_to(staging)): {"bytes": path.stat().st_size, HASH: digest}
        for path, digest in zip(paths, digest_files(paths), strict=True)
    }
    _fsync_dir(staging)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    _fsync_dir(final.parent)
    marker = {"files": files, "published_at": time.time(), **(meta or {})}
    write_json_atomic(final / MARKER, marker)
    return marker


# Writes the volume refuses for reasons the user fixes there, not in our code: one message each.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


@contextmanager
def staged(final: Path, meta: dict[str, Any] | None = None) -> Iterator[Path]:
    """Write an artifact into the staging folder this yields; leaving the block publishes it as
    `final` with `meta`, which the block may still fill in (row counts known after writing):

        with staged(paths.rollout(step), meta) as tmp:
            meta["rows"] = write_table(rows, ROLLOUTS, tmp / "rollouts.parquet")

    On any error the staging folder is removed (and `final`, if it was renamed into place but
    never got its marker); earlier publications stay as they were. A write the volume refuses
    (full, over quota, read-only, no permission) becomes one UserError naming the folder, the
    reason and the space left, instead of a library's traceback."""
    tmp: Path | None = None
    try:
        tmp = staging_dir(final)
        yield tmp
        publish_dir(tmp, final, meta)
    except BaseException as err:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if final.is_dir() and not is_stable(final):
            shutil.rmtree(final, ignore_errors=True)
        code = disk_errno(err)
        if code is None:
            raise
        raise UserError(
            f"could not write {final} (in {tmp or final.parent}): {os.strerror(code)} "
            f"({errno.errorcode[code]}); {_free_space(final)}. The unfinished folder was "
            "removed and earlier outputs are intact: free some space (or fix the folder's "
            "permissions) and run the command again"
        ) from None


def disk_errno(err: BaseException) -> int | None:
    """The DISK_ERRNOS code behind `err` or an exception it was raised from. Libraries written
    in Rust (safetensors, tokenizers) report it in their text only: "... (os error 28)"."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_ERRNOS:
            return seen.errno
        for found in re.findall(r"(?:os error |\[Errno )(\d+)", str(seen)):
            if int(found) in DISK_ERRNOS:
                return int(found)
        seen = seen.__cause__ or seen.__context__
    return None


def _free_space(path: Path) -> str:
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError as err:
        return f"free space unknown ({err.strerror})"
    return f"{usage.free / 1e6:,.1f} MB free of {usage.total / 1e6:,.1f} MB on {folder}"


def is_stable(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def published(parent: Path, pattern: re.Pattern[str] = STEP_RE) -> list[tuple[int, Path]]:
    """(number, folder) of the published (marked) step_/epoch_ folders, sorted by number."""
    return [(n, f) for n, f in numbered_children(parent, pattern) if is_stable(f)]


def read_marker(folder: Path) -> dict[str, Any]:
    return read_json(folder / MARKER)


def verify(folder: Path, fix: str = "") -> dict[str, Any]:
    """Check every file the marker lists against its size and checksum (with the algorithm the
    marker names for it); return the marker. A mismatch is a UserError naming the file, with
    `fix` (what the user can do about it) appended."""
    marker = read_marker(folder)
    todo: list[tuple[Path, str, str]] = []
    for name, info in marker["files"].items():
        path = folder / name
        if not path.is_file():
            _damaged(path, folder, "missing", fix)
        if path.stat().st_size != info["bytes"]:
            size = path.stat().st_size
            _damaged(path, folder, f"{size} bytes where {info['bytes']} were published", fix)
        algorithm = next((a for a in HASHES if a in info), None)
        if algorithm is None:
            _damaged(path, folder, f"no checksum of a known kind {HASHES} in {MARKER}", fix)
        todo.append((path, algorithm, info[algorithm]))
    for algorithm in {a for _, a, _ in todo}:
        group = [(p, want) for p, a, want in todo if a == algorithm]
        digests = digest_files([p for p, _ in group], algorithm)
        for (path, want), got in zip(group, digests, strict=True):
            if got != want:
                _damaged(path, folder, f"{algorithm} checksum mismatch (same size)", fix)
    return marker


def _damaged(path: Path, folder: Path, what: str, fix: str) -> NoReturn:
    raise UserError(
        f"{path}: {what}; the published artifact {folder} was changed or damaged after "
        f"{MARKER} was written, so it is not used" + (f". {fix}" if fix else "")
    )


# (folder, marker inode, marker mtime) -> marker, for what this process already verified
_verified: dict[tuple[str, int, int], dict[str, Any]] = {}


def verified(folder: Path, fix: str = "") -> dict[str, Any]:
    """`verify(folder)` the first time a consumer uses a publication, its marker afterwards: a
    folder used again (an SFT epoch under every LoRA policy, the data for every plan) is hashed
    once. A republished folder has a new marker file, so it is checked again."""
    stat = (folder / MARKER).stat()
    key = (str(Path(folder).resolve()), stat.st_ino, stat.st_mtime_ns)
    if key not in _verified:
        started = time.perf_counter()
        _verified[key] = verify(folder, fix)
        logger.debug("verified %s (%.2fs)", folder, time.perf_counter() - started)
    return _verified[key]


def verified_model(folder: Path, fix: str) -> None:
    """Verify a published model folder before it is loaded, and the base a LoRA adapter names
    (an SFT epoch: verified once for all the adapters on it). Folders without a marker (a
    model the user brought) have nothing to check against."""
    if is_stable(folder):
        verified(folder, fix)
    base = adapter_base(folder)
    if base is not None and is_stable(base):
        verified(base, fix)


def verified_processed(data: DataPaths) -> dict[str, Any]:
    """data/processed checked before a stage reads it (prep rebuilds what does not verify)."""
    if not is_stable(data.processed):
        raise UserError(
            f"{data.processed} is not published (no {MARKER}): run `proactive prep` first"
        )
    return verified(
        data.processed,
        "Run `proactive prep` again to rebuild it (in compose: `docker compose run --rm prep`)",
    )


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
            _record_failure(path, error=detail, peer_caused=_caused_by_peer(err))
        raise


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
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        _record_failure(path, error=detail, peer_caused=_caused_by_peer(err), **fields)
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
    heartbeat for `quiet_after` seconds (killed, e.g. out of memory); and when its status file
    has not been written since `started_after` for `quiet_after` seconds (a worker restarted
    alone after both died: its peer is not coming). A peer without a status file has never
    started in this run directory and is waited for up to `timeout`.
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
            caused_by_us = status.get("peer_caused") and not fresh
            if news and state == "failed" and not caused_by_us:
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
            if (
                started_after is not None
                and not fresh
                and time.time() - started_after > quiet_after
            ):
                # its status is from before our start (both workers died, one was restarted)
                raise PeerFailed(
                    f"the {peer} worker has not run since we started "
                    f"{time.time() - started_after:.0f}s ago (its status file says {state!r}, "
                    f"written {time.time() - beat:.0f}s ago) while we waited for {what}: "
                    f"start the {peer} worker too, with --resume to continue this run (the two "
                    f"must start within peer_quiet_timeout={quiet_after:.0f}s of each other)"
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
