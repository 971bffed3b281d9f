"""The C allocator, set so that NumPy's temporaries do not fault their pages in at every step.

A training step allocates its activations and temporaries, from a few hundred KiB to tens
of MiB each, and frees them; the next step allocates the same sizes again. With glibc's
defaults, freed blocks above a (moving) threshold go back to the operating system, by
munmap or by trimming the heap, and the next step takes a page fault on every 4 KiB page
it touches: about 31,000 faults, and a quarter of the time, of a d64 / T256 / B16 step on a
2-core AMD EPYC VM, where a fault is dear. Threads make it worse: each gets an arena of
its own that is trimmed the same way. So, at import, on glibc only:

    mallopt(M_MMAP_THRESHOLD, 32 MiB)   blocks up to 32 MiB come from the heap, not mmap
    mallopt(M_TRIM_THRESHOLD, 512 MiB)  free space at the heap's top is kept up to 512 MiB
    mallopt(M_ARENA_MAX, 1)             every thread allocates from the one heap

Freed memory is then reused by the next step instead of being returned and faulted back;
the cost is that a process keeps up to 512 MiB it has freed. Blocks over 32 MiB (long
evaluations) are still mapped and returned as before. Nothing is changed where any MALLOC_
environment variable is set (the user has chosen), or with MINIFOPE_MALLOC=default.
"""

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h
SETTINGS = ((M_MMAP_THRESHOLD, 32 * 2**20), (M_TRIM_THRESHOLD, 512 * 2**20), (M_ARENA_MAX, 1))


def keep_freed_memory():
    """Apply SETTINGS with mallopt; return True if they were applied."""
    if (not sys.platform.startswith("linux") or os.environ.get("MINIFOPE_MALLOC") == "default"
            or any(name.startswith("MALLOC_") for name in os.environ)):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc's; musl and others have none
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)


APPLIED = keep_freed_memory()
