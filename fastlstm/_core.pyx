# The binding: typed calls into the C core with the GIL released. Arguments arrive validated
# and C-contiguous from fastlstm/rnn.py; each array is still checked here for dtype,
# contiguity and size (one cheap test per array) so that no call through this module can
# make the C code read or write outside an array.
cimport numpy as cnp
from libc.stdint cimport int64_t

from fastlstm.libfastlstm cimport *

import threading

import numpy as np

cnp.import_array()

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)
    void free(void *ptr)


cdef class _AlignedBlock:
    """Memory from posix_memalign: it starts on a 64-byte cache line and holds exactly the
    bytes asked for, so AddressSanitizer sees the true end of every kernel output and scratch
    block (a padded buffer would hide a write up to 64 bytes past it). Freed with the last
    array or call that uses it."""
    cdef void *ptr
    cdef readonly size_t nbytes

    def __dealloc__(self):
        free(self.ptr)


cdef _AlignedBlock _aligned_block(size_t nbytes):
    cdef _AlignedBlock block = _AlignedBlock.__new__(_AlignedBlock)
    # posix_memalign(size 0) may return NULL: ask for one line then, the kernels read nothing
    if posix_memalign(&block.ptr, 64, nbytes if nbytes else 64) != 0:
        block.ptr = NULL
        raise MemoryError(f"could not allocate {nbytes} bytes")
    block.nbytes = nbytes
    return block


# Scratch space, kept per Python thread and reused from call to call: the kernels of a long
# sequence need tens of MB of it, and fresh memory from the system costs a page fault per
# 4 KiB (measured: about 15% of a GRU training step at T=200, B=64, H=256). Per thread,
# because the kernels run without the GIL and two calls must never share it. Blocks are kept
# by exact size (a training step alternates forward and backward sizes): the most recently
# used _SCRATCH_KEEP_BLOCKS of them, together at most _SCRATCH_KEEP_MAX bytes (what the single
# cached buffer before could hold).
_SCRATCH_KEEP_MAX = 1 << 30
_SCRATCH_KEEP_BLOCKS = 4
_scratch = threading.local()


cdef void *_scratch_ptr(size_t nbytes, list keep) except? NULL:
    cache = getattr(_scratch, "blocks", None)
    if cache is None:
        cache = _scratch.blocks = {}
    block = cache.pop(nbytes, None)
    if block is None:
        block = _aligned_block(nbytes)
    if nbytes <= _SCRATCH_KEEP_MAX:
        cache[nbytes] = block  # most recently used last
        while len(cache) > _SCRATCH_KEEP_BLOCKS or sum(cache) > _SCRATCH_KEEP_MAX:
            del cache[next(iter(cache))]
    keep.append(block)  # alive until the call returns, even if another call evicts it
    return (<_AlignedBlock>block).ptr


