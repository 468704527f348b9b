"""Giving freed memory back to the system between the phases of a run.

glibc's malloc serves allocations below its mmap threshold from its heaps, and that threshold grows to the
size of the largest block freed so far (up to 32 MiB): after the first training steps, the activations of a
small batch (a 112 px, 16-channel feature map of 32 faces is 25 MB) live in the heap. Freed, they stay
resident as free heap space, so a process that trained and fine-tuned keeps its largest footprint through
everything after it (measured on the tiny preset's evaluation: 940 MB before the SCface fine-tuning,
1,725 MB after it, for the rest of the evaluation). ``release_free_memory`` asks malloc to return that space
(``malloc_trim(0)``, which also releases free pages inside the heaps) at the boundaries of phases: after
``engine.train.train`` and between benchmarks. Within a phase nothing changes: the heap keeps serving the
same blocks step after step, with no page faults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_free_memory() -> bool:
    """Return malloc's free heap space to the system; False where there is no glibc to ask."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
