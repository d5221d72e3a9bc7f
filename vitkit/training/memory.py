"""Keep freed tensor memory in the process on Linux, so that a training step does not page-fault its way
through gigabytes of fresh pages every time.

glibc serves every allocation above its mmap threshold (128 KiB, raised at most to 32 MiB as it adapts) with a
fresh ``mmap`` and returns it with ``munmap`` when freed. A CPU training step allocates and frees the same
large activations every step, so each step the kernel zero-fills them again, one page fault per 4 KiB: at
batch 64 this halved the training throughput of the keras.io MobileViT (5.6 against 11.1 img/s, measured side
by side; benchmarks/RESULTS.md). Raising the mmap and trim thresholds to 1 GiB keeps those blocks in the
heap for the next step, as PyTorch's CUDA caching allocator does on a GPU. The process's resident memory then
stays at its peak, which a training process reaches every step anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
_THRESHOLD = 1 << 30
_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB for this process; True if set (Linux with glibc only)."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt: nothing to do
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
    return _done
