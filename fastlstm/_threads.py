"""Thread count for the kernels: a Python-level setting passed into every C call.

``omp_set_num_threads`` is never called: it is process-wide and shared with every other
library on the same OpenMP runtime.
"""
from __future__ import annotations

import os

from . import _core

_num_threads: int | None = None


def _default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(_core.default_threads(), cpus))


def openmp_enabled() -> bool:
    """Whether this build of fastlstm has OpenMP (otherwise every kernel runs serially)."""
    return _core.openmp_enabled()


def set_num_threads(n: int | None) -> None:
    """Set the number of threads the kernels use; ``None`` restores the default.

    The default honours ``OMP_NUM_THREADS``, otherwise it is the number of CPUs this process
    may run on. Results are bitwise identical for any thread count. The kernels never use more
    than 256 threads, nor more than there is work for.
    """
    global _num_threads
    if n is None:
        _num_threads = None
        return
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"n must be a positive integer or None, got {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be a positive integer or None, got {n}")
    if n > 2**31 - 1:
        raise ValueError(f"n must be at most 2**31 - 1 (a C int), got {n}")
    _num_threads = n


def get_num_threads() -> int:
    """The number of threads the kernels will use (1 when built without OpenMP, and in a
    process forked after fastlstm's first kernel call: OpenMP's threads do not survive fork)."""
    if not _core.openmp_enabled() or _core.in_forked_child():
        return 1
    return _num_threads if _num_threads is not None else _default_threads()
