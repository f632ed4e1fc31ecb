"""How a stage computing on the CPU keeps the host memory it frees.

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
"""

from __future__ import annotations

import ctypes
import sys

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
