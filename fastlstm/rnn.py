"""The sequence and single-step functions: validation here, the whole time loop in C.

Shapes: T steps, B batch, I input features, H hidden units. Weights use PyTorch's layout and
gate order (LSTM rows i, f, g, o; GRU rows r, z, n), so they move between the two unchanged.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _checks as chk
from . import _core
from ._threads import get_num_threads
from .gradients import GRUCellGradients, GRUGradients, LSTMCellGradients, LSTMGradients

__all__ = ["lstm", "gru", "lstm_cell", "lstm_cell_backward", "gru_cell", "gru_cell_backward",
           "LSTMResult", "GRUResult", "LSTMGradients", "GRUGradients",
           "LSTMCellGradients", "GRUCellGradients"]


class _Problem:
    """Validated, C-contiguous arguments of one sequence call."""

    def __init__(self, gates: int, x, weight_ih, weight_hh, bias_ih, bias_hh, states: dict,
                 lengths, batch_first: bool, training: bool, extra_per_step: int = 0):
        x = chk.float_array("x", x)
        dt = x.dtype
        if x.ndim != 3:
            layout = "(B, T, I)" if batch_first else "(T, B, I)"
            raise ValueError(f"x must have 3 dimensions {layout}, got shape {x.shape}")
        if batch_first:
            B, T, I = x.shape
        else:
            T, B, I = x.shape
        if T < 1:
            raise ValueError(f"x must have at least one time step, got shape {x.shape}")
        if I < 1:
            raise ValueError(f"x must have at least one input feature, got shape {x.shape}")
        weight_hh, H = self._recurrent_weight(gates, weight_ih, weight_hh, dt)
        weight_ih = chk.same_dtype("weight_ih", weight_ih, dt)
        chk.shape("weight_ih", weight_ih, (gates * H, I))
        bias_ih = chk.same_dtype("bias_ih", bias_ih, dt)
        chk.shape("bias_ih", bias_ih, (gates * H,))
        bias_hh = chk.same_dtype("bias_hh", bias_hh, dt)
        chk.shape("bias_hh", bias_hh, (gates * H,))
        checked = {}
        for name, s in states.items():
            if s is not None:
                s = chk.same_dtype(name, s, dt)
                chk.shape(name, s, (B, H))
            checked[name] = s
        itemsize = dt.itemsize
        # Checked before anything is copied or scanned (h0 or lengths may be huge broadcast views).
        # Training: inputs, outputs, reserve and scratch of forward and backward together;
        # inference: a copy of x and the output, plus the GRU's input projection for all steps
        # (its forward computes X W_ih^T before the loop: T*B*3H) (upper bounds).
        per_step = (3 * I + 16 * H) if training else (I + H + (gates * H if gates == 3 else 0))
        per_step += self._extension_per_step(H, training)
        per_step += extra_per_step * H if training else 0  # the extended GRU's extra buffers
        chk.memory(float(T) * B * per_step * itemsize + float(B) * (3 * (I + H + 1) + 2 * H)
                   * itemsize + float(gates * H + 32) * (I + H) * 4 * itemsize,
                   f"a sequence of shape {x.shape} with hidden size {H}")
        self.lengths = chk.lengths_array(lengths, B, T)
        # Training keeps private copies for backward; inference only needs the arrays during
        # the call, so it copies only what is not already C-contiguous and aligned.
        keep = chk.owned_copy if training else chk.contiguous
        checked = {name: keep(s) for name, s in checked.items()}
        self.T, self.B, self.I, self.H, self.dtype = T, B, I, H, dt
        self.batch_first = bool(batch_first)
        self.x = keep(x)
        self.weight_ih, self.weight_hh = keep(weight_ih), keep(weight_hh)
        self.bias_ih, self.bias_hh = keep(bias_ih), keep(bias_hh)
        self.states = checked

    @staticmethod
    def _recurrent_weight(gates: int, weight_ih, weight_hh, dt) -> tuple:
        """weight_hh checked, and H (its columns)."""
        weight_hh = chk.same_dtype("weight_hh", weight_hh, dt)
        if weight_hh.ndim != 2 or weight_hh.shape[1] < 1:
            raise ValueError(f"weight_hh must have shape ({gates}*H, H), got {weight_hh.shape}")
        H = weight_hh.shape[1]
        chk.shape("weight_hh", weight_hh, (gates * H, H))
        return weight_hh, H

    def _extension_per_step(self, H: int, training: bool) -> float:
        """Elements per row and step the extended LSTM's buffers add (memory guard)."""
        return 0.0

    @property
    def seq_shape_h(self) -> tuple:
        return (self.B, self.T, self.H) if self.batch_first else (self.T, self.B, self.H)

    def grad(self, name: str, g: Any, shape: tuple) -> Optional[np.ndarray]:
        if g is None:
            return None
        g = chk.same_dtype(name, g, self.dtype, ref="the forward's x")
        chk.shape(name, g, shape)
        return chk.contiguous(g)


