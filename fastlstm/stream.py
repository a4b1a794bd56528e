"""Streaming: one time step per call, with the weights validated and packed once.

For input that arrives step by step (a control loop, audio frames, online prediction), where
``fastlstm.lstm_cell`` would check, allocate and pack the weights on every call. A stream keeps
its state (``h``, and ``c`` for the LSTM) inside; its steps give exactly the bits of
``fastlstm.lstm`` / ``fastlstm.gru`` over the same inputs (same thread count, same machine).
The C API underneath is ``fl_lstm_stream_*`` / ``fl_gru_stream_*`` in ``fastlstm.h``.

Shapes: B batch (``batch_size``), I input features, H hidden units.
"""
from __future__ import annotations

import operator
from typing import Any, Optional

import numpy as np

from . import _checks as chk
from . import _core

__all__ = ["LSTMStream", "GRUStream"]

_REF = "weight_ih"  # the dtype every array must share


def _threads(num_threads: Any) -> int:
    """``num_threads`` as a positive C int; None means 1 (see the class docstrings)."""
    if num_threads is None:
        return 1
    if isinstance(num_threads, bool):
        raise TypeError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    try:
        n = operator.index(num_threads)
    except TypeError:
        raise TypeError(f"num_threads must be a positive integer or None, "
                        f"got {num_threads!r}") from None
    if not 1 <= n <= 2**31 - 1:
        raise ValueError(f"num_threads must be in 1..2**31-1, got {n}")
    return n


def _batch(batch_size: Any) -> int:
    if isinstance(batch_size, bool):
        raise TypeError(f"batch_size must be a non-negative integer, got {batch_size!r}")
    try:
        B = operator.index(batch_size)
    except TypeError:
        raise TypeError(f"batch_size must be a non-negative integer, got {batch_size!r}") from None
    if B < 0:
        raise ValueError(f"batch_size must be a non-negative integer, got {B}")
    return B


class _StreamBase(_core._Stream):
    """What the LSTM and GRU streams share: validation once, the step in C (``_core._Stream``)."""

    _gates = 0

    def _setup(self, weight_ih, weight_hh, bias_ih, bias_hh, batch_size, num_threads,
               linear_before_reset: bool) -> None:
        g = self._gates
        weight_ih = chk.float_array("weight_ih", weight_ih)
        dt = weight_ih.dtype
        if weight_ih.ndim != 2 or weight_ih.shape[1] < 1:
            raise ValueError(f"weight_ih must have shape ({g}*H, I) with I >= 1, "
                             f"got {weight_ih.shape}")
        weight_hh = chk.same_dtype("weight_hh", weight_hh, dt, ref=_REF)
        if weight_hh.ndim != 2 or weight_hh.shape[1] < 1:
            raise ValueError(f"weight_hh must have shape ({g}*H, H) with H >= 1, "
                             f"got {weight_hh.shape}")
        H, I = weight_hh.shape[1], weight_ih.shape[1]
        chk.shape("weight_hh", weight_hh, (g * H, H))
        chk.shape("weight_ih", weight_ih, (g * H, I))
        bias_ih = chk.same_dtype("bias_ih", bias_ih, dt, ref=_REF)
        chk.shape("bias_ih", bias_ih, (g * H,))
        bias_hh = chk.same_dtype("bias_hh", bias_hh, dt, ref=_REF)
        chk.shape("bias_hh", bias_hh, (g * H,))
        B, n = _batch(batch_size), _threads(num_threads)
        # the packed weights (padded panels), the state and gate rows, one block per thread
        chk.memory(float(g * H + 64) * (I + H + 1) * dt.itemsize
                   + float(B) * (I + 8 * H) * dt.itemsize
                   + float(min(n, 256)) * (min(B, 192) + 12) * 256 * dt.itemsize,
                   f"a stream of batch {B} with input size {I} and hidden size {H}")
        self._init_stream(g == 4, chk.contiguous(weight_ih), chk.contiguous(weight_hh),
                          chk.contiguous(bias_ih), chk.contiguous(bias_hh), B, I, H,
                          bool(linear_before_reset), n)

    def _coerce(self, name: str, a: Any, shape: tuple) -> np.ndarray:
        """The slow path of step(): a checked, aligned C-contiguous copy (or an error)."""
        a = chk.same_dtype(name, a, self.dtype, ref="the stream's weights")
        chk.shape(name, a, shape)
        return chk.contiguous(a)

    def _bad_out(self, out: Any) -> None:
        """Raise the error that says why ``out`` cannot be written (no copy is made)."""
        B, H = self.batch_size, self.hidden_size
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array of shape ({B}, {H}), got "
                            f"{type(out).__name__}")
        if out.dtype != self.dtype:
            raise TypeError(f"out has dtype {out.dtype} but the stream's weights have dtype "
                            f"{self.dtype}")
        chk.shape("out", out, (B, H))
        if not out.flags.writeable:
            raise ValueError("out must be writeable")
        raise ValueError("out must be an aligned C-contiguous array (it is written in place)")

    def _state_arg(self, name: str, a: Any) -> Optional[np.ndarray]:
        if a is None:
            return None
        a = chk.same_dtype(name, a, self.dtype, ref="the stream's weights")
        chk.shape(name, a, (self.batch_size, self.hidden_size))
        return chk.contiguous(a)

    @property
    def h(self) -> np.ndarray:
        """A copy of the current hidden state, (B, H)."""
        return self._state(False)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(batch_size={self.batch_size}, input_size="
                f"{self.input_size}, hidden_size={self.hidden_size}, dtype={self.dtype}, "
                f"num_threads={self.num_threads})")


