"""Worker processes for the CPU-bound steps (decoding into the cache, checking images, cutting crops,
drawing synthetic data): how many cores this process may use, and a pool that is safe to start next
to a deep-learning framework."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool that is safe next to a deep-learning framework.

    fork is fastest and needs no `if __name__ == "__main__"` guard in scripts, but forking a
    process that runs TensorFlow/JAX/PyTorch threads can deadlock; once one of those is
    imported, workers come from a forkserver (or spawn) instead.
    """
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    threaded = any(m in sys.modules for m in ("tensorflow", "jax", "torch"))
    if "fork" in methods and not threaded:
        method = "fork"
    else:
        method = "forkserver" if "forkserver" in methods else "spawn"
    return ProcessPoolExecutor(workers, mp_context=mp.get_context(method))