class LSTMResult:
    """What :func:`lstm` returns: ``output``, ``h_n``, ``c_n`` and :meth:`backward`."""

    def __init__(self, p: _Problem, output, h_n, c_n, reserve):
        self.output: np.ndarray = output
        self.h_n: np.ndarray = h_n
        self.c_n: np.ndarray = c_n
        self._p, self._reserve = p, reserve

    def backward(self, grad_output: Any = None, grad_h_n: Any = None,
                 grad_c_n: Any = None) -> LSTMGradients:
        """Backpropagation through time from the gradients of the loss with respect to
        ``output``, ``h_n`` and ``c_n`` (None means zero). May be called more than once.

        Returns
        -------
        LSTMGradients
            ``x``, ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, ``h0``, ``c0``.
        """
        p = self._p
        if self._reserve is None:
            raise RuntimeError("backward() needs the forward to run with training=True")
        dy = p.grad("grad_output", grad_output, p.seq_shape_h)
        dh_n = p.grad("grad_h_n", grad_h_n, (p.B, p.H))
        dc_n = p.grad("grad_c_n", grad_c_n, (p.B, p.H))
        e = lambda *s: _core.empty_aligned(s, p.dtype)  # noqa: E731
        g = LSTMGradients(x=_core.empty_aligned(p.x.shape, p.dtype), weight_ih=e(4 * p.H, p.I),
                          weight_hh=e(4 * p.H, p.H), bias_ih=e(4 * p.H), bias_hh=e(4 * p.H),
                          h0=e(p.B, p.H), c0=e(p.B, p.H))
        _core.lstm_backward(p.x, p.weight_ih, p.weight_hh, p.states["h0"], p.states["c0"],
                            p.lengths, self._reserve, dy, dh_n, dc_n, g.x, g.weight_ih,
                            g.weight_hh, g.bias_ih, g.bias_hh, g.h0, g.c0,
                            p.T, p.B, p.I, p.H, p.batch_first, get_num_threads())
        return g


class GRUResult:
    """What :func:`gru` returns: ``output``, ``h_n`` and :meth:`backward`."""

    def __init__(self, p: _Problem, output, h_n, reserve, linear_before_reset: bool,
                 ext: Optional[_GRUExtensions] = None):
        self.output: np.ndarray = output
        self.h_n: np.ndarray = h_n
        self._p, self._reserve, self._lbr, self._ext = p, reserve, linear_before_reset, ext

    def backward(self, grad_output: Any = None, grad_h_n: Any = None) -> GRUGradients:
        """Backpropagation through time from the gradients with respect to ``output`` and
        ``h_n`` (None means zero). May be called more than once.

        Returns
        -------
        GRUGradients
            ``x``, ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, ``h0``, and
            ``ln_gain_ih``, ``ln_gain_hh`` with layer norm (else None).
        """
        p = self._p
        if self._reserve is None:
            raise RuntimeError("backward() needs the forward to run with training=True")
        dy = p.grad("grad_output", grad_output, p.seq_shape_h)
        dh_n = p.grad("grad_h_n", grad_h_n, (p.B, p.H))
        if self._ext is not None:
            return self._ext.backward(p, self._reserve, self._lbr, dy, dh_n)
        e = lambda *s: _core.empty_aligned(s, p.dtype)  # noqa: E731
        g = GRUGradients(x=_core.empty_aligned(p.x.shape, p.dtype), weight_ih=e(3 * p.H, p.I),
                         weight_hh=e(3 * p.H, p.H), bias_ih=e(3 * p.H), bias_hh=e(3 * p.H),
                         h0=e(p.B, p.H))
        _core.gru_backward(p.x, p.weight_ih, p.weight_hh, p.states["h0"], p.lengths,
                           self._reserve, dy, dh_n, g.x, g.weight_ih, g.weight_hh, g.bias_ih,
                           g.bias_hh, g.h0, p.T, p.B, p.I, p.H, p.batch_first, self._lbr,
                           get_num_threads())
        return g