class LSTMStream(_StreamBase):
    """An LSTM run one time step per call, weights packed once, state kept inside.

    ``weight_ih`` (4H, I), ``weight_hh`` (4H, H), ``bias_ih``, ``bias_hh`` (4H,): PyTorch's
    layout and gate order (i, f, g, o), float32 or float64 (all the same dtype; it is the
    stream's dtype). The weights are copied (packed) at construction: changing the arrays
    afterwards does not change the stream.

    ``num_threads`` (default 1): threads split the batch rows into tiles of at least 4-8 rows,
    so small batches step on the calling thread alone. At B = 1 a thread team's start and join
    per call would cost more than the step itself (about 1-2 us at I = 28, H = 128), which is
    why streams do not follow ``fastlstm.set_num_threads``. Results are the same bits for any
    ``num_threads``.

    ``step(x_t, out=None)``: ``x_t`` (B, I) -> the new ``h`` (B, H), a new array or ``out``.
    After T steps from ``reset(h0, c0)``, the outputs are bitwise ``fastlstm.lstm(x, ...,
    h0, c0).output[t]`` for the same inputs. ``reset(h0=None, c0=None)`` sets the state
    (None = zeros; a new stream starts at zeros). ``h``, ``c``: copies of the state.
    A stream is not for two threads at once (one stream per thread; a second concurrent call
    raises RuntimeError).
    """

    _gates = 4

    def __init__(self, weight_ih: Any, weight_hh: Any, bias_ih: Any, bias_hh: Any,
                 batch_size: int = 1, *, num_threads: Optional[int] = None) -> None:
        self._setup(weight_ih, weight_hh, bias_ih, bias_hh, batch_size, num_threads, False)

    def reset(self, h0: Any = None, c0: Any = None) -> None:
        """Set the state to ``h0``, ``c0`` (B, H) (None = zeros)."""
        self._reset(self._state_arg("h0", h0), self._state_arg("c0", c0))

    @property
    def c(self) -> np.ndarray:
        """A copy of the current cell state, (B, H)."""
        return self._state(True)


class GRUStream(_StreamBase):
    """A GRU run one time step per call, weights packed once, state kept inside.

    ``weight_ih`` (3H, I), ``weight_hh`` (3H, H), ``bias_ih``, ``bias_hh`` (3H,): PyTorch's
    layout and gate order (r, z, n); ``linear_before_reset`` as in :func:`fastlstm.gru`.
    Otherwise as :class:`LSTMStream` (without ``c``): ``step(x_t, out=None)`` -> h (B, H),
    bitwise ``fastlstm.gru(...).output[t]``; ``reset(h0=None)``; ``h``.
    """

    _gates = 3

    def __init__(self, weight_ih: Any, weight_hh: Any, bias_ih: Any, bias_hh: Any,
                 batch_size: int = 1, *, linear_before_reset: bool = True,
                 num_threads: Optional[int] = None) -> None:
        self._setup(weight_ih, weight_hh, bias_ih, bias_hh, batch_size, num_threads,
                    linear_before_reset)

    @property
    def linear_before_reset(self) -> bool:
        return self._linear_before_reset()

    def reset(self, h0: Any = None, c0: Any = None) -> None:
        """Set the state to ``h0`` (B, H) (None = zeros). ``c0`` is there so that code written
        for both streams can call ``reset(h0, c0)``; a GRU has no cell state, so it must be
        None."""
        if c0 is not None:
            raise TypeError("c0 must be None: a GRU has no cell state")
        self._reset(self._state_arg("h0", h0), None)
