"""Data-parallel training over MPI (``pip install "fastlstm[mpi]"``: mpi4py and MPICH's wheel).

Each of N ranks computes the gradient of its shard of the global batch; the gradients are
summed, each weighted by its shard's share of the global batch, in a fixed order; every rank
then applies the same update, so the weights stay bitwise equal on all ranks and a rerun with
the same N is bitwise identical::

    from fastlstm import distributed as dist

    comm = dist.init()                      # MPI.COMM_WORLD (mpi4py is imported here only)
    dist.broadcast_parameters(model.parameters(), comm)       # rank 0's weights everywhere
    for idx in batches:                     # the same global batches on every rank
        mine = idx[dist.shard(len(idx), comm)]                # this rank's rows
        model.zero_grad()
        loss, g = softmax_cross_entropy(model.forward(x[mine]), y[mine])
        model.backward(g)                   # mean over this rank's rows
        dist.allreduce_gradients(model.grads, comm, weight=len(mine) / len(idx))
        clip_grad_norm(model.grads, 1.0); opt.step(model.grads)   # same on every rank

Run it with ``mpiexec -n N python script.py``. Importing :mod:`fastlstm` never imports mpi4py;
this module imports it on the first call that needs it.

**Fixed-order reduction.** ``MPI_Allreduce`` may add the ranks' contributions in an order that
depends on the algorithm the library picks (message size, N, the network), so its floating-point
result may change from run to run. :func:`allreduce_gradients` does not use it: the gradients
are packed into one buffer, the buffer is cut into N chunks, chunk ``j`` of every rank goes to
rank ``j`` (one ``Alltoallv``), which adds the N copies in rank order 0, 1, ..., N-1, and the
summed chunks are gathered everywhere (one ``Allgatherv``). That is a reduce-scatter plus an
allgather: each rank sends and receives ``2 (N-1)/N`` times the buffer, the same volume as a
ring allreduce, and every rank ends with the same bytes.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

__all__ = ["init", "available", "rank", "world_size", "shard", "shard_bounds",
           "allreduce_gradients", "broadcast_parameters", "barrier", "local_size",
           "default_threads"]

_checked = set()
_buffers: Dict[Tuple[str, str, int], np.ndarray] = {}


def _buffer(kind: str, dtype: np.dtype, n: int) -> np.ndarray:
    """A buffer kept from call to call: a fresh one (page faults; MPI's large-message path
    on new memory) made a 329 kB reduction 4.5 ms instead of 0.25 ms on 2 ranks."""
    key = (kind, dtype.str, n)
    buf = _buffers.get(key)
    if buf is None:
        if len(_buffers) >= 16:
            _buffers.clear()
        buf = _buffers[key] = np.empty(n, dtype)
    return buf


def available() -> bool:
    """Whether mpi4py can be imported (it is the ``[mpi]`` extra)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def init(comm: Any = None) -> Any:
    """The communicator to train over: ``comm`` if given, else ``MPI.COMM_WORLD``.

    Importing ``mpi4py.MPI`` initialises MPI (one process is a world of size 1 when not
    started by ``mpiexec``). Raises ImportError with the install command when mpi4py is
    missing.
    """
    if comm is not None:
        return comm
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("distributed training needs mpi4py and an MPI library: "
                          "pip install \"fastlstm[mpi]\" (mpi4py and MPICH's wheel, which "
                          f"puts mpiexec in the environment's bin folder) ({e})") from None
    return MPI.COMM_WORLD


def rank(comm: Any = None) -> int:
    return init(comm).Get_rank()


def world_size(comm: Any = None) -> int:
    return init(comm).Get_size()


def barrier(comm: Any = None) -> None:
    init(comm).Barrier()


def local_size(comm: Any = None) -> int:
    """How many ranks of ``comm`` share this machine (1 if the MPI library cannot tell)."""
    comm = init(comm)
    try:
        from mpi4py import MPI
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    except Exception:  # an MPI without MPI-3 shared-memory splits
        return 1
    try:
        return node.Get_size()
    finally:
        node.Free()