def lstm(x: Any, weight_ih: Any, weight_hh: Any, bias_ih: Any, bias_hh: Any,
         h0: Any = None, c0: Any = None, *, lengths: Any = None, batch_first: bool = False,
         training: bool = True, weight_hr: Any = None, ln_gain_ih: Any = None,
         ln_gain_hh: Any = None, ln_gain_c: Any = None, ln_bias_c: Any = None,
         recurrent_mask: Any = None) -> LSTMResult:
    """Run an LSTM over whole sequences (the time loop runs in C, parallel over the batch).

    ``i, f, o = sigmoid(.)``, ``g = tanh(.)`` of ``W_ih x + b_ih + W_hh h + b_hh``;
    ``c' = f*c + i*g``; ``h' = o*tanh(c')``. Three optional extensions, in any combination,
    run in the extended kernel (see "Extensions" below); without them, the plain one.

    Parameters
    ----------
    x : array (T, B, I), or (B, T, I) with ``batch_first``; float32 or float64.
    weight_ih : array (4H, I), gate rows in order i, f, g, o.
    weight_hh : array (4H, H).
    bias_ih, bias_hh : arrays (4H,).
    h0, c0 : arrays (B, H), optional
        Initial states; zeros when omitted.
    lengths : integer array (B,), optional
        Sequence b runs only its first ``lengths[b]`` steps (1..T); its outputs past the end
        are zero and ``h_n``/``c_n`` hold its state after its own last step.
    batch_first : bool
        Whether x and output are (B, T, *).
    training : bool
        Save what :meth:`LSTMResult.backward` needs (default). ``False`` saves nothing and
        is faster; backward then raises.

    Extensions (R = P with a projection, else H; H is ``weight_ih.shape[0] // 4``)
    weight_hr : array (P, H), optional
        Projection (PyTorch's ``proj_size``): ``h' = W_hr (o*tanh(c'))``. Then ``weight_hh``
        is (4H, P), h0, ``output`` and ``h_n`` have P columns; c0, ``c_n`` keep H.
    ln_gain_ih, ln_gain_hh : arrays (4H,); ln_gain_c, ln_bias_c : arrays (H,), optional
        Layer norm (haste's LayerNormLSTM), all four or none: the gates' pre-activations are
        ``LN(W_ih x; g_ih) + LN(W_hh h; g_hh) + b_ih + b_hh`` and
        ``h' = o*tanh(LN(c'; g_c) + b_c)``, where ``LN(v; g) = g*(v - mean(v)) /
        sqrt(var(v) + 1e-5)`` over each row's whole vector (all 4H gates; H for the cell).
    recurrent_mask : array (B, R), optional
        Multiplies h only inside the recurrent product ``W_hh (m*h)``, the same at every step
        (variational recurrent dropout); pass values already scaled (0 or 1/(1-p)).

    Returns
    -------
    LSTMResult
        ``output`` (T, B, R) (or (B, T, R)), ``h_n`` (B, R) and ``c_n`` (B, H),
        ``backward(...)``.

    Raises
    ------
    TypeError, ValueError
        For a wrong dtype, rank, shape or length, naming the argument.
    """
    ext = dict(weight_hr=weight_hr, ln_gain_ih=ln_gain_ih, ln_gain_hh=ln_gain_hh,
               ln_gain_c=ln_gain_c, ln_bias_c=ln_bias_c, recurrent_mask=recurrent_mask)
    if any(a is not None for a in ext.values()):
        return _lstm_extended(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths,
                              batch_first, training, ext)
    p = _Problem(4, x, weight_ih, weight_hh, bias_ih, bias_hh, {"h0": h0, "c0": c0},
                 lengths, batch_first, training)
    y = _core.empty_aligned(p.seq_shape_h, p.dtype)
    h_n, c_n = _core.empty_aligned((p.B, p.H), p.dtype), _core.empty_aligned((p.B, p.H), p.dtype)
    n_reserve = _core.lstm_reserve_size(p.T, p.B, p.I, p.H, p.dtype.itemsize)
    reserve = _core.empty_aligned((n_reserve,), p.dtype) if training else None
    _core.lstm_forward(p.x, p.weight_ih, p.weight_hh, p.bias_ih, p.bias_hh, p.states["h0"],
                       p.states["c0"], p.lengths, y, h_n, c_n, reserve,
                       p.T, p.B, p.I, p.H, p.batch_first, get_num_threads())
    return LSTMResult(p, y, h_n, c_n, reserve)