def empty_aligned(tuple shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` whose data start on a 64-byte cache line (NumPy aligns to 16
    bytes) and end exactly where the array does. For every array a kernel writes: threads
    write neighbouring parts of each row, and a line shared by two threads measured ~20%
    slower at batch 1. One allocation, one array over it, no Python-level slicing (that cost
    ~5 us per array, as much as a batch-1 step)."""
    cdef cnp.dtype descr = np.dtype(dtype)
    cdef int nd = len(shape), i
    cdef cnp.npy_intp dims[32]
    cdef cnp.npy_intp n = 1
    if nd > 32:
        raise ValueError(f"at most 32 dimensions, got {nd}")
    for i in range(nd):
        dims[i] = shape[i]
        if dims[i] < 0:
            raise ValueError(f"negative dimension in shape {shape}")
        n *= dims[i]
    cdef _AlignedBlock block = _aligned_block(n * descr.itemsize)
    arr = cnp.PyArray_SimpleNewFromData(nd, dims, descr.type_num, block.ptr)
    cnp.set_array_base(<cnp.ndarray>arr, block)
    return arr


def release_scratch() -> None:
    """Free this thread's cached scratch space (it is allocated again when needed)."""
    _scratch.blocks = None


class KernelError(RuntimeError):
    """A status other than FL_OK from the C core."""


cdef void *_ptr(object a, object dtype, int64_t n, str name) except? NULL:
    """Data pointer of a C-contiguous array of exactly n elements of dtype; NULL for None."""
    if a is None:
        return NULL
    if not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous \
            or not a.flags.aligned or a.size != n:
        raise ValueError(f"internal: {name} must be an aligned C-contiguous "
                         f"{np.dtype(dtype).name} array of {n} elements")
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef void *_wptr(object a, object dtype, int64_t n, str name) except? NULL:
    if a is None:
        raise ValueError(f"internal: {name} is required")
    if not a.flags.writeable:
        raise ValueError(f"internal: {name} must be writeable")
    return _ptr(a, dtype, n, name)


cdef int _check(fl_status status) except -1:
    if status != FL_OK:
        raise KernelError(fl_status_string(status).decode())
    return 0


cdef object _real_dtype(object x):
    """x's dtype, which picks the kernel: float32 or float64, anything else refused here (a
    float16 array taken for float64 would send the kernel past the end of every buffer)."""
    dt = getattr(x, "dtype", None)
    if dt is None or (dt != np.float32 and dt != np.float64):
        raise TypeError(f"internal: x must be a float32 or float64 array, got dtype {dt}")
    return dt


def openmp_enabled() -> bool:
    return bool(fl_openmp_enabled())


def default_threads() -> int:
    return fl_default_threads()


def isa() -> str:
    return fl_isa().decode()


cdef extern from "impl/threads.h" nogil:
    int fl_in_forked_child()


def in_forked_child() -> bool:
    """Whether this process was forked after the kernels' first call (they then run on one
    thread: libgomp's pool does not survive fork)."""
    return bool(fl_in_forked_child())


def version() -> str:
    """FASTLSTM_VERSION of the compiled C core (csrc/fastlstm.h)."""
    return fl_version().decode()


cdef fl_dims _dims(int64_t T, int64_t B, int64_t I, int64_t H, bint batch_first, int n_threads):
    cdef fl_dims d
    d.seq_len = T; d.batch = B; d.input_size = I; d.hidden_size = H
    d.batch_first = batch_first
    d.n_threads = n_threads
    return d


def lstm_reserve_size(int64_t T, int64_t B, int64_t I, int64_t H, int itemsize) -> int:
    cdef fl_dims d = _dims(T, B, I, H, 0, 1)
    cdef size_t nbytes = 0
    _check(fl_lstm_reserve_bytes(&d, itemsize, &nbytes))
    return nbytes // itemsize


def gru_reserve_size(int64_t T, int64_t B, int64_t I, int64_t H, int itemsize,
                     bint linear_before_reset) -> int:
    cdef fl_dims d = _dims(T, B, I, H, 0, 1)
    cdef size_t nbytes = 0
    _check(fl_gru_reserve_bytes(&d, itemsize, linear_before_reset, &nbytes))
    return nbytes // itemsize


def lstm_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, y, h_n, c_n, reserve,
                 int64_t T, int64_t B, int64_t I, int64_t H, bint batch_first, int n_threads):
    """Fill y [T,B,H] (or [B,T,H]), h_n, c_n [B,H] and, when given, the training reserve."""
    cdef fl_dims d = _dims(T, B, I, H, batch_first, n_threads)
    dt = _real_dtype(x)
    cdef int64_t G = 4 * H
    cdef void *px = _ptr(x, dt, T * B * I, "x")
    cdef void *pwi = _ptr(w_ih, dt, G * I, "w_ih")
    cdef void *pwh = _ptr(w_hh, dt, G * H, "w_hh")
    cdef void *pbi = _ptr(b_ih, dt, G, "b_ih")
    cdef void *pbh = _ptr(b_hh, dt, G, "b_hh")
    cdef void *ph0 = _ptr(h0, dt, B * H, "h0")
    cdef void *pc0 = _ptr(c0, dt, B * H, "c0")
    cdef const int64_t *pl = <const int64_t *>_ptr(lengths, np.int64, B, "lengths")
    cdef void *py = _wptr(y, dt, T * B * H, "y")
    cdef void *phn = _wptr(h_n, dt, B * H, "h_n")
    cdef void *pcn = _wptr(c_n, dt, B * H, "c_n")
    cdef void *pr = NULL
    if reserve is not None:
        pr = _wptr(reserve, dt, lstm_reserve_size(T, B, I, H, dt.itemsize), "reserve")
    cdef fl_status st
    cdef list keep = []
    cdef size_t ns = 0
    _check(fl_lstm_forward_scratch_bytes(&d, dt.itemsize, pr != NULL, &ns))
    cdef void *ps = _scratch_ptr(ns, keep)
    if dt == np.float32:
        with nogil:
            st = fl_lstm_forward_f32(&d, <float *>px, <float *>pwi, <float *>pwh, <float *>pbi,
                                     <float *>pbh, <float *>ph0, <float *>pc0, pl, <float *>py,
                                     <float *>phn, <float *>pcn, pr, ps, ns)
    else:
        with nogil:
            st = fl_lstm_forward_f64(&d, <double *>px, <double *>pwi, <double *>pwh,
                                     <double *>pbi, <double *>pbh, <double *>ph0,
                                     <double *>pc0, pl, <double *>py, <double *>phn,
                                     <double *>pcn, pr, ps, ns)
    _check(st)


def lstm_backward(x, w_ih, w_hh, h0, c0, lengths, reserve, dy, dh_n, dc_n,
                  dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0,
                  int64_t T, int64_t B, int64_t I, int64_t H, bint batch_first, int n_threads):
    """Fill every gradient array from the reserve of a training forward."""
    cdef fl_dims d = _dims(T, B, I, H, batch_first, n_threads)
    dt = _real_dtype(x)
    cdef int64_t G = 4 * H
    cdef void *px = _ptr(x, dt, T * B * I, "x")
    cdef void *pwi = _ptr(w_ih, dt, G * I, "w_ih")
    cdef void *pwh = _ptr(w_hh, dt, G * H, "w_hh")
    cdef void *ph0 = _ptr(h0, dt, B * H, "h0")
    cdef void *pc0 = _ptr(c0, dt, B * H, "c0")
    cdef const int64_t *pl = <const int64_t *>_ptr(lengths, np.int64, B, "lengths")
    cdef void *pr = _ptr(reserve, dt, lstm_reserve_size(T, B, I, H, dt.itemsize), "reserve")
    cdef void *pdy = _ptr(dy, dt, T * B * H, "dy")
    cdef void *pdhn = _ptr(dh_n, dt, B * H, "dh_n")
    cdef void *pdcn = _ptr(dc_n, dt, B * H, "dc_n")
    cdef void *pdx = _wptr(dx, dt, T * B * I, "dx")
    cdef void *pdwi = _wptr(dw_ih, dt, G * I, "dw_ih")
    cdef void *pdwh = _wptr(dw_hh, dt, G * H, "dw_hh")
    cdef void *pdbi = _wptr(db_ih, dt, G, "db_ih")
    cdef void *pdbh = _wptr(db_hh, dt, G, "db_hh")
    cdef void *pdh0 = _wptr(dh0, dt, B * H, "dh0")
    cdef void *pdc0 = _wptr(dc0, dt, B * H, "dc0")
    if pr == NULL:
        raise ValueError("internal: reserve is required")
    cdef fl_status st
    cdef list keep = []
    cdef size_t ns = 0
    _check(fl_lstm_backward_scratch_bytes(&d, dt.itemsize, &ns))
    cdef void *ps = _scratch_ptr(ns, keep)
    if dt == np.float32:
        with nogil:
            st = fl_lstm_backward_f32(&d, <float *>px, <float *>pwi, <float *>pwh,
                                      <float *>ph0, <float *>pc0, pl, pr, <float *>pdy,
                                      <float *>pdhn, <float *>pdcn, <float *>pdx,
                                      <float *>pdwi, <float *>pdwh, <float *>pdbi,
                                      <float *>pdbh, <float *>pdh0, <float *>pdc0, ps, ns)
    else:
        with nogil:
            st = fl_lstm_backward_f64(&d, <double *>px, <double *>pwi, <double *>pwh,
                                      <double *>ph0, <double *>pc0, pl, pr, <double *>pdy,
                                      <double *>pdhn, <double *>pdcn, <double *>pdx,
                                      <double *>pdwi, <double *>pdwh, <double *>pdbi,
                                      <double *>pdbh, <double *>pdh0, <double *>pdc0, ps, ns)
    _check(st)


def gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, y, h_n, reserve,
                int64_t T, int64_t B, int64_t I, int64_t H, bint batch_first,
                bint linear_before_reset, int n_threads):
    """Fill y, h_n and, when given, the training reserve."""
    cdef fl_dims d = _dims(T, B, I, H, batch_first, n_threads)
    dt = _real_dtype(x)
    cdef int64_t G = 3 * H
    cdef int lbr = linear_before_reset
    cdef void *px = _ptr(x, dt, T * B * I, "x")
    cdef void *pwi = _ptr(w_ih, dt, G * I, "w_ih")
    cdef void *pwh = _ptr(w_hh, dt, G * H, "w_hh")
    cdef void *pbi = _ptr(b_ih, dt, G, "b_ih")
    cdef void *pbh = _ptr(b_hh, dt, G, "b_hh")
    cdef void *ph0 = _ptr(h0, dt, B * H, "h0")
    cdef const int64_t *pl = <const int64_t *>_ptr(lengths, np.int64, B, "lengths")
    cdef void *py = _wptr(y, dt, T * B * H, "y")
    cdef void *phn = _wptr(h_n, dt, B * H, "h_n")
    cdef void *pr = NULL
    if reserve is not None:
        pr = _wptr(reserve, dt, gru_reserve_size(T, B, I, H, dt.itemsize, lbr), "reserve")
    cdef fl_status st
    cdef list keep = []
    cdef size_t ns = 0
    _check(fl_gru_forward_scratch_bytes(&d, dt.itemsize, lbr, &ns))
    cdef void *ps = _scratch_ptr(ns, keep)
    if dt == np.float32:
        with nogil:
            st = fl_gru_forward_f32(&d, lbr, <float *>px, <float *>pwi, <float *>pwh,
                                    <float *>pbi, <float *>pbh, <float *>ph0, pl, <float *>py,
                                    <float *>phn, pr, ps, ns)
    else:
        with nogil:
            st = fl_gru_forward_f64(&d, lbr, <double *>px, <double *>pwi, <double *>pwh,
                                    <double *>pbi, <double *>pbh, <double *>ph0, pl,
                                    <double *>py, <double *>phn, pr, ps, ns)
    _check(st)


def gru_backward(x, w_ih, w_hh, h0, lengths, reserve, dy, dh_n,
                 dx, dw_ih, dw_hh, db_ih, db_hh, dh0,
                 int64_t T, int64_t B, int64_t I, int64_t H, bint batch_first,
                 bint linear_before_reset, int n_threads):
    """Fill every gradient array from the reserve of a training forward."""
    cdef fl_dims d = _dims(T, B, I, H, batch_first, n_threads)
    dt = _real_dtype(x)
    cdef int64_t G = 3 * H
    cdef int lbr = linear_before_reset
    cdef void *px = _ptr(x, dt, T * B * I, "x")
    cdef void *pwi = _ptr(w_ih, dt, G * I, "w_ih")
    cdef void *pwh = _ptr(w_hh, dt, G * H, "w_hh")
    cdef void *ph0 = _ptr(h0, dt, B * H, "h0")
    cdef const int64_t *pl = <const int64_t *>_ptr(lengths, np.int64, B, "lengths")
    cdef void *pr = _ptr(reserve, dt, gru_reserve_size(T, B, I, H, dt.itemsize, lbr), "reserve")
    cdef void *pdy = _ptr(dy, dt, T * B * H, "dy")
    cdef void *pdhn = _ptr(dh_n, dt, B * H, "dh_n")
    cdef void *pdx = _wptr(dx, dt, T * B * I, "dx")
    cdef void *pdwi = _wptr(dw_ih, dt, G * I, "dw_ih")
    cdef void *pdwh = _wptr(dw_hh, dt, G * H, "dw_hh")
    cdef void *pdbi = _wptr(db_ih, dt, G, "db_ih")
    cdef void *pdbh = _wptr(db_hh, dt, G, "db_hh")
    cdef void *pdh0 = _wptr(dh0, dt, B * H, "dh0")
    if pr == NULL:
        raise ValueError("internal: reserve is required")
    cdef fl_status st
    cdef list keep = []
    cdef size_t ns = 0
    _check(fl_gru_backward_scratch_bytes(&d, dt.itemsize, lbr, &ns))
    cdef void *ps = _scratch_ptr(ns, keep)
    if dt == np.float32:
        with nogil:
            st = fl_gru_backward_f32(&d, lbr, <float *>px, <float *>pwi, <float *>pwh,
                                     <float *>ph0, pl, pr, <float *>pdy, <float *>pdhn,
                                     <float *>pdx, <float *>pdwi, <float *>pdwh, <float *>pdbi,
                                     <float *>pdbh, <float *>pdh0, ps, ns)
    else:
        with nogil:
            st = fl_gru_backward_f64(&d, lbr, <double *>px, <double *>pwi, <double *>pwh,
                                     <double *>ph0, pl, pr, <double *>pdy, <double *>pdhn,
                                     <double *>pdx, <double *>pdwi, <double *>pdwh,
                                     <double *>pdbi, <double *>pdbh, <double *>pdh0, ps, ns)
    _check(st)


def lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, h_new, c_new,
                      int64_t B, int64_t I, int64_t H, int n_threads):
    """One LSTM step: fill h_new, c_new [B,H]."""
    dt = _real_dtype(x)
    cdef int64_t G = 4 * H
    cdef void *px = _ptr(x, dt, B * I, "x")
    cdef void *ph = _ptr(h, dt, B * H, "h")
    cdef void *pc = _ptr(c, dt, B * H, "c")
    cdef void *pwi = _ptr(w_ih, dt, G * I, "w_ih")
    cdef void *pwh = _ptr(w_hh, dt, G * H, "w_hh")
    cdef void *pbi = _ptr(b_ih, dt, G, "b_ih")
    cdef void *pbh = _ptr(b_hh, dt, G, "b_hh")
    cdef void *phn = _wptr(h_new, dt, B * H, "h_new")
    cdef void *pcn = _wptr(c_new, dt, B * H, "c_new")
    cdef fl_status st
    if dt == np.float32:
        with nogil:
            st = fl_lstm_cell_forward_f32(n_threads, B, I, H, <float *>px, <float *>ph,
                                          <float *>pc, <float *>pwi, <float *>pwh, <float *>pbi,
                                          <float *>pbh, <float *>phn, <float *>pcn)
    else:
        with nogil:
            st = fl_lstm_cell_forward_f64(n_threads, B, I, H, <double *>px, <double *>ph,
                                          <double *>pc, <double *>pwi, <double *>pwh,
                                          <double *>pbi, <double *>pbh, <double *>phn,
                                          <double *>pcn)
    _check(st)


def lstm_cell_backward(x, h, c, w_ih, w_hh, b_ih, b_hh, dh_new, dc_new,
                       dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh,
                       int64_t B, int64_t I, int64_t H, int n_threads):
    """Gradients of one LSTM step (the gates are recomputed from the inputs)."""
    dt = _real_dtype(x)
    cdef int64_t G = 4 * H
    cdef void *px = _ptr(x, dt, B * I, "x")
    cdef void *ph = _ptr(h, dt, B * H, "h")
    cdef void *pc = _ptr(c, dt, B * H, "c")
    cdef void *pwi = _ptr(w_ih, dt, G * I, "w_ih")
    cdef void *pwh = _ptr(w_hh, dt, G * H, "w_hh")
    cdef void *pbi = _ptr(b_ih, dt, G, "b_ih")
    cdef void *pbh = _ptr(b_hh, dt, G, "b_hh")
    cdef void *pdhn = _ptr(dh_new, dt, B * H, "dh_new")
    cdef void *pdcn = _ptr(dc_new, dt, B * H, "dc_new")
    cdef void *pdx = _wptr(dx, dt, B * I, "dx")
    cdef void *pdh = _wptr(dh, dt, B * H, "dh")
    cdef void *pdc = _wptr(dc, dt, B * H, "dc")
    cdef void *pdwi = _wptr(dw_ih, dt, G * I, "dw_ih")
    cdef void *pdwh = _wptr(dw_hh, dt, G * H, "dw_hh")
    cdef void *pdbi = _wptr(db_ih, dt, G, "db_ih")
    cdef void *pdbh = _wptr(db_hh, dt, G, "db_hh")
    cdef fl_status st
    if dt == np.float32:
        with nogil:
            st = fl_lstm_cell_backward_f32(n_threads, B, I, H, <float *>px, <float *>ph,
                                           <float *>pc, <float *>pwi, <float *>pwh,
                                           <float *>pbi, <float *>pbh, <float *>pdhn,
                                           <float *>pdcn, <float *>pdx, <float *>pdh,
                                           <float *>pdc, <float *>pdwi, <float *>pdwh,
                                           <float *>pdbi, <float *>pdbh)
    else:
        with nogil:
            st = fl_lstm_cell_backward_f64(n_threads, B, I, H, <double *>px, <double *>ph,
                                           <double *>pc, <double *>pwi, <double *>pwh,
                                           <double *>pbi, <double *>pbh, <double *>pdhn,
                                           <double *>pdcn, <double *>pdx, <double *>pdh,
                                           <double *>pdc, <double *>pdwi, <double *>pdwh,
                                           <double *>pdbi, <double *>pdbh)
    _check(st)


def gru_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, h_new,
                     int64_t B, int64_t I, int64_t H, bint linear_before_reset, int n_threads):
    """One GRU step: fill h_new [B,H]."""
    dt = _real_dtype(x)
    cdef int64_t G = 3 * H
    cdef int lbr = linear_before_reset
    cdef void *px = _ptr(x, dt, B * I, "x")
    cdef void *ph = _ptr(h, dt, B * H, "h")
    cdef void *pwi = _ptr(w_ih, dt, G * I, "w_ih")
    cdef void *pwh = _ptr(w_hh, dt, G * H, "w_hh")
    cdef void *pbi = _ptr(b_ih, dt, G, "b_ih")
    cdef void *pbh = _ptr(b_hh, dt, G, "b_hh")
    cdef void *phn = _wptr(h_new, dt, B * H, "h_new")
    cdef fl_status st
    if dt == np.float32:
        with nogil:
            st = fl_gru_cell_forward_f32(n_threads, B, I, H, lbr, <float *>px, <float *>ph,
                                         <float *>pwi, <float *>pwh, <float *>pbi,
                                         <float *>pbh, <float *>phn)
    else:
        with nogil:
            st = fl_gru_cell_forward_f64(n_threads, B, I, H, lbr, <double *>px, <double *>ph,
                                         <double *>pwi, <double *>pwh, <double *>pbi,
                                         <double *>pbh, <double *>phn)
    _check(st)


def gru_cell_backward(x, h, w_ih, w_hh, b_ih, b_hh, dh_new, dx, dh, dw_ih, dw_hh, db_ih, db_hh,
                      int64_t B, int64_t I, int64_t H, bint linear_before_reset, int n_threads):
    """Gradients of one GRU step (the gates are recomputed from the inputs)."""
    dt = _real_dtype(x)
    cdef int64_t G = 3 * H
    cdef int lbr = linear_before_reset
    cdef void *px = _ptr(x, dt, B * I, "x")
    cdef void *ph = _ptr(h, dt, B * H, "h")
    cdef void *pwi = _ptr(w_ih, dt, G * I, "w_ih")
    cdef void *pwh = _ptr(w_hh, dt, G * H, "w_hh")
    cdef void *pbi = _ptr(b_ih, dt, G, "b_ih")
    cdef void *pbh = _ptr(b_hh, dt, G, "b_hh")
    cdef void *pdhn = _ptr(dh_new, dt, B * H, "dh_new")
    cdef void *pdx = _wptr(dx, dt, B * I, "dx")
    cdef void *pdh = _wptr(dh, dt, B * H, "dh")
    cdef void *pdwi = _wptr(dw_ih, dt, G * I, "dw_ih")
    cdef void *pdwh = _wptr(dw_hh, dt, G * H, "dw_hh")
    cdef void *pdbi = _wptr(db_ih, dt, G, "db_ih")
    cdef void *pdbh = _wptr(db_hh, dt, G, "db_hh")
    cdef fl_status st
    if dt == np.float32:
        with nogil:
            st = fl_gru_cell_backward_f32(n_threads, B, I, H, lbr, <float *>px, <float *>ph,
                                          <float *>pwi, <float *>pwh, <float *>pbi,
                                          <float *>pbh, <float *>pdhn, <float *>pdx,
                                          <float *>pdh, <float *>pdwi, <float *>pdwh,
                                          <float *>pdbi, <float *>pdbh)
    else:
        with nogil:
            st = fl_gru_cell_backward_f64(n_threads, B, I, H, lbr, <double *>px, <double *>ph,
                                          <double *>pwi, <double *>pwh, <double *>pbi,
                                          <double *>pbh, <double *>pdhn, <double *>pdx,
                                          <double *>pdh, <double *>pdwi, <double *>pdwh,
                                          <double *>pdbi, <double *>pdbh)
    _check(st)


# ------------------------------------------------------------------------------------------
# The extended GRU (layer norm, recurrent mask): fastlstm.h, "Extended GRU"
# ------------------------------------------------------------------------------------------

def grux_reserve_size(int64_t T, int64_t B, int64_t I, int64_t H, int itemsize,
                      bint linear_before_reset, bint layer_norm, bint masked) -> int:
    cdef fl_dims d = _dims(T, B, I, H, 0, 1)
    cdef size_t nbytes = 0
    _check(fl_grux_reserve_bytes(&d, itemsize, linear_before_reset, layer_norm, masked,
                                 &nbytes))
    return nbytes // itemsize


def grux_forward(x, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, mask, h0, lengths, y, h_n, reserve,
                 int64_t T, int64_t B, int64_t I, int64_t H, bint batch_first,
                 bint linear_before_reset, bint layer_norm, int n_threads):
    """Fill y, h_n and, when given, the training reserve (gains given iff layer_norm)."""
    cdef fl_dims d = _dims(T, B, I, H, batch_first, n_threads)
    dt = _real_dtype(x)
    cdef int64_t G = 3 * H
    cdef int lbr = linear_before_reset, ln = layer_norm
    cdef void *px = _ptr(x, dt, T * B * I, "x")
    cdef void *pwi = _ptr(w_ih, dt, G * I, "w_ih")
    cdef void *pwh = _ptr(w_hh, dt, G * H, "w_hh")
    cdef void *pbi = _ptr(b_ih, dt, G, "b_ih")
    cdef void *pbh = _ptr(b_hh, dt, G, "b_hh")
    cdef void *pgi = _ptr(g_ih, dt, G, "g_ih")
    cdef void *pgh = _ptr(g_hh, dt, G, "g_hh")
    cdef void *pm = _ptr(mask, dt, B * H, "mask")
    cdef void *ph0 = _ptr(h0, dt, B * H, "h0")
    cdef const int64_t *pl = <const int64_t *>_ptr(lengths, np.int64, B, "lengths")
    cdef void *py = _wptr(y, dt, T * B * H, "y")
    cdef void *phn = _wptr(h_n, dt, B * H, "h_n")
    cdef void *pr = NULL
    if reserve is not None:
        pr = _wptr(reserve, dt, grux_reserve_size(T, B, I, H, dt.itemsize, lbr, ln, pm != NULL),
                   "reserve")
    cdef fl_status st
    cdef list keep = []
    cdef size_t ns = 0
    _check(fl_grux_forward_scratch_bytes(&d, dt.itemsize, lbr, ln, pm != NULL, &ns))
    cdef void *ps = _scratch_ptr(ns, keep)
    if dt == np.float32:
        with nogil:
            st = fl_grux_forward_f32(&d, lbr, ln, <float *>px, <float *>pwi, <float *>pwh,
                                     <float *>pbi, <float *>pbh, <float *>pgi, <float *>pgh,
                                     <float *>pm, <float *>ph0, pl, <float *>py, <float *>phn,
                                     pr, ps, ns)
    else:
        with nogil:
            st = fl_grux_forward_f64(&d, lbr, ln, <double *>px, <double *>pwi, <double *>pwh,
                                     <double *>pbi, <double *>pbh, <double *>pgi,
                                     <double *>pgh, <double *>pm, <double *>ph0, pl,
                                     <double *>py, <double *>phn, pr, ps, ns)
    _check(st)


def grux_backward(x, w_ih, w_hh, g_ih, g_hh, mask, lengths, reserve, dy, dh_n,
                  dx, dw_ih, dw_hh, db_ih, db_hh, dg_ih, dg_hh, dh0,
                  int64_t T, int64_t B, int64_t I, int64_t H, bint batch_first,
                  bint linear_before_reset, bint layer_norm, int n_threads):
    """Fill every gradient array (dg_* iff layer_norm) from a training forward's reserve."""
    cdef fl_dims d = _dims(T, B, I, H, batch_first, n_threads)
    dt = _real_dtype(x)
    cdef int64_t G = 3 * H
    cdef int lbr = linear_before_reset, ln = layer_norm
    cdef void *px = _ptr(x, dt, T * B * I, "x")
    cdef void *pwi = _ptr(w_ih, dt, G * I, "w_ih")
    cdef void *pwh = _ptr(w_hh, dt, G * H, "w_hh")
    cdef void *pgi = _ptr(g_ih, dt, G, "g_ih")
    cdef void *pgh = _ptr(g_hh, dt, G, "g_hh")
    cdef void *pm = _ptr(mask, dt, B * H, "mask")
    cdef const int64_t *pl = <const int64_t *>_ptr(lengths, np.int64, B, "lengths")
    cdef void *pr = _ptr(reserve, dt, grux_reserve_size(T, B, I, H, dt.itemsize, lbr, ln,
                                                        pm != NULL), "reserve")
    cdef void *pdy = _ptr(dy, dt, T * B * H, "dy")
    cdef void *pdhn = _ptr(dh_n, dt, B * H, "dh_n")
    cdef void *pdx = _wptr(dx, dt, T * B * I, "dx")
    cdef void *pdwi = _wptr(dw_ih, dt, G * I, "dw_ih")
    cdef void *pdwh = _wptr(dw_hh, dt, G * H, "dw_hh")
    cdef void *pdbi = _wptr(db_ih, dt, G, "db_ih")
    cdef void *pdbh = _wptr(db_hh, dt, G, "db_hh")
    cdef void *pdgi = NULL
    cdef void *pdgh = NULL
    if ln:
        pdgi = _wptr(dg_ih, dt, G, "dg_ih")
        pdgh = _wptr(dg_hh, dt, G, "dg_hh")
    cdef void *pdh0 = _wptr(dh0, dt, B * H, "dh0")
    if pr == NULL:
        raise ValueError("internal: reserve is required")
    cdef fl_status st
    cdef list keep = []
    cdef size_t ns = 0
    _check(fl_grux_backward_scratch_bytes(&d, dt.itemsize, lbr, ln, pm != NULL, &ns))
    cdef void *ps = _scratch_ptr(ns, keep)
    if dt == np.float32:
        with nogil:
            st = fl_grux_backward_f32(&d, lbr, ln, <float *>px, <float *>pwi, <float *>pwh,
                                      <float *>pgi, <float *>pgh, <float *>pm, pl, pr,
                                      <float *>pdy, <float *>pdhn, <float *>pdx, <float *>pdwi,
                                      <float *>pdwh, <float *>pdbi, <float *>pdbh,
                                      <float *>pdgi, <float *>pdgh, <float *>pdh0, ps, ns)
    else:
        with nogil:
            st = fl_grux_backward_f64(&d, lbr, ln, <double *>px, <double *>pwi, <double *>pwh,
                                      <double *>pgi, <double *>pgh, <double *>pm, pl, pr,
                                      <double *>pdy, <double *>pdhn, <double *>pdx,
                                      <double *>pdwi, <double *>pdwh, <double *>pdbi,
                                      <double *>pdbh, <double *>pdgi, <double *>pdgh,
                                      <double *>pdh0, ps, ns)
    _check(st)


# ------------------------------------------- extended LSTM (projection, layer norm, mask)

cdef fl_lstm_ext _ext(int64_t P, bint layer_norm):
    cdef fl_lstm_ext e
    e.proj_size = P
    e.layer_norm = layer_norm
    return e


def lstmx_reserve_size(int64_t T, int64_t B, int64_t I, int64_t H, int64_t P, bint layer_norm,
                       int itemsize) -> int:
    cdef fl_dims d = _dims(T, B, I, H, 0, 1)
    cdef fl_lstm_ext e = _ext(P, layer_norm)
    cdef size_t nbytes = 0
    _check(fl_lstmx_reserve_bytes(&d, &e, itemsize, &nbytes))
    return nbytes // itemsize


def lstmx_forward(x, w_ih, w_hh, b_ih, b_hh, w_hr, ln_ih, ln_hh, ln_c, ln_bc, mask, h0, c0,
                  lengths, y, h_n, c_n, reserve, int64_t T, int64_t B, int64_t I, int64_t H,
                  int64_t P, bint layer_norm, bint batch_first, int n_threads):
    """Fill y [T,B,R] (or [B,T,R]), h_n [B,R], c_n [B,H] and, when given, the reserve
    (R = P if P > 0 else H)."""
    cdef fl_dims d = _dims(T, B, I, H, batch_first, n_threads)
    cdef fl_lstm_ext e = _ext(P, layer_norm)
    dt = _real_dtype(x)
    cdef int64_t G = 4 * H, R = P if P > 0 else H
    cdef void *px = _ptr(x, dt, T * B * I, "x")
    cdef void *pwi = _ptr(w_ih, dt, G * I, "w_ih")
    cdef void *pwh = _ptr(w_hh, dt, G * R, "w_hh")
    cdef void *pbi = _ptr(b_ih, dt, G, "b_ih")
    cdef void *pbh = _ptr(b_hh, dt, G, "b_hh")
    cdef void *pwr = _ptr(w_hr, dt, P * H, "w_hr")
    cdef void *pli = _ptr(ln_ih, dt, G, "ln_ih")
    cdef void *plh = _ptr(ln_hh, dt, G, "ln_hh")
    cdef void *plc = _ptr(ln_c, dt, H, "ln_c")
    cdef void *plb = _ptr(ln_bc, dt, H, "ln_bc")
    cdef void *pm = _ptr(mask, dt, B * R, "mask")
    cdef void *ph0 = _ptr(h0, dt, B * R, "h0")
    cdef void *pc0 = _ptr(c0, dt, B * H, "c0")
    cdef const int64_t *pl = <const int64_t *>_ptr(lengths, np.int64, B, "lengths")
    cdef void *py = _wptr(y, dt, T * B * R, "y")
    cdef void *phn = _wptr(h_n, dt, B * R, "h_n")
    cdef void *pcn = _wptr(c_n, dt, B * H, "c_n")
    cdef void *pr = NULL
    if reserve is not None:
        pr = _wptr(reserve, dt, lstmx_reserve_size(T, B, I, H, P, layer_norm, dt.itemsize),
                   "reserve")
    cdef fl_status st
    cdef list keep = []
    cdef size_t ns = 0
    _check(fl_lstmx_forward_scratch_bytes(&d, &e, dt.itemsize, pr != NULL, &ns))
    cdef void *ps = _scratch_ptr(ns, keep)
    if dt == np.float32:
        with nogil:
            st = fl_lstmx_forward_f32(&d, &e, <float *>px, <float *>pwi, <float *>pwh,
                                      <float *>pbi, <float *>pbh, <float *>pwr, <float *>pli,
                                      <float *>plh, <float *>plc, <float *>plb, <float *>pm,
                                      <float *>ph0, <float *>pc0, pl, <float *>py,
                                      <float *>phn, <float *>pcn, pr, ps, ns)
    else:
        with nogil:
            st = fl_lstmx_forward_f64(&d, &e, <double *>px, <double *>pwi, <double *>pwh,
                                      <double *>pbi, <double *>pbh, <double *>pwr,
                                      <double *>pli, <double *>plh, <double *>plc,
                                      <double *>plb, <double *>pm, <double *>ph0,
                                      <double *>pc0, pl, <double *>py, <double *>phn,
                                      <double *>pcn, pr, ps, ns)
    _check(st)


def lstmx_backward(x, w_ih, w_hh, w_hr, ln_ih, ln_hh, ln_c, mask, c0, lengths, reserve,
                   dy, dh_n, dc_n, dx, dw_ih, dw_hh, db_ih, db_hh, dw_hr, dln_ih, dln_hh,
                   dln_c, dln_bc, dh0, dc0, int64_t T, int64_t B, int64_t I, int64_t H,
                   int64_t P, bint layer_norm, bint batch_first, int n_threads):
    """Fill every gradient array from the reserve of a training forward."""
    cdef fl_dims d = _dims(T, B, I, H, batch_first, n_threads)
    cdef fl_lstm_ext e = _ext(P, layer_norm)
    dt = _real_dtype(x)
    cdef int64_t G = 4 * H, R = P if P > 0 else H
    cdef void *px = _ptr(x, dt, T * B * I, "x")
    cdef void *pwi = _ptr(w_ih, dt, G * I, "w_ih")
    cdef void *pwh = _ptr(w_hh, dt, G * R, "w_hh")
    cdef void *pwr = _ptr(w_hr, dt, P * H, "w_hr")
    cdef void *pli = _ptr(ln_ih, dt, G, "ln_ih")
    cdef void *plh = _ptr(ln_hh, dt, G, "ln_hh")
    cdef void *plc = _ptr(ln_c, dt, H, "ln_c")
    cdef void *pm = _ptr(mask, dt, B * R, "mask")
    cdef void *pc0 = _ptr(c0, dt, B * H, "c0")
    cdef const int64_t *pl = <const int64_t *>_ptr(lengths, np.int64, B, "lengths")
    cdef void *pr = _ptr(reserve, dt, lstmx_reserve_size(T, B, I, H, P, layer_norm,
                                                         dt.itemsize), "reserve")
    cdef void *pdy = _ptr(dy, dt, T * B * R, "dy")
    cdef void *pdhn = _ptr(dh_n, dt, B * R, "dh_n")
    cdef void *pdcn = _ptr(dc_n, dt, B * H, "dc_n")
    cdef void *pdx = _wptr(dx, dt, T * B * I, "dx")
    cdef void *pdwi = _wptr(dw_ih, dt, G * I, "dw_ih")
    cdef void *pdwh = _wptr(dw_hh, dt, G * R, "dw_hh")
    cdef void *pdbi = _wptr(db_ih, dt, G, "db_ih")
    cdef void *pdbh = _wptr(db_hh, dt, G, "db_hh")
    cdef void *pdwr = _wptr(dw_hr, dt, P * H, "dw_hr") if dw_hr is not None else NULL
    cdef void *pdli = _wptr(dln_ih, dt, G, "dln_ih") if dln_ih is not None else NULL
    cdef void *pdlh = _wptr(dln_hh, dt, G, "dln_hh") if dln_hh is not None else NULL
    cdef void *pdlc = _wptr(dln_c, dt, H, "dln_c") if dln_c is not None else NULL
    cdef void *pdlb = _wptr(dln_bc, dt, H, "dln_bc") if dln_bc is not None else NULL
    cdef void *pdh0 = _wptr(dh0, dt, B * R, "dh0")
    cdef void *pdc0 = _wptr(dc0, dt, B * H, "dc0")
    if pr == NULL:
        raise ValueError("internal: reserve is required")
    cdef fl_status st
    cdef list keep = []
    cdef size_t ns = 0
    _check(fl_lstmx_backward_scratch_bytes(&d, &e, dt.itemsize, &ns))
    cdef void *ps = _scratch_ptr(ns, keep)
    if dt == np.float32:
        with nogil:
            st = fl_lstmx_backward_f32(&d, &e, <float *>px, <float *>pwi, <float *>pwh,
                                       <float *>pwr, <float *>pli, <float *>plh, <float *>plc,
                                       <float *>pm, <float *>pc0, pl, pr, <float *>pdy,
                                       <float *>pdhn, <float *>pdcn, <float *>pdx,
                                       <float *>pdwi, <float *>pdwh, <float *>pdbi,
                                       <float *>pdbh, <float *>pdwr, <float *>pdli,
                                       <float *>pdlh, <float *>pdlc, <float *>pdlb,
                                       <float *>pdh0, <float *>pdc0, ps, ns)
    else:
        with nogil:
            st = fl_lstmx_backward_f64(&d, &e, <double *>px, <double *>pwi, <double *>pwh,
                                       <double *>pwr, <double *>pli, <double *>plh,
                                       <double *>plc, <double *>pm, <double *>pc0, pl, pr,
                                       <double *>pdy, <double *>pdhn, <double *>pdcn,
                                       <double *>pdx, <double *>pdwi, <double *>pdwh,
                                       <double *>pdbi, <double *>pdbh, <double *>pdwr,
                                       <double *>pdli, <double *>pdlh, <double *>pdlc,
                                       <double *>pdlb, <double *>pdh0, <double *>pdc0, ps, ns)
    _check(st)


# ----------------------------------------------------------------------------------- streams
# One step per call (fastlstm.h, "Streams"). fastlstm/stream.py validates the weights once and
# subclasses this type; its step() is called as it is, with no Python-level wrapper: an input
# that is already an aligned C-contiguous array of the stream's dtype and shape goes straight
# to C (a few pointer tests), anything else through the subclass's _coerce (which copies or
# raises an error naming the argument). The block is 64-byte aligned memory of exactly the
# size the C library asks for.

cdef class _Stream:
    cdef _AlignedBlock _block
    cdef void *_mem
    cdef readonly int64_t batch_size, input_size, hidden_size
    cdef readonly int num_threads
    cdef readonly object dtype
    cdef int _typenum
    cdef bint _lstm, _f32, _busy, _lbr
    cdef cnp.npy_intp _hdims[2]

    def _init_stream(self, bint lstm, w_ih, w_hh, b_ih, b_hh, int64_t B, int64_t I,
                     int64_t H, bint linear_before_reset, int n_threads):
        """Pack the weights (validated, C-contiguous, one dtype) into a new block."""
        if self._busy:  # the block a running step uses must not be replaced under it
            raise RuntimeError("a stream cannot be re-initialised while a thread is stepping it")
        dt = _real_dtype(w_ih)
        cdef int64_t G = (4 if lstm else 3) * H
        cdef void *pwi = _ptr(w_ih, dt, G * I, "w_ih")
        cdef void *pwh = _ptr(w_hh, dt, G * H, "w_hh")
        cdef void *pbi = _ptr(b_ih, dt, G, "b_ih")
        cdef void *pbh = _ptr(b_hh, dt, G, "b_hh")
        cdef size_t nbytes = 0
        cdef int lbr = linear_before_reset
        if lstm:
            _check(fl_lstm_stream_bytes(n_threads, B, I, H, dt.itemsize, &nbytes))
        else:
            _check(fl_gru_stream_bytes(n_threads, B, I, H, dt.itemsize, lbr, &nbytes))
        cdef _AlignedBlock block = _aligned_block(nbytes)
        cdef void *mem = block.ptr
        cdef fl_status st
        cdef bint f32 = dt == np.float32
        with nogil:
            if lstm and f32:
                st = fl_lstm_stream_init_f32(mem, nbytes, n_threads, B, I, H, <float *>pwi,
                                             <float *>pwh, <float *>pbi, <float *>pbh)
            elif lstm:
                st = fl_lstm_stream_init_f64(mem, nbytes, n_threads, B, I, H, <double *>pwi,
                                             <double *>pwh, <double *>pbi, <double *>pbh)
            elif f32:
                st = fl_gru_stream_init_f32(mem, nbytes, n_threads, B, I, H, lbr, <float *>pwi,
                                            <float *>pwh, <float *>pbi, <float *>pbh)
            else:
                st = fl_gru_stream_init_f64(mem, nbytes, n_threads, B, I, H, lbr,
                                            <double *>pwi, <double *>pwh, <double *>pbi,
                                            <double *>pbh)
        _check(st)
        self._block, self._mem = block, mem
        self.batch_size, self.input_size, self.hidden_size = B, I, H
        self.num_threads, self.dtype, self._typenum = n_threads, dt, dt.num
        self._lstm, self._f32, self._lbr = lstm, f32, linear_before_reset
        self._hdims[0], self._hdims[1] = B, H

    cdef inline bint _fits(self, object a, int64_t cols, bint writeable):
        """a is an aligned C-contiguous ndarray of the stream's dtype, shape (B, cols)."""
        if type(a) is not np.ndarray:
            return False
        cdef cnp.ndarray arr = <cnp.ndarray>a
        return (cnp.PyArray_TYPE(arr) == self._typenum and cnp.PyArray_NDIM(arr) == 2
                and cnp.PyArray_DIMS(arr)[0] == self.batch_size
                and cnp.PyArray_DIMS(arr)[1] == cols
                and cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISALIGNED(arr)
                and (not writeable or cnp.PyArray_ISWRITEABLE(arr)))

    def step(self, x_t, out=None):
        """Advance the stream by one step: ``x_t`` (B, I) -> the new ``h`` (B, H).

        ``out``: an aligned C-contiguous (B, H) array of the stream's dtype to write ``h``
        into (and return) instead of a new array; it must not overlap ``x_t``."""
        if self._mem == NULL:
            raise RuntimeError("the stream is not initialised")
        if not self._fits(x_t, self.input_size, False):
            x_t = self._coerce("x_t", x_t, (self.batch_size, self.input_size))
            if not self._fits(x_t, self.input_size, False):
                raise ValueError("internal: x_t was not made an aligned C-contiguous array")
        cdef cnp.ndarray x = <cnp.ndarray>x_t, y
        if out is None:
            y = cnp.PyArray_EMPTY(2, self._hdims, self._typenum, 0)
        else:
            if not self._fits(out, self.hidden_size, True):
                self._bad_out(out)
                raise ValueError("out must be an aligned, writeable, C-contiguous array")
            y = <cnp.ndarray>out
        cdef char *px = <char *>cnp.PyArray_DATA(x)
        cdef char *py = <char *>cnp.PyArray_DATA(y)
        cdef size_t itemsize = 4 if self._f32 else 8
        if (px < py + self.batch_size * self.hidden_size * itemsize and
                py < px + self.batch_size * self.input_size * itemsize):
            raise ValueError("out must not overlap x_t")
        if self._busy:
            raise RuntimeError("step or reset called on a stream another thread is stepping")
        self._busy = True
        cdef void *mem = self._mem
        cdef fl_status st
        with nogil:
            if self._lstm:
                if self._f32:
                    st = fl_lstm_stream_step_f32(mem, <float *>px, <float *>py)
                else:
                    st = fl_lstm_stream_step_f64(mem, <double *>px, <double *>py)
            elif self._f32:
                st = fl_gru_stream_step_f32(mem, <float *>px, <float *>py)
            else:
                st = fl_gru_stream_step_f64(mem, <double *>px, <double *>py)
        self._busy = False
        if st != FL_OK:
            _check(st)
        return y

    def _linear_before_reset(self):
        return self._lbr

    def _reset(self, h0, c0):
        """Set the state (validated (B, H) arrays or None = zeros)."""
        dt, n = self.dtype, self.batch_size * self.hidden_size
        cdef void *ph = _ptr(h0, dt, n, "h0")
        cdef void *pc = _ptr(c0, dt, n, "c0")
        if self._busy:
            raise RuntimeError("step or reset called on a stream another thread is stepping")
        cdef fl_status st
        if self._lstm and self._f32:
            st = fl_lstm_stream_reset_f32(self._mem, <float *>ph, <float *>pc)
        elif self._lstm:
            st = fl_lstm_stream_reset_f64(self._mem, <double *>ph, <double *>pc)
        elif self._f32:
            st = fl_gru_stream_reset_f32(self._mem, <float *>ph)
        else:
            st = fl_gru_stream_reset_f64(self._mem, <double *>ph)
        _check(st)

    def _state(self, bint cell):
        """A copy of h (or, LSTM, c), (B, H)."""
        if self._busy:  # a step running without the GIL is writing the state
            raise RuntimeError("the state of a stream another thread is stepping cannot be read")
        cdef cnp.ndarray a = cnp.PyArray_EMPTY(2, self._hdims, self._typenum, 0)
        cdef void *p = cnp.PyArray_DATA(a)
        cdef fl_status st
        if self._lstm and self._f32:
            st = fl_lstm_stream_state_f32(self._mem, <float *>p if not cell else NULL,
                                          <float *>p if cell else NULL)
        elif self._lstm:
            st = fl_lstm_stream_state_f64(self._mem, <double *>p if not cell else NULL,
                                          <double *>p if cell else NULL)
        elif self._f32:
            st = fl_gru_stream_state_f32(self._mem, <float *>p)
        else:
            st = fl_gru_stream_state_f64(self._mem, <double *>p)
        _check(st)
        return a