def default_threads(comm: Any = None) -> int:
    """Kernel threads per rank when none are asked for: ``OMP_NUM_THREADS`` if set, else this
    process's CPUs divided among the ranks on this machine (at least 1), so that N ranks on
    one machine do not each start one thread per core."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus // local_size(comm))


def shard_bounds(n: int, rank: int, size: int) -> Tuple[int, int]:
    """Rows ``[start, stop)`` of a global batch of ``n`` rows that rank ``rank`` of ``size``
    owns: contiguous, in rank order, sizes differing by at most one (``n * r // size``
    boundaries). A rank owns no rows when ``n < size`` and ``r`` is unlucky."""
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"need 0 <= rank < size, got rank {rank}, size {size}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return n * rank // size, n * (rank + 1) // size


def shard(n: int, comm: Any = None) -> slice:
    """The slice of a global batch of ``n`` rows that this rank of ``comm`` owns
    (:func:`shard_bounds`): ``rows[shard(len(rows), comm)]``."""
    comm = init(comm)
    return slice(*shard_bounds(n, comm.Get_rank(), comm.Get_size()))


def _fused(arrays: Mapping[str, np.ndarray]) -> Tuple[list, np.dtype, int]:
    items = list(arrays.items())
    if not items:
        raise ValueError("no arrays to reduce")
    for name, a in items:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    dtype = np.result_type(*[a.dtype for _, a in items])
    if dtype.kind != "f":
        raise TypeError(f"arrays must be floating point, got {dtype}")
    return items, dtype, sum(a.size for _, a in items)


def _check_same(comm: Any, items: list, dtype: np.dtype) -> None:
    """Once per layout and communicator: every rank passes the same names, shapes, dtypes."""
    sig = (tuple((k, a.shape, a.dtype.str) for k, a in items), dtype.str)
    key = (id(comm), sig)
    if key in _checked:
        return
    sigs = comm.allgather(sig)
    if any(s != sigs[0] for s in sigs):
        bad = next(r for r, s in enumerate(sigs) if s != sigs[0])
        raise ValueError(f"rank {bad} passed other arrays (names, shapes or dtypes) than "
                         "rank 0; every rank must pass the same dict in the same order")
    _checked.add(key)


def _chunks(total: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
    bounds = np.array([total * r // size for r in range(size + 1)], dtype=np.int64)
    return np.diff(bounds), bounds[:-1]


def allreduce_gradients(grads: Mapping[str, np.ndarray], comm: Any = None, *,
                        weight: Optional[float] = None, check: bool = True
                        ) -> Dict[str, np.ndarray]:
    """Replace every array of ``grads`` in place by ``sum_r weight_r * grads_r`` over the ranks
    of ``comm``, added in rank order (bitwise the same on every rank and from run to run).

    ``weight`` is this rank's factor; the default ``1 / N`` makes it the mean. For a global
    batch split into shards whose gradients are means over their own rows, pass
    ``len(my_rows) / len(global_batch)``: the result is the gradient of the mean over the
    global batch (a rank with no rows passes 0 and any gradients).

    All arrays travel in one fused buffer of their common dtype (two collectives per call,
    whatever the number of arrays). Every rank must pass the same names, shapes and dtypes in
    the same order (checked once per layout unless ``check=False``). Returns ``grads``.
    """
    comm = init(comm)
    items, dtype, total = _fused(grads)
    size = comm.Get_size()
    w = (1.0 / size) if weight is None else float(weight)
    buf = _buffer("fused", dtype, total)
    off = 0
    for _, a in items:
        np.multiply(a.reshape(-1), w, out=buf[off:off + a.size], casting="same_kind")
        off += a.size
    if size > 1:
        if check:
            _check_same(comm, items, dtype)
        counts, displs = _chunks(total, size)
        me = comm.Get_rank()
        mine = int(counts[me])
        recv = _buffer("recv", dtype, size * mine).reshape(size, mine)
        # chunk j of every rank -> rank j; rank j receives its chunk from ranks 0..N-1 in rows
        comm.Alltoallv([buf, (counts, displs)],
                       [recv, (np.full(size, mine), np.arange(size) * mine)])
        part = _buffer("part", dtype, mine)
        part[...] = recv[0]
        for r in range(1, size):  # fixed order: rank 0 + rank 1 + ... + rank N-1
            part += recv[r]
        comm.Allgatherv(part, [buf, (counts, displs)])
    off = 0
    for _, a in items:
        a[...] = buf[off:off + a.size].reshape(a.shape)
        off += a.size
    return grads  # type: ignore[return-value]


def broadcast_parameters(params: Mapping[str, np.ndarray], comm: Any = None, *,
                         root: int = 0) -> Mapping[str, np.ndarray]:
    """Copy rank ``root``'s arrays into every rank's ``params`` in place (one fused
    ``Bcast``); afterwards all ranks hold bitwise the same values. Returns ``params``."""
    comm = init(comm)
    items, dtype, total = _fused(params)
    if comm.Get_size() == 1:
        return params
    _check_same(comm, items, dtype)
    buf = np.empty(total, dtype)
    if comm.Get_rank() == root:
        off = 0
        for _, a in items:
            buf[off:off + a.size] = a.reshape(-1)
            off += a.size
    comm.Bcast(buf, root=root)
    off = 0
    for _, a in items:
        a[...] = buf[off:off + a.size].reshape(a.shape)
        off += a.size
    return params