def gru(x: Any, weight_ih: Any, weight_hh: Any, bias_ih: Any, bias_hh: Any, h0: Any = None,
        *, lengths: Any = None, batch_first: bool = False, linear_before_reset: bool = True,
        training: bool = True, ln_gain_ih: Any = None, ln_gain_hh: Any = None,
        recurrent_mask: Any = None) -> GRUResult:
    """Run a GRU over whole sequences (the time loop runs in C, parallel over the batch).

    ``r, z = sigmoid(.)``; ``h' = (1-z)*n + z*h`` with, for ``linear_before_reset=True``
    (PyTorch, cuDNN, Keras ``reset_after``), ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))``
    and, for ``False`` (the original GRU, TF1 ``GRUCell``),
    ``n = tanh(W_in x + b_in + W_hn (r*h) + b_hn)``.

    Parameters
    ----------
    x : array (T, B, I), or (B, T, I) with ``batch_first``; float32 or float64.
    weight_ih : array (3H, I), gate rows in order r, z, n.
    weight_hh : array (3H, H).
    bias_ih, bias_hh : arrays (3H,).
    h0 : array (B, H), optional
    lengths, batch_first, training
        As for :func:`lstm`.
    linear_before_reset : bool
        Which GRU variant (see above).
    ln_gain_ih, ln_gain_hh : arrays (3H,), optional
        Layer normalisation (both or neither; ``linear_before_reset=True`` only):
        ``W_ih x`` and ``W_hh h`` each become ``g * (v - mean(v)) / sqrt(var(v) + 1e-5)``
        over their whole 3H row before the biases are added (haste's LayerNormGRU).
    recurrent_mask : array (B, H), optional
        Variational recurrent dropout (Keras ``recurrent_dropout``): ``h`` is multiplied by
        this mask, already scaled (0 or 1/(1-p)), inside the recurrent products at every
        step; the ``z*h`` term and the state keep the unmasked ``h``.

    Returns
    -------
    GRUResult
        ``output``, ``h_n`` (B, H) and ``backward(...)``.

    Without the gains and the mask this is the plain GRU kernel, bit for bit.
    """
    lbr = bool(linear_before_reset)
    layer_norm = _layer_norm_flag(ln_gain_ih, ln_gain_hh, lbr)
    extended = layer_norm or recurrent_mask is not None
    p = _Problem(3, x, weight_ih, weight_hh, bias_ih, bias_hh, {"h0": h0}, lengths,
                 batch_first, training,
                 extra_per_step=_GRUExtensions.extra_per_step(layer_norm, recurrent_mask)
                 if extended else 0)
    if extended:
        ext = _GRUExtensions(p, ln_gain_ih, ln_gain_hh, recurrent_mask, training)
        return ext.forward(p, lbr, training)
    y = _core.empty_aligned(p.seq_shape_h, p.dtype)
    h_n = _core.empty_aligned((p.B, p.H), p.dtype)
    n_reserve = _core.gru_reserve_size(p.T, p.B, p.I, p.H, p.dtype.itemsize, lbr)
    reserve = _core.empty_aligned((n_reserve,), p.dtype) if training else None
    _core.gru_forward(p.x, p.weight_ih, p.weight_hh, p.bias_ih, p.bias_hh, p.states["h0"],
                      p.lengths, y, h_n, reserve, p.T, p.B, p.I, p.H, p.batch_first, lbr,
                      get_num_threads())
    return GRUResult(p, y, h_n, reserve, lbr)


# ----------------------------------------------------------------------------------------------
# The extended GRU: layer normalisation and a recurrent (variational dropout) mask
# ----------------------------------------------------------------------------------------------

def _layer_norm_flag(ln_gain_ih: Any, ln_gain_hh: Any, linear_before_reset: bool) -> bool:
    """Whether layer norm is on: both gains or neither, and only with linear_before_reset."""
    if (ln_gain_ih is None) != (ln_gain_hh is None):
        missing = "ln_gain_hh" if ln_gain_hh is None else "ln_gain_ih"
        raise ValueError(f"{missing} is missing: layer norm needs both ln_gain_ih and "
                         f"ln_gain_hh (or neither)")
    if ln_gain_ih is not None and not linear_before_reset:
        raise ValueError("layer norm (ln_gain_ih, ln_gain_hh) is only supported with "
                         "linear_before_reset=True")
    return ln_gain_ih is not None


