"""How a stage computing on the CPU keeps the host memory it frees, and how the trainer writes
each policy into memory it has just freed.

glibc's malloc hands every block over 32 MB to the kernel as its own mapping and gives the
heap's free top back as it goes. A training step allocates and frees the same tensors every
micro-batch (activations, and the [rows, positions, vocabulary] logits and log-softmax of the
loss, 100 MB each at SmolLM2's vocabulary), so the kernel maps and zeroes each page again,
every step: measured on a 2-core EPYC VM, 0.3-1.0 million page faults in each GRPO update of
SmolLM2-135M (16 responses of up to 64 tokens), and the updates 1.5x longer than with the
memory kept (docs/benchmarks.md, "The host's memory on a CPU"). Allocators built for this
(tcmalloc, which vLLM's CPU guide recommends, jemalloc) keep freed memory for reuse; glibc does
too once told, with no library to add to the images. The cost: the process's resident memory
stays at its peak, which a trainer reaches on every step anyway.

Writing a file costs the same first touch: the kernel hands the page cache new pages. On VMs
whose balloon driver reports free memory to the host (virtio-balloon's free page reporting,
about 2 s after pages are freed), those pages come back through the host, which made writing a
516 MB policy take 1.3-3.4 s, where writing it into pages freed a moment before took 0.2 s
(2-core EPYC VM, 2026-12-05, docs/benchmarks.md). So the trainer drops the cached pages of a
policy no reader loads again (`drop_cached_pages`) right before it writes the next, and those of
its optimizer states on disk right before it saves the next (they stay there for --resume).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

# mallopt's parameters (malloc.h); -1 for the trim threshold disables trimming (mallopt(3))
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve every size from its heap and never trim it, for the rest of
    the process. False where the C library is not glibc (nothing changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # a glibc symbol: musl's mallopt does nothing
    if not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))


def drop_cached_pages(path: Path) -> None:
    """Ask the kernel to drop the page cache of `path` (a file, or the files of a folder),
    which must be written out (fsynced) already: the pages are free at once for the caller's
    next writes. Nothing on disk changes; a later reader reads from disk. No-op without
    posix_fadvise."""
    if not hasattr(os, "posix_fadvise"):
        return
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
