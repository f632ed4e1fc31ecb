"""engine/host_memory.py: once told, glibc serves a block over its mmap threshold from the heap
and keeps it there when it is freed, so the next step reuses its pages instead of the kernel
mapping and zeroing them again. Each case runs in a process of its own: the setting lasts for
the rest of a process. And the page cache of a file written out can be dropped, so that the
next write reuses those pages (drop_cached_pages)."""

from __future__ import annotations

import ctypes
import mmap
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from proactive_rl.engine.host_memory import drop_cached_pages

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import ctypes, sys
from proactive_rl.engine.host_memory import keep_freed_memory

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
size = 100 << 20  # a SmolLM2 micro-batch's logits
before = libc.mallinfo2().hblkhd
block = libc.malloc(size)
mapped = libc.mallinfo2().hblkhd - before  # bytes in blocks of their own mapping
libc.free(block)
print(kept, size, mapped, libc.mallinfo2().fordblks)  # fordblks: free bytes the heap keeps
"""


def probe(mode: str) -> tuple[str, int, int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1]), int(out[2]), int(out[3])


def test_a_freed_block_stays_in_the_heap():
    kept, size, mapped, free_in_heap = probe("keep")
    assert kept == "True"
    assert mapped == 0  # served from the heap, not a mapping of its own
    assert free_in_heap >= size  # freed, and kept for the next allocation


def test_without_it_glibc_maps_the_block_and_gives_it_back():
    """The control: what the setting changes is glibc's default."""
    kept, size, mapped, free_in_heap = probe("default")
    assert kept == "None"
    assert mapped >= size
    assert free_in_heap < size


def resident_pages(path: Path) -> tuple[int, int]:
    """(pages of `path` in the page cache, pages of `path`): mincore(2) on a mapping of it,
    which maps without reading anything."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
    libc.mmap.argtypes += [ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    size, page = path.stat().st_size, os.sysconf("SC_PAGE_SIZE")
    pages = -(-size // page)
    with path.open("rb") as fh:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fh.fileno(), 0)
    assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    vec = (ctypes.c_ubyte * pages)()
    try:
        assert libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
    finally:
        libc.munmap(addr, size)
    return sum(v & 1 for v in vec), pages


@pytest.fixture()
def on_disk():
    """A folder on the repository's file system: tmp_path may be a tmpfs (Debian 13's /tmp),
    whose pages are the files themselves and stay."""
    with tempfile.TemporaryDirectory(dir=REPO / "checkpoints") as folder:
        yield Path(folder)


def test_dropped_pages_leave_the_page_cache_and_the_files_their_bytes(on_disk):
    data = os.urandom(4 << 20)
    for name in ("model.safetensors", "config.json"):
        with (on_disk / name).open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # as publish_dir leaves them: written out
    (on_disk / "sub").mkdir()  # folders are passed over
    cached, pages = resident_pages(on_disk / "model.safetensors")
    assert cached == pages  # just written: all in the page cache
    drop_cached_pages(on_disk)
    for name in ("model.safetensors", "config.json"):
        cached, pages = resident_pages(on_disk / name)
        assert cached < pages // 10
        assert (on_disk / name).read_bytes() == data


def test_a_publish_drops_the_spent_policys_pages_and_no_others(on_disk, tiny_model):
    """grpo passes the version no rollout loads again (publish_step): its pages go before the
    new policy's write, so that write reuses them; the newest policy stays cached."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from proactive_rl.shared.paths import RunPaths
    from proactive_rl.stages.grpo.publishing import publish_policy

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    paths = RunPaths(on_disk)
    for version in (1, 2):
        publish_policy(model, tokenizer, paths, version, {}, tiny_model)
    publish_policy(model, tokenizer, paths, 3, {}, tiny_model, spent=1)
    weights = {v: resident_pages(paths.policy(v) / "model.safetensors") for v in (1, 2, 3)}
    assert weights[1][0] < weights[1][1] // 10
    assert weights[2][0] == weights[2][1] and weights[3][0] == weights[3][1]
    # a spent version already pruned, or before the first: nothing to drop, no error
    publish_policy(model, tokenizer, paths, 4, {}, tiny_model, spent=-1)


def test_an_optimizer_state_is_saved_into_the_pages_of_the_one_before(on_disk):
    """save_optimizer drops the cached pages of the states on disk (kept there for --resume
    until the new one's policy is published) before it writes the next."""
    import torch

    from proactive_rl.engine.parallel import Parallel
    from proactive_rl.shared.paths import RunPaths
    from proactive_rl.stages.grpo.resume import save_optimizer

    model = torch.nn.Linear(512, 512)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(2, 512)).sum().backward()
    optimizer.step()  # moments to save
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    paths, par = RunPaths(on_disk), Parallel("single", device=torch.device("cpu"))
    for version in (1, 2):
        save_optimizer(paths, par, optimizer, scheduler, version)
    first, second = (resident_pages(paths.grpo_optimizer_state(v)) for v in (1, 2))
    assert first[0] < first[1] // 10 and second[0] == second[1]
    assert torch.load(paths.grpo_optimizer_state(1), weights_only=False)["version"] == 1