class _GRUExtensions:
    """The validated gains and mask of an extended GRU call, and its kernel calls."""

    @staticmethod
    def extra_per_step(layer_norm: bool, recurrent_mask: Any) -> int:
        """Elements per (step, sequence), in units of H, beyond a plain GRU's in training:
        the masked h rows (H), the normalised rows and their statistics (6H + 2) and the
        backward's pre-norm gradients (6H)."""
        return (1 if recurrent_mask is not None else 0) + (13 if layer_norm else 0)

    def __init__(self, p: _Problem, ln_gain_ih: Any, ln_gain_hh: Any, recurrent_mask: Any,
                 training: bool):
        # training keeps private copies, as _Problem does: backward must see these values
        keep = chk.owned_copy if training else chk.contiguous

        def checked(name: str, a: Any, shape: tuple) -> Optional[np.ndarray]:
            if a is None:
                return None
            a = chk.same_dtype(name, a, p.dtype)
            chk.shape(name, a, shape)
            return keep(a)

        self.g_ih = checked("ln_gain_ih", ln_gain_ih, (3 * p.H,))
        self.g_hh = checked("ln_gain_hh", ln_gain_hh, (3 * p.H,))
        self.mask = checked("recurrent_mask", recurrent_mask, (p.B, p.H))
        self.layer_norm = self.g_ih is not None

    def forward(self, p: _Problem, lbr: bool, training: bool) -> GRUResult:
        y = _core.empty_aligned(p.seq_shape_h, p.dtype)
        h_n = _core.empty_aligned((p.B, p.H), p.dtype)
        n_reserve = _core.grux_reserve_size(p.T, p.B, p.I, p.H, p.dtype.itemsize, lbr,
                                            self.layer_norm, self.mask is not None)
        reserve = _core.empty_aligned((n_reserve,), p.dtype) if training else None
        _core.grux_forward(p.x, p.weight_ih, p.weight_hh, p.bias_ih, p.bias_hh, self.g_ih,
                           self.g_hh, self.mask, p.states["h0"], p.lengths, y, h_n, reserve,
                           p.T, p.B, p.I, p.H, p.batch_first, lbr, self.layer_norm,
                           get_num_threads())
        return GRUResult(p, y, h_n, reserve, lbr, self)

    def backward(self, p: _Problem, reserve, lbr: bool, dy, dh_n) -> GRUGradients:
        e = lambda *s: _core.empty_aligned(s, p.dtype)  # noqa: E731
        G = 3 * p.H
        ln = self.layer_norm
        g = GRUGradients(x=_core.empty_aligned(p.x.shape, p.dtype), weight_ih=e(G, p.I),
                         weight_hh=e(G, p.H), bias_ih=e(G), bias_hh=e(G), h0=e(p.B, p.H),
                         ln_gain_ih=e(G) if ln else None, ln_gain_hh=e(G) if ln else None)
        _core.grux_backward(p.x, p.weight_ih, p.weight_hh, self.g_ih, self.g_hh, self.mask,
                            p.lengths, reserve, dy, dh_n, g.x, g.weight_ih, g.weight_hh,
                            g.bias_ih, g.bias_hh, g.ln_gain_ih, g.ln_gain_hh, g.h0,
                            p.T, p.B, p.I, p.H, p.batch_first, lbr, ln, get_num_threads())
        return g


