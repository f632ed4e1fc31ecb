"""Atomic publishing, markers and their verification (shared/publish.py)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from blake3 import blake3

from proactive_rl.shared import publish
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import DataPaths
from proactive_rl.shared.publish import (
    MARKER,
    VERIFIED,
    VerifyCache,
    is_stable,
    publish_dir,
    read_json,
    read_marker,
    staging_dir,
    verified_model,
    verified_processed,
    verify,
    write_json_atomic,
)

# Relative path -> content of the artifact the publish tests produce (nested folders on purpose).
FILES = {
    "config.json": b'{"hidden_size": 8}\n',
    "model.safetensors": bytes(range(256)) * 40,
    "sub/tokenizer.json": "ünïcode ✓".encode(),
    "sub/deeper/empty.bin": b"",
}


def make_staging(final: Path, files: dict[str, bytes] = FILES) -> Path:
    staging = staging_dir(final)
    for name, data in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    return staging


def published(final: Path, files: dict[str, bytes] = FILES, meta: dict | None = None) -> dict:
    return publish_dir(make_staging(final, files), final, meta)


# ---------------------------------------------------------------- publish_dir and verify


def test_publish_dir_moves_staging_and_lists_every_file(tmp_path):
    final = tmp_path / "rollouts" / "step_000001"
    staging = make_staging(final)

    marker = publish_dir(staging, final, {"rows": 32, "plan_id": "abc"})

    assert not staging.exists()
    assert is_stable(final)
    assert read_marker(final) == marker
    assert marker["rows"] == 32 and marker["plan_id"] == "abc"
    assert isinstance(marker["published_at"], float)
    expected = {
        name: {"bytes": len(data), "blake3": blake3(data).hexdigest()}
        for name, data in FILES.items()
    }
    assert marker["files"] == expected
    for name, data in FILES.items():
        assert (final / name).read_bytes() == data
    # nothing but the artifact and its marker: no temporary names left beside or inside it
    assert sorted(p.name for p in final.parent.iterdir()) == ["step_000001"]
    assert {str(p.relative_to(final)) for p in final.rglob("*") if p.is_file()} == {
        *FILES,
        MARKER,
    }


def test_publish_dir_writes_marker_last(tmp_path, monkeypatch):
    final = tmp_path / "step_000000"
    staging = make_staging(final)
    real_replace = os.replace
    seen = []

    def spying_replace(src, dst):
        # what a reader polling for the marker could observe at the moment it appears
        if Path(dst) == final / MARKER:
            seen.append(
                {
                    "staging_gone": not staging.exists(),
                    "files_in_place": all((final / n).is_file() for n in FILES),
                }
            )
        real_replace(src, dst)

    monkeypatch.setattr(publish.os, "replace", spying_replace)
    publish_dir(staging, final)

    assert seen == [{"staging_gone": True, "files_in_place": True}]


def test_published_files_are_world_readable(tmp_path):
    final = tmp_path / "policy"
    staging = make_staging(final)
    (staging / "model.safetensors").chmod(0o600)  # as transformers writes weights
    publish_dir(staging, final)
    assert (final / "model.safetensors").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "fail_call, final_exists",
    [
        (1, False),  # rename staging -> final fails: nothing appears
        (2, True),  # marker write fails after the rename: a folder appears, never marked stable
    ],
)
def test_failure_while_publishing_leaves_no_marker(tmp_path, monkeypatch, fail_call, final_exists):
    final = tmp_path / "step_000004"
    staging = make_staging(final)
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == fail_call:
            raise OSError("disk went away")
        real_replace(src, dst)

    monkeypatch.setattr(publish.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk went away"):
        publish_dir(staging, final, {"rows": 1})

    assert final.exists() is final_exists
    assert not is_stable(final)
    assert not (final / MARKER).exists()
    if not final_exists:
        assert (staging / "config.json").is_file()  # the produced data is still there


def test_leftover_final_without_marker_is_replaced(tmp_path):
    final = tmp_path / "step_000002"
    final.mkdir()
    (final / "stale.bin").write_bytes(b"from a crashed run")
    assert not is_stable(final)

    marker = published(final)

    assert not (final / "stale.bin").exists()
    assert set(marker["files"]) == set(FILES)
    verify(final)


def test_verify_passes_on_a_fresh_artifact(tmp_path):
    final = tmp_path / "a"
    published(final)
    verify(final)  # raises on any problem


def _flip_first_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, different content


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def _append(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"x")


@pytest.mark.parametrize(
    "damage, name, message",
    [
        (_flip_first_byte, "model.safetensors", "checksum mismatch"),
        (_flip_first_byte, "sub/tokenizer.json", "checksum mismatch"),
        (_truncate, "model.safetensors", "10239 bytes where 10240 were published"),
        (_append, "sub/deeper/empty.bin", "1 bytes where 0 were published"),
        (Path.unlink, "config.json", "missing"),
    ],
)
def test_verify_detects_damage(tmp_path, damage, name, message):
    final = tmp_path / "a"
    published(final)
    damage(final / name)
    with pytest.raises(UserError, match=message) as err:
        verify(final)
    assert name.split("/")[-1] in str(err.value)


def _sha256_marker(final: Path) -> None:
    """Rewrite the marker as markers were written before blake3: sha256 per file."""
    marker = read_marker(final)
    for name, info in marker["files"].items():
        del info["blake3"]
        info["sha256"] = hashlib.sha256((final / name).read_bytes()).hexdigest()
    write_json_atomic(final / MARKER, marker)


def test_verify_reads_markers_written_with_sha256(tmp_path):
    final = tmp_path / "old"
    published(final)
    _sha256_marker(final)
    verify(final)
    _flip_first_byte(final / "model.safetensors")
    with pytest.raises(UserError, match="model.safetensors: sha256 checksum mismatch"):
        verify(final)


def test_verify_refuses_a_checksum_of_an_unknown_kind(tmp_path):
    final = tmp_path / "a"
    published(final)
    marker = read_marker(final)
    marker["files"]["config.json"] = {"bytes": len(FILES["config.json"]), "md5": "0" * 32}
    write_json_atomic(final / MARKER, marker)
    with pytest.raises(UserError, match="config.json: no checksum of a known kind"):
        verify(final)


def test_verify_says_what_to_do(tmp_path):
    final = tmp_path / "processed"
    published(final)
    _truncate(final / "model.safetensors")
    with pytest.raises(UserError, match=r"so it is not used\. Rerun `proactive prep`$"):
        verify(final, fix="Rerun `proactive prep`")


def test_a_cache_hashes_a_publication_once_and_a_republication_again(tmp_path):
    final = tmp_path / "sft" / "epoch_000001"
    published(final)
    cache = VerifyCache()
    first = verify(final, cache=cache)
    assert first["files"].keys() == FILES.keys()
    # damage after the first check is not looked for again: the same marker was verified
    _flip_first_byte(final / "model.safetensors")
    assert verify(final, cache=cache) is first
    # ... except without the cache, or with another one
    with pytest.raises(UserError, match="checksum mismatch"):
        verify(final)
    with pytest.raises(UserError, match="checksum mismatch"):
        verify(final, cache=VerifyCache())
    # a new publication of the folder (a new marker file) is checked again
    published(final, meta={"epoch": 1})
    _flip_first_byte(final / "model.safetensors")
    with pytest.raises(UserError, match="checksum mismatch"):
        verify(final, cache=cache)


def test_a_cache_knows_a_folder_by_its_real_path(tmp_path):
    final = tmp_path / "policies" / "step_000001"
    published(final)
    cache = VerifyCache()
    verify(final, cache=cache)
    _flip_first_byte(final / "model.safetensors")
    verify(tmp_path / "policies" / ".." / "policies" / "step_000001", cache=cache)
    assert len(cache.markers) == 1


def test_a_damaged_publication_is_not_cached(tmp_path):
    final = tmp_path / "a"
    published(final)
    _truncate(final / "model.safetensors")
    cache = VerifyCache()
    for _ in range(2):
        with pytest.raises(UserError, match="10239 bytes"):
            verify(final, cache=cache)
    assert cache.markers == {}


def test_verify_of_an_unpublished_folder_is_an_os_error(tmp_path):
    (tmp_path / "a").mkdir()
    for cache in (None, VerifyCache()):
        with pytest.raises(FileNotFoundError):
            verify(tmp_path / "a", cache=cache)


def _adapter(folder: Path, base: str) -> None:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))


def test_verified_model_checks_a_published_model_and_its_published_base(tmp_path):
    base = tmp_path / "sft" / "epoch_000001"
    published(base)
    policy = tmp_path / "policies" / "step_000001"
    _adapter(policy, "../../sft/epoch_000001")
    cache = VerifyCache()
    verified_model(policy, "fix it", cache=cache)  # the adapter is unpublished: its base only
    assert [key[0] for key in cache.markers] == [str(base.resolve())]
    _flip_first_byte(base / "model.safetensors")
    verified_model(policy, "fix it", cache=cache)  # the base was verified once for all adapters
    with pytest.raises(UserError, match=r"checksum mismatch.*\. fix it$"):
        verified_model(policy, "fix it", cache=VerifyCache())
    verified_model(tmp_path / "brought", "fix it", cache=cache)  # the user's own: nothing to check


def test_verified_processed_needs_a_publication_and_says_how_to_rebuild(tmp_path):
    data = DataPaths(tmp_path / "data")
    with pytest.raises(UserError, match=r"not published .* run `proactive prep` first"):
        verified_processed(data, cache=VerifyCache())
    published(data.processed)
    assert verified_processed(data, cache=VerifyCache())["files"].keys() == FILES.keys()
    _truncate(data.processed / "model.safetensors")
    with pytest.raises(UserError, match=r"Run `proactive prep` again to rebuild it"):
        verified_processed(data, cache=VerifyCache())


def test_consumers_share_the_cache_of_the_process(tmp_path, monkeypatch):
    monkeypatch.setattr(VERIFIED, "markers", {})
    data = DataPaths(tmp_path / "data")
    published(data.processed)
    verified_processed(data)
    _flip_first_byte(data.processed / "model.safetensors")
    verified_processed(data)  # hashed once per publication and process
    assert len(VERIFIED.markers) == 1


def test_digest_files_in_parallel_matches_one_by_one(tmp_path):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"shard{i}")
        paths[-1].write_bytes(os.urandom(1 << 16) * (i + 1))
    for algorithm in publish.HASHES:
        one_by_one = [publish.file_digest(p, algorithm) for p in paths]
        assert publish.digest_files(paths, algorithm) == one_by_one
    assert (
        publish.file_digest(paths[0], "sha256") == hashlib.sha256(paths[0].read_bytes()).hexdigest()
    )
    assert publish.file_digest(paths[0]) == blake3(paths[0].read_bytes()).hexdigest()


# ---------------------------------------------------------------- staged: publish or clean up


def test_staged_publishes_with_meta_filled_in_the_block(tmp_path):
    final = tmp_path / "rollouts" / "step_000003"
    meta = {"plan_id": "p"}
    with publish.staged(final, meta) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".step_000003.tmp-")
        (tmp / "rollouts.parquet").write_bytes(b"rows")
        meta["rows"] = 4  # known only once written
    marker = verify(final)
    assert marker["plan_id"] == "p" and marker["rows"] == 4
    assert sorted(p.name for p in final.parent.iterdir()) == ["step_000003"]


def test_staged_removes_the_staging_folder_and_reraises_other_errors(tmp_path):
    final = tmp_path / "policies" / "step_000001"
    published(final, meta={"version": 1})
    with pytest.raises(ValueError, match="bad weights"):
        with publish.staged(final, {"version": 1}) as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            raise ValueError("bad weights")
    assert sorted(p.name for p in final.parent.iterdir()) == ["step_000001"]
    assert read_marker(final)["version"] == 1
    verify(final)  # the earlier publication is intact


def test_a_full_volume_is_one_clear_error_and_leaves_no_staging_folder(small_volume):
    from tests.conftest import fill

    earlier = small_volume / "sft" / "epoch_000001"
    published(earlier)
    fill(small_volume, leave=64 << 10)
    final = small_volume / "sft" / "epoch_000002"
    with pytest.raises(UserError) as err:
        with publish.staged(final, {"epoch": 2}) as tmp:
            (tmp / "model.safetensors").write_bytes(os.urandom(1 << 20))
    message = str(err.value)
    assert message.startswith(f"could not write {final} (in {final.parent}/.epoch_000002.tmp-")
    assert "No space left on device (ENOSPC)" in message
    assert " MB free of 2.1 MB on " in message and "earlier outputs are intact" in message
    assert sorted(p.name for p in (small_volume / "sft").iterdir()) == ["epoch_000001"]
    verify(earlier)


def test_a_read_only_volume_is_one_clear_error(small_volume):
    published(small_volume / "step_000000")
    subprocess.run(["mount", "-o", "remount,ro", str(small_volume)], check=True)
    with pytest.raises(UserError, match=r"Read-only file system \(EROFS\)"):
        with publish.staged(small_volume / "step_000001"):
            raise AssertionError("not reached: the staging folder cannot be made")
    verify(small_volume / "step_000000")


@pytest.mark.parametrize(
    "err, expected",
    [
        (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), errno.EDQUOT),
        (PermissionError(errno.EACCES, "Permission denied"), errno.EACCES),
        (OSError(errno.ENOENT, "No such file"), None),
        # safetensors and tokenizers (Rust) put the code in their text only
        (Exception("Error while serializing: I/O error: No space left (os error 28)"), 28),
        (RuntimeError("[Errno 30] Read-only file system: 'x'"), errno.EROFS),
        (RuntimeError("unexpected pos 576 vs 534"), None),
        (ValueError("os error 2"), None),
    ],
)
def test_disk_errno_finds_the_code_in_errors_and_their_text(err, expected):
    assert publish.disk_errno(err) == expected


def test_disk_errno_follows_the_chain():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert publish.disk_errno(outer) == errno.ENOSPC


# ---------------------------------------------------------------- staging and atomic JSON


def test_staging_dir_is_fresh_empty_and_beside_final(tmp_path):
    final = tmp_path / "not_yet" / "step_000000"
    a, b = staging_dir(final), staging_dir(final)
    assert a != b
    for tmp in (a, b):
        assert tmp.is_dir()
        assert list(tmp.iterdir()) == []
        assert tmp.parent == final.parent  # same filesystem: the rename is atomic
        assert tmp.name.startswith(".step_000000.tmp-")
    assert not final.exists()


def test_write_json_atomic_replaces_content_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "status.json"
    write_json_atomic(path, {"state": "running", "n": 1})
    assert read_json(path) == {"state": "running", "n": 1}
    write_json_atomic(path, {"state": "done", "items": ["é", 2]})
    assert read_json(path) == {"state": "done", "items": ["é", 2]}
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]


def test_readers_never_see_partial_json(tmp_path):
    path = tmp_path / "status.json"
    versions = [{"version": i, "payload": "x" * 200_000} for i in range(2)]
    write_json_atomic(path, versions[0])
    stop = threading.Event()
    seen, bad = set(), []

    def reader():
        while not stop.is_set():
            text = path.read_text()
            try:
                seen.add(json.loads(text)["version"])
            except json.JSONDecodeError:
                bad.append(len(text))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(40):
            write_json_atomic(path, versions[i % 2])
    finally:
        stop.set()
        thread.join()

    assert bad == []
    assert seen <= {0, 1} and seen
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
