"""Freed memory kept for the next query (docs/performance.md, "Freed memory kept for reuse").

A query allocates its temporaries and its result as numpy arrays of a few MB each, and a caller
usually drops the previous result before or while asking the next question. With glibc's
defaults, freeing tens of MB at once hands them back to the operating system (the top of the heap
is trimmed beyond twice the current mmap threshold), and the next query gets them back one zeroed
4 KiB page fault at a time: at size L that was about 37,000 page faults per pair of queries and
about half of their time. Allocators that keep freed memory (jemalloc and mimalloc, which the
column engines bundle) do not pay this.

:func:`keep_freed_memory` sets the two glibc thresholds to the values glibc's own dynamic
adjustment reaches for large arrays (blocks up to 32 MiB from the heap, the heap's free top kept
up to 64 MiB), once, for the whole process. It does nothing where the C library is not glibc,
when either threshold was chosen in the environment (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``), or when ``KPISHEET_KEEP_FREED_MEMORY=0``.
"""

from __future__ import annotations

import ctypes
import os
import platform
from functools import cache

#: glibc's ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap (glibc's largest dynamic mmap threshold on 64 bits).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the heap's top kept for reuse (glibc keeps twice the mmap threshold).
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
#: Set to ``0`` to leave the allocator's thresholds alone.
OPT_OUT_ENV = "KPISHEET_KEEP_FREED_MEMORY"
#: glibc's own settings of the thresholds; when either is set, it is the user's choice.
GLIBC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


@cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks for reuse instead of trimming them; once per process.

    :returns: whether the thresholds were set.
    """
    if os.environ.get(OPT_OUT_ENV, "").strip() == "0":
        return False
    if any(name in os.environ for name in GLIBC_ENV):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mmap first: setting either threshold ends glibc's dynamic adjustment of both.
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