def _cell_args(gates: int, x, states: dict, weight_ih, weight_hh, bias_ih, bias_hh):
    """Validate a single step: x (B, I), states (B, H), weights as for the sequences."""
    x = chk.float_array("x", x)
    if x.ndim != 2:
        raise ValueError(f"x must have 2 dimensions (B, I), got shape {x.shape}")
    B, I = x.shape
    if I < 1:
        raise ValueError(f"x must have at least one input feature, got shape {x.shape}")
    dt = x.dtype
    weight_hh = chk.same_dtype("weight_hh", weight_hh, dt)
    if weight_hh.ndim != 2 or weight_hh.shape[1] < 1:
        raise ValueError(f"weight_hh must have shape ({gates}*H, H), got {weight_hh.shape}")
    H = weight_hh.shape[1]
    chk.shape("weight_hh", weight_hh, (gates * H, H))
    arrays = {"x": x, "weight_hh": weight_hh}
    for name, a, s in (("weight_ih", weight_ih, (gates * H, I)), ("bias_ih", bias_ih, (gates * H,)),
                       ("bias_hh", bias_hh, (gates * H,))):
        a = chk.same_dtype(name, a, dt)
        chk.shape(name, a, s)
        arrays[name] = a
    for name, a in states.items():
        if a is None:
            raise TypeError(f"{name} must be a ({B}, {H}) array, got None")
        a = chk.same_dtype(name, a, dt)
        chk.shape(name, a, (B, H))
        arrays[name] = a
    chk.memory(float(B) * (I + 16 * H) * dt.itemsize + float(gates * H) * (I + H) * 3 * dt.itemsize,
               f"a step of batch {B} with hidden size {H}")
    return {k: chk.contiguous(v) for k, v in arrays.items()}, B, I, H, dt


def _cell_grad(name: str, g: Any, B: int, H: int, dt: np.dtype) -> Optional[np.ndarray]:
    if g is None:
        return None
    g = chk.same_dtype(name, g, dt)
    chk.shape(name, g, (B, H))
    return chk.contiguous(g)


def lstm_cell(x: Any, h: Any, c: Any, weight_ih: Any, weight_hh: Any, bias_ih: Any,
              bias_hh: Any) -> tuple:
    """One LSTM step (the fused cell): x (B, I), h and c (B, H) -> (h_new, c_new)."""
    a, B, I, H, dt = _cell_args(4, x, {"h": h, "c": c}, weight_ih, weight_hh, bias_ih, bias_hh)
    h_new, c_new = _core.empty_aligned((B, H), dt), _core.empty_aligned((B, H), dt)
    _core.lstm_cell_forward(a["x"], a["h"], a["c"], a["weight_ih"], a["weight_hh"], a["bias_ih"],
                            a["bias_hh"], h_new, c_new, B, I, H, get_num_threads())
    return h_new, c_new


def lstm_cell_backward(x: Any, h: Any, c: Any, weight_ih: Any, weight_hh: Any, bias_ih: Any,
                       bias_hh: Any, grad_h: Any = None, grad_c: Any = None) -> LSTMCellGradients:
    """Gradients of one LSTM step, given the gradients with respect to ``h_new`` and ``c_new``
    (None means zero). The gates are recomputed from the inputs, so nothing from the forward
    needs to be kept."""
    a, B, I, H, dt = _cell_args(4, x, {"h": h, "c": c}, weight_ih, weight_hh, bias_ih, bias_hh)
    dh_new, dc_new = _cell_grad("grad_h", grad_h, B, H, dt), _cell_grad("grad_c", grad_c, B, H, dt)
    e = lambda *s: _core.empty_aligned(s, dt)  # noqa: E731
    g = LSTMCellGradients(x=e(B, I), h=e(B, H), c=e(B, H), weight_ih=e(4 * H, I),
                          weight_hh=e(4 * H, H), bias_ih=e(4 * H), bias_hh=e(4 * H))
    _core.lstm_cell_backward(a["x"], a["h"], a["c"], a["weight_ih"], a["weight_hh"],
                             a["bias_ih"], a["bias_hh"], dh_new, dc_new, g.x, g.h, g.c,
                             g.weight_ih, g.weight_hh, g.bias_ih, g.bias_hh, B, I, H,
                             get_num_threads())
    return g


def gru_cell(x: Any, h: Any, weight_ih: Any, weight_hh: Any, bias_ih: Any, bias_hh: Any, *,
             linear_before_reset: bool = True) -> np.ndarray:
    """One GRU step: x (B, I), h (B, H) -> h_new (B, H). Variants as in :func:`gru`."""
    a, B, I, H, dt = _cell_args(3, x, {"h": h}, weight_ih, weight_hh, bias_ih, bias_hh)
    h_new = _core.empty_aligned((B, H), dt)
    _core.gru_cell_forward(a["x"], a["h"], a["weight_ih"], a["weight_hh"], a["bias_ih"],
                           a["bias_hh"], h_new, B, I, H, bool(linear_before_reset),
                           get_num_threads())
    return h_new


