"""Keep freed tensor memory in the predict process instead of handing it back to the OS (glibc only).

glibc serves an allocation above its mmap threshold (adaptive, at most 32 MiB on 64-bit) with a
fresh `mmap` and unmaps it on `free`, and it returns free memory at the top of the heap to the OS
beyond its trim threshold. The network's activations (8 tiles x 16 channels x 256^2 float32 is
32 MiB, and the U-Net's concatenations are larger) are allocated and freed at every evaluation,
so each evaluation faulted them back in, page by page, zeroed by the kernel: on the demo-sized
guided model (384^2 image, K = 8, midpoint at 8 NFE, 2 threads; issue 20) 35% of predict's CPU
time was kernel time. With both thresholds at 1 GiB that memory stays in the heap and the next
evaluation reuses it: kernel time falls to ~1% of the CPU time and the CPU time by ~0.3x; on
a quiet machine issue 20 measured 27.3 -> 18.5 s wall (bench/predict.py (4) prints both).

The cost is peak memory: while a block is restored the process keeps its high-water mark plus
the heap's fragmentation (+100-170 MiB on ~600 MiB on that image, whose one block is the whole
image). Between blocks `release_between_blocks` hands the free pages back, so it stays set by
the block size, not the volume (bench/predict.py (2)). Allocations above 1 GiB are still mapped
and unmapped: at that size the network's work per byte dwarfs the faults.

Other C libraries (musl, macOS, Windows) are left as they are: their allocators differ, and the
setting is not portable. The bench turns the setting off with FLOWRESTORE_BENCH_GLIBC_DEFAULTS=1
to measure what it buys; nothing else should.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

# From glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30  # bytes; mallopt takes an int

_applied: bool | None = None  # None: not tried yet in this process


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to `THRESHOLD`, once per process.

    Returns True when the setting is in effect (now or from an earlier call), False where the C
    library is not glibc, mallopt refused it, or the bench switch asked for glibc's defaults.
    """
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def release_between_blocks() -> None:
    """Hand the heap's free pages back to the OS (glibc's malloc_trim) where the setting is in effect.

    Called once a block is written: the next block faults its working set in once (against
    K x NFE times with glibc's defaults), and a block never inherits the previous one's
    fragmented free memory, so resident memory stays that of one block however many are done.
    """
    if _applied:
        ctypes.CDLL(None).malloc_trim(0)


def _apply() -> bool:
    if os.environ.get("FLOWRESTORE_BENCH_GLIBC_DEFAULTS") == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- only glibc has it (musl does not)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Both, and the trim threshold first: setting either one also stops glibc's adaptive threshold.
    ok = mallopt(M_TRIM_THRESHOLD, THRESHOLD) == 1 and mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1
    if not ok:
        log.debug("mallopt refused the mmap/trim thresholds; glibc's defaults stay")
    return ok
