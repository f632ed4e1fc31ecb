"""Atomic publishing and markers: the rules every producer on the volume follows, and the check
every consumer makes before it uses what was published.

- A producer writes an artifact folder under a temporary name (`staged`), fsyncs it, renames it
  into place with `os.replace`, and writes `STABLE.json` (file sizes + checksums, row counts,
  metadata) last. A failed write removes the temporary folder; a full disk is one clear error.
- A consumer acts on `STABLE.json` only. Before it uses an artifact it checks the files against
  the marker (`verify`), once per publication with `cache=VERIFIED`.

How consumers wait for a marker, and watch their peer while they do, is in `shared/peers.py`;
how a stage claims its outputs in a run directory (`--resume`, `--clean`) in `shared/claims.py`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import STEP_RE, DataPaths, adapter_base, numbered_children

logger = logging.getLogger(__name__)

MARKER = "STABLE.json"


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


# ---------------------------------------------------------------- verification


MarkerKey = tuple[str, int, int]  # (resolved folder, marker inode, marker mtime in ns)


@dataclass
class VerifyCache:
    """Markers already verified, by publication: a folder used again (an SFT epoch under every
    LoRA policy, the data for every plan) is hashed once. The key is the marker file's identity,
    so a republished folder (a new marker file) is checked again. Consumers share VERIFIED, the
    cache of this process; a check that must read the bytes now passes no cache."""

    markers: dict[MarkerKey, dict[str, Any]] = field(default_factory=dict)


VERIFIED = VerifyCache()


def verify(folder: Path, fix: str = "", *, cache: VerifyCache | None = None) -> dict[str, Any]:
    """Check every file the marker lists against its size and checksum (with the algorithm the
    marker names for it); return the marker. A mismatch is a UserError naming the file, with
    `fix` (what the user can do about it) appended. With a `cache`, a publication it already
    holds is not checked again (its marker is returned as it was first read)."""
    if cache is None:
        return _check_files(folder, fix)
    key = _publication(folder)
    if key not in cache.markers:
        started = time.perf_counter()
        cache.markers[key] = _check_files(folder, fix)
        logger.debug("verified %s (%.2fs)", folder, time.perf_counter() - started)
    return cache.markers[key]


def verified_model(folder: Path, fix: str, cache: VerifyCache = VERIFIED) -> None:
    """Verify a published model folder before it is loaded, and the base a LoRA adapter names
    (an SFT epoch: verified once for all the adapters on it). Folders without a marker (a
    model the user brought) have nothing to check against."""
    if is_stable(folder):
        verify(folder, fix, cache=cache)
    base = adapter_base(folder)
    if base is not None and is_stable(base):
        verify(base, fix, cache=cache)


def verified_processed(data: DataPaths, cache: VerifyCache = VERIFIED) -> dict[str, Any]:
    """data/processed checked before a stage reads it (prep rebuilds what does not verify)."""
    if not is_stable(data.processed):
        raise UserError(
            f"{data.processed} is not published (no {MARKER}): run `proactive prep` first"
        )
    return verify(
        data.processed,
        "Run `proactive prep` again to rebuild it (in compose: `docker compose run --rm prep`)",
        cache=cache,
    )


def _publication(folder: Path) -> MarkerKey:
    """Which publication of `folder` is there now: its marker file's identity."""
    stat = (folder / MARKER).stat()
    return (str(Path(folder).resolve()), stat.st_ino, stat.st_mtime_ns)


class _Expected(NamedTuple):
    path: Path
    algorithm: str
    digest: str


def _check_files(folder: Path, fix: str) -> dict[str, Any]:
    """`verify` without a cache: sizes file by file, then the checksums of each algorithm in
    one parallel pass."""
    marker = read_marker(folder)
    todo = [_expected(folder, name, info, fix) for name, info in marker["files"].items()]
    for algorithm in {e.algorithm for e in todo}:
        group = [e for e in todo if e.algorithm == algorithm]
        digests = digest_files([e.path for e in group], algorithm)
        for expected, got in zip(group, digests, strict=True):
            if got != expected.digest:
                _damaged(expected.path, folder, f"{algorithm} checksum mismatch (same size)", fix)
    return marker


def _expected(folder: Path, name: str, info: dict[str, Any], fix: str) -> _Expected:
    """One marker entry, once its file is there at the published size (a file truncated while
    blake3 maps it would fault) and its checksum is of a kind we know."""
    path = folder / name
    if not path.is_file():
        _damaged(path, folder, "missing", fix)
    if path.stat().st_size != info["bytes"]:
        size = path.stat().st_size
        _damaged(path, folder, f"{size} bytes where {info['bytes']} were published", fix)
    algorithm = next((a for a in HASHES if a in info), None)
    if algorithm is None:
        _damaged(path, folder, f"no checksum of a known kind {HASHES} in {MARKER}", fix)
    return _Expected(path, algorithm, info[algorithm])


def _damaged(path: Path, folder: Path, what: str, fix: str) -> NoReturn:
    raise UserError(
        f"{path}: {what}; the published artifact {folder} was changed or damaged after "
        f"{MARKER} was written, so it is not used" + (f". {fix}" if fix else "")
    )