def gru_cell_backward(x: Any, h: Any, weight_ih: Any, weight_hh: Any, bias_ih: Any,
                      bias_hh: Any, grad_h: Any = None, *,
                      linear_before_reset: bool = True) -> GRUCellGradients:
    """Gradients of one GRU step given the gradient with respect to ``h_new`` (None = 0)."""
    a, B, I, H, dt = _cell_args(3, x, {"h": h}, weight_ih, weight_hh, bias_ih, bias_hh)
    dh_new = _cell_grad("grad_h", grad_h, B, H, dt)
    e = lambda *s: _core.empty_aligned(s, dt)  # noqa: E731
    g = GRUCellGradients(x=e(B, I), h=e(B, H), weight_ih=e(3 * H, I), weight_hh=e(3 * H, H),
                         bias_ih=e(3 * H), bias_hh=e(3 * H))
    _core.gru_cell_backward(a["x"], a["h"], a["weight_ih"], a["weight_hh"], a["bias_ih"],
                            a["bias_hh"], dh_new, g.x, g.h, g.weight_ih, g.weight_hh, g.bias_ih,
                            g.bias_hh, B, I, H, bool(linear_before_reset), get_num_threads())
    return g



# ----------------------------------------------------------------------------------------------
# The extended LSTM: projection, layer norm, recurrent mask (csrc/fastlstm.h, "Extended LSTM")
# ----------------------------------------------------------------------------------------------

_LN_NAMES = ("ln_gain_ih", "ln_gain_hh", "ln_gain_c", "ln_bias_c")


class _ExtProblem(_Problem):
    """Validated, C-contiguous arguments of an extended LSTM call. R = P with a projection,
    else H; H comes from weight_ih (weight_hh has R columns)."""

    def __init__(self, x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths,
                 batch_first: bool, training: bool, ext: dict):
        missing = [n for n in _LN_NAMES if ext[n] is None]
        if 0 < len(missing) < len(_LN_NAMES):
            raise ValueError(f"layer norm needs all of {', '.join(_LN_NAMES)}; missing "
                             f"{', '.join(missing)}")
        self.layer_norm = not missing
        self._weight_hr = ext["weight_hr"]
        # x, weight_ih, the biases, lengths and the memory guard as for the plain LSTM; the
        # hooks below check weight_hr and weight_hh and add the extension's buffers
        super().__init__(4, x, weight_ih, weight_hh, bias_ih, bias_hh, {}, lengths,
                         batch_first, training)
        keep = chk.owned_copy if training else chk.contiguous
        B, H, R, dt = self.B, self.H, self.R, self.dtype
        arrays = {}
        for name, a, shape in (("weight_hr", self._weight_hr, (self.P, H)),
                               ("ln_gain_ih", ext["ln_gain_ih"], (4 * H,)),
                               ("ln_gain_hh", ext["ln_gain_hh"], (4 * H,)),
                               ("ln_gain_c", ext["ln_gain_c"], (H,)),
                               ("ln_bias_c", ext["ln_bias_c"], (H,)),
                               ("recurrent_mask", ext["recurrent_mask"], (B, R)),
                               ("h0", h0, (B, R)), ("c0", c0, (B, H))):
            if a is not None:
                a = chk.same_dtype(name, a, dt)
                chk.shape(name, a, shape)
            arrays[name] = keep(a)
        self.states = {"h0": arrays.pop("h0"), "c0": arrays.pop("c0")}
        self.ext = arrays
        del self._weight_hr

    def _recurrent_weight(self, gates: int, weight_ih, weight_hh, dt) -> tuple:
        """H from weight_ih's rows; weight_hr (P, H) checked; weight_hh (4H, R)."""
        weight_ih = chk.same_dtype("weight_ih", weight_ih, dt)
        if weight_ih.ndim != 2 or weight_ih.shape[0] < gates or weight_ih.shape[0] % gates:
            raise ValueError(f"weight_ih must have shape ({gates}*H, I), got {weight_ih.shape}")
        H = weight_ih.shape[0] // gates
        self.P = 0
        if self._weight_hr is not None:
            w_hr = chk.same_dtype("weight_hr", self._weight_hr, dt)
            if w_hr.ndim != 2 or w_hr.shape[0] < 1 or w_hr.shape[1] != H:
                raise ValueError(f"weight_hr must have shape (P, H) = (P, {H}) with P >= 1, "
                                 f"got {w_hr.shape}")
            self.P = w_hr.shape[0]
        self.R = self.P or H
        weight_hh = chk.same_dtype("weight_hh", weight_hh, dt)
        if self.P and weight_hh.shape != (gates * H, self.P):
            raise ValueError(f"weight_hh must have shape (4*H, P) = {(gates * H, self.P)} with "
                             f"a projection (P = weight_hr.shape[0]), got {weight_hh.shape}")
        chk.shape("weight_hh", weight_hh, (gates * H, self.R))
        return weight_hh, H

    def _extension_per_step(self, H: int, training: bool) -> float:
        """Upper bounds: the extension's reserve (gates, c, tanh, m*h, r; with layer norm the
        normalised a_x, a_h, c and their statistics), backward's dL/dpre (and dA_h, dL/dLN(c)),
        dL/dh_t and the packed sequence operands; inference only output rows of R columns."""
        P, R = self.P, self.R
        if not training:
            return R
        return 10 * H + 4 * P + 3 * R + (14 * H + 3 if self.layer_norm else 0)

    @property
    def seq_shape_h(self) -> tuple:
        return (self.B, self.T, self.R) if self.batch_first else (self.T, self.B, self.R)

    def args(self) -> tuple:
        """The arguments after the plain ones, in the order of the _core functions."""
        e = self.ext
        return (e["weight_hr"], e["ln_gain_ih"], e["ln_gain_hh"], e["ln_gain_c"])


