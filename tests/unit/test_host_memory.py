"""engine/host_memory.py: once told, glibc serves a block over its mmap threshold from the heap
and keeps it there when it is freed, so the next step reuses its pages instead of the kernel
mapping and zeroing them again. Each case runs in a process of its own: the setting lasts for
the rest of a process."""

from __future__ import annotations

import subprocess
import sys

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
