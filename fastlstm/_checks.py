"""Argument validation shared by the functional API: every failure names the argument and
gives the expected and the actual value, before any C code runs."""
from __future__ import annotations

import os
from typing import Any, Optional, Tuple

import numpy as np

try:  # imported here, not on first use: a call must import nothing (see _cgroup_limit)
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(name: str, a: Any) -> np.ndarray:
    """``a`` as an ndarray of float32 or float64 (no copy when it already is one)."""
    if a is None:
        raise TypeError(f"{name} must be a float32 or float64 array, got None")
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be converted to an array: {exc}") from None
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {arr.dtype}")
    return arr


def same_dtype(name: str, a: Any, dtype: np.dtype, ref: str = "x") -> np.ndarray:
    """``a`` as an ndarray that must have exactly ``dtype`` (the dtype of ``ref``)."""
    arr = float_array(name, a)
    if arr.dtype != dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but {ref} has dtype {dtype}: "
                        f"all arrays must have the same dtype")
    return arr


def shape(name: str, a: np.ndarray, expected: tuple) -> None:
    if a.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {a.shape}")


def contiguous(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """A C-contiguous, aligned array with the same values (copied once if needed)."""
    return None if a is None else np.require(a, requirements="CA")


def owned_copy(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """A C-contiguous private copy, so that later changes to the caller's array (an
    optimizer step, say) cannot change what ``backward`` computes."""
    return None if a is None else np.array(a, order="C", copy=True)


def lengths_array(lengths: Any, B: int, T: int) -> Optional[np.ndarray]:
    """Validated ``lengths`` as a C-contiguous int64 array of shape (B,), or None."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer)
                                     or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"lengths must be an array of integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one per sequence), got {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError("lengths must be finite integers, got a NaN or infinity")
        if not np.all(arr == np.round(arr)):
            raise ValueError("lengths must be whole numbers")
    if B and (arr.min() < 1 or arr.max() > T):
        bad = arr[(arr < 1) | (arr > T)][0]
        raise ValueError(f"lengths must be in 1..T = 1..{T}, got {bad}")
    return np.array(arr, dtype=np.int64, order="C", copy=True)  # private: backward reuses it


def _physical_memory() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


_CGROUP_FILES = ("/sys/fs/cgroup/memory.max",                      # cgroup v2
                 "/sys/fs/cgroup/memory/memory.limit_in_bytes")     # cgroup v1


def _cgroup_limit() -> Optional[int]:
    """The memory limit of this process's cgroup in bytes, or None ('max', no file, junk).

    Read as bytes: a text read looks up its codec, which imports a module the first time, and
    a child forked while another thread holds that import's lock waits for it forever (a
    multiprocessing worker forked while a thread was in its first fastlstm call hung so)."""
    for path in _CGROUP_FILES:
        try:
            with open(path, "rb") as f:
                text = f.read(64).strip()
        except OSError:
            continue
        if text == b"max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        # cgroup v1 says "no limit" with a huge page-rounded number (about 2**63)
        return value if 0 < value < 2**62 else None
    return None


def _address_space_limit() -> Optional[int]:
    """The soft RLIMIT_AS in bytes, or None when unlimited or unknown."""
    if resource is None:
        return None
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (AttributeError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    return int(soft)


def memory_limit() -> Tuple[Optional[int], str]:
    """The smallest of physical memory, the cgroup memory limit and RLIMIT_AS, in bytes, with
    what it is ("this machine's memory", "the cgroup memory limit", "the address-space limit
    (RLIMIT_AS)"); ``(None, "")`` when none is known."""
    best: Tuple[Optional[int], str] = (None, "")
    for value, what in ((_physical_memory(), "this machine's memory"),
                        (_cgroup_limit(), "the cgroup memory limit"),
                        (_address_space_limit(), "the address-space limit (RLIMIT_AS)")):
        if value is not None and (best[0] is None or value < best[0]):
            best = (value, what)
    return best


def memory(nbytes: float, what: str) -> None:
    """Refuse, with a MemoryError that says why, a call whose buffers cannot fit in memory
    (instead of starting it and failing later, or overflowing a size)."""
    if nbytes >= 2.0**62:
        raise ValueError(f"{what} is too large: it would need {nbytes:.3g} bytes")
    total, source = memory_limit()
    if total is not None and nbytes > total:
        raise MemoryError(f"{what} needs about {nbytes / 2**30:.1f} GiB of buffers, more than "
                          f"{source} ({total / 2**30:.1f} GiB)")