class _LSTMXResult(LSTMResult):
    """:class:`LSTMResult` of the extended LSTM: its gradients include ``weight_hr`` and the
    layer-norm parameters (None for a feature that is off)."""

    def backward(self, grad_output: Any = None, grad_h_n: Any = None,
                 grad_c_n: Any = None) -> LSTMGradients:
        p = self._p
        if self._reserve is None:
            raise RuntimeError("backward() needs the forward to run with training=True")
        dy = p.grad("grad_output", grad_output, p.seq_shape_h)
        dh_n = p.grad("grad_h_n", grad_h_n, (p.B, p.R))
        dc_n = p.grad("grad_c_n", grad_c_n, (p.B, p.H))
        e = lambda *s: _core.empty_aligned(s, p.dtype)  # noqa: E731
        G, ln = 4 * p.H, p.layer_norm
        g = LSTMGradients(x=_core.empty_aligned(p.x.shape, p.dtype), weight_ih=e(G, p.I),
                          weight_hh=e(G, p.R), bias_ih=e(G), bias_hh=e(G), h0=e(p.B, p.R),
                          c0=e(p.B, p.H), weight_hr=e(p.P, p.H) if p.P else None,
                          ln_gain_ih=e(G) if ln else None, ln_gain_hh=e(G) if ln else None,
                          ln_gain_c=e(p.H) if ln else None, ln_bias_c=e(p.H) if ln else None)
        _core.lstmx_backward(p.x, p.weight_ih, p.weight_hh, *p.args(), p.ext["recurrent_mask"],
                             p.states["c0"], p.lengths, self._reserve, dy, dh_n, dc_n, g.x,
                             g.weight_ih, g.weight_hh, g.bias_ih, g.bias_hh, g.weight_hr,
                             g.ln_gain_ih, g.ln_gain_hh, g.ln_gain_c, g.ln_bias_c, g.h0, g.c0,
                             p.T, p.B, p.I, p.H, p.P, ln, p.batch_first, get_num_threads())
        return g


def _lstm_extended(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, batch_first,
                   training, ext: dict) -> LSTMResult:
    """:func:`lstm` with at least one extension given (validated here, run in C)."""
    p = _ExtProblem(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, batch_first,
                    training, ext)
    y = _core.empty_aligned(p.seq_shape_h, p.dtype)
    h_n, c_n = _core.empty_aligned((p.B, p.R), p.dtype), _core.empty_aligned((p.B, p.H), p.dtype)
    reserve = None
    if training:
        n = _core.lstmx_reserve_size(p.T, p.B, p.I, p.H, p.P, p.layer_norm, p.dtype.itemsize)
        reserve = _core.empty_aligned((n,), p.dtype)
    _core.lstmx_forward(p.x, p.weight_ih, p.weight_hh, p.bias_ih, p.bias_hh, *p.args(),
                        p.ext["ln_bias_c"], p.ext["recurrent_mask"], p.states["h0"],
                        p.states["c0"], p.lengths, y, h_n, c_n, reserve, p.T, p.B, p.I, p.H,
                        p.P, p.layer_norm, p.batch_first, get_num_threads())
    return _LSTMXResult(p, y, h_n, c_n, reserve)
