"""Pure-NumPy reference LSTM and GRU: the oracle every C kernel is tested against.

Written to be read, not to be fast. Everything is computed in float64 and every result is a
float64 array, whatever the (common) dtype of the inputs. The layout follows PyTorch's RNN.cpp:
one *cell* (a single time step, forward and backward), then a *scan* that runs a cell over time.

Shapes: T steps, B batch, I input, H hidden. Weights use PyTorch's layout and gate order.

LSTM (gate rows i, f, g, o of ``weight_ih`` (4H, I), ``weight_hh`` (4H, H), ``bias_*`` (4H,))::

    [a_i, a_f, a_g, a_o] = x W_ih^T + b_ih + h W_hh^T + b_hh
    i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
    c' = f * c + i * g
    h' = o * tanh(c')

GRU (gate rows r, z, n of ``weight_ih`` (3H, I), ``weight_hh`` (3H, H), ``bias_*`` (3H,))::

    [x_r, x_z, x_n] = x W_ih^T + b_ih
    [h_r, h_z, h_n] = h W_hh^T + b_hh
    r = sigmoid(x_r + h_r)     z = sigmoid(x_z + h_z)
    linear_before_reset=True  (PyTorch, cuDNN):  n = tanh(x_n + r * h_n)
    linear_before_reset=False (original GRU):    n = tanh(x_n + (r * h) W_hn^T + b_hn)
    h' = (1 - z) * n + z * h

Extended GRU (``gru`` with ``ln_gain_ih``/``ln_gain_hh`` and/or ``recurrent_mask`` m (B, H))::

    hm = m * h                      (the mask enters only the products with W_hh)
    layer norm off: as above with hm in place of h inside W_hh's products
    layer norm on (linear_before_reset=True only):
        [x_r, x_z, x_n] = LN(x W_ih^T; g_ih) + b_ih,  [h_r, h_z, h_n] = LN(hm W_hh^T; g_hh) + b_hh
    LN(v; g) = g * (v - mean(v)) / sqrt(var(v) + 1e-5) over each whole 3H row
    h' = (1 - z) * n + z * h         (the unmasked h)

Sequences (``lstm``, ``gru``): ``x`` is (T, B, I), or (B, T, I) with ``batch_first``. With
``lengths`` (B,) in 1..T, sequence b runs only its first ``lengths[b]`` steps (PyTorch
packed-sequence semantics): its output rows past the end are 0, ``h_n``/``c_n`` are its state
after its own last step, and ``grad_output`` past its end is ignored. Missing initial states and
missing upstream gradients mean zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ._checks import lengths_array
from .gradients import GRUCellGradients, GRUGradients, LSTMCellGradients, LSTMGradients

__all__ = [
    "lstm", "lstm_extended", "gru", "lstm_cell", "lstm_cell_backward", "gru_cell", "gru_cell_backward",
    "LSTMResult", "GRUResult", "LSTMGradients", "GRUGradients",
    "LSTMCellGradients", "GRUCellGradients",
]

ArrayLike = np.ndarray


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------

def _common_dtype(**arrays: Optional[ArrayLike]) -> np.dtype:
    """Check that every given array is float32 or float64 and that they all share one dtype."""
    dtype = None
    first = None
    for name, a in arrays.items():
        if a is None:
            continue
        a_dtype = np.asarray(a).dtype
        if a_dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be float32 or float64, got {a_dtype}")
        if dtype is None:
            dtype, first = a_dtype, name
        elif a_dtype != dtype:
            raise TypeError(f"{name} has dtype {a_dtype} but {first} has dtype {dtype}; "
                            "all arrays must have the same dtype")
    return dtype


def _fmt_shape(shape: tuple) -> str:
    """(4, None) -> "(4, ?)"; (4,) -> "(4,)"."""
    items = ["?" if s is None else str(s) for s in shape]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _f64(name: str, a: ArrayLike, shape: tuple) -> np.ndarray:
    """Return ``a`` as a new float64 array after checking its shape (None in ``shape``: any)."""
    a = np.asarray(a)
    if a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)):
        raise ValueError(f"{name} must have shape {_fmt_shape(shape)}, got {a.shape}")
    # Always a C-ordered copy: the caller's array is never touched, and the arithmetic does not
    # depend on the caller's memory layout.
    return np.array(a, dtype=np.float64, order="C")


def _hidden_size(weight_hh: ArrayLike, n_gates: int) -> int:
    shape = np.shape(weight_hh)
    if len(shape) != 2 or shape[0] != n_gates * shape[1]:
        raise ValueError(f"weight_hh must have shape ({n_gates}*H, H), got {shape}")
    return shape[1]


def _check_lengths(lengths: Optional[ArrayLike], T: int, B: int) -> np.ndarray:
    """Validated ``lengths`` (the kernels' own check); None means all T steps."""
    checked = lengths_array(lengths, B, T)
    return np.full(B, T, dtype=np.int64) if checked is None else checked


@dataclass
class _Params:
    """The four weight arrays of one cell, float64."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray


def _params(weight_ih, weight_hh, bias_ih, bias_hh, n_gates: int, I: Optional[int]) -> _Params:
    H = _hidden_size(weight_hh, n_gates)
    G = n_gates * H
    return _Params(w_ih=_f64("weight_ih", weight_ih, (G, I)),
                   w_hh=_f64("weight_hh", weight_hh, (G, H)),
                   b_ih=_f64("bias_ih", bias_ih, (G,)),
                   b_hh=_f64("bias_hh", bias_hh, (G,)))


def _optional_f64(name: str, a: Optional[ArrayLike], shape: tuple) -> np.ndarray:
    """An optional (B, H) array: None means zeros."""
    return np.zeros(shape) if a is None else _f64(name, a, shape)


# ----------------------------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------------------------

def _sigmoid(a: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-a) = inf for a << 0 gives the right limit, 0
        return 1.0 / (1.0 + np.exp(-a))


# ----------------------------------------------------------------------------------------------
# LSTM cell: forward and backward of one step
# ----------------------------------------------------------------------------------------------

def _lstm_step(x: np.ndarray, state: tuple, p: _Params) -> tuple:
    """One LSTM step. x (B, I), state (h, c) each (B, H). Returns ((h1, c1), cache)."""
    h, c = state
    a = x @ p.w_ih.T + p.b_ih + h @ p.w_hh.T + p.b_hh           # (B, 4H) pre-activations
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)
    i, f, g, o = _sigmoid(a_i), _sigmoid(a_f), np.tanh(a_g), _sigmoid(a_o)
    c1 = f * c + i * g
    tanh_c1 = np.tanh(c1)
    h1 = o * tanh_c1
    cache = (x, h, c, i, f, g, o, tanh_c1)
    return (h1, c1), cache


def _lstm_step_backward(cache: tuple, dstate1: tuple, p: _Params) -> tuple:
    """Backward of one LSTM step.

    Given dh1 = dL/dh1 and dc1 = dL/dc1 (the gradient reaching c1 from outside this step, e.g.
    from the next step), return (dx, (dh, dc), (dw_ih, dw_hh, db_ih, db_hh)).
    """
    x, h, c, i, f, g, o, tanh_c1 = cache
    dh1, dc1 = dstate1
    # h1 = o * tanh(c1): c1 receives dc1 directly plus the path through h1.
    #   dL/dc1 (total) = dc1 + dh1 * o * (1 - tanh(c1)^2)
    #   dL/do          = dh1 * tanh(c1)
    dc_total = dc1 + dh1 * o * (1.0 - tanh_c1 ** 2)
    do = dh1 * tanh_c1
    # c1 = f * c + i * g: each factor gets the other one times dc_total.
    di = dc_total * g
    df = dc_total * c
    dg = dc_total * i
    dc = dc_total * f
    # Back through the nonlinearities to the pre-activations a = [a_i, a_f, a_g, a_o]:
    #   sigmoid'(a) = s (1 - s),   tanh'(a) = 1 - tanh(a)^2
    da = np.concatenate([di * i * (1.0 - i),
                         df * f * (1.0 - f),
                         dg * (1.0 - g ** 2),
                         do * o * (1.0 - o)], axis=1)           # (B, 4H)
    # a = x W_ih^T + b_ih + h W_hh^T + b_hh is linear in everything:
    dx = da @ p.w_ih
    dh = da @ p.w_hh
    dparams = (da.T @ x, da.T @ h, da.sum(axis=0), da.sum(axis=0))
    return dx, (dh, dc), dparams


# ----------------------------------------------------------------------------------------------
# GRU cell: forward and backward of one step
# ----------------------------------------------------------------------------------------------

def _gru_step(x: np.ndarray, state: tuple, p: _Params, linear_before_reset: bool) -> tuple:
    """One GRU step. x (B, I), state (h,) with h (B, H). Returns ((h1,), cache)."""
    (h,) = state
    x_r, x_z, x_n = np.split(x @ p.w_ih.T + p.b_ih, 3, axis=1)
    w_hr, w_hz, w_hn = np.split(p.w_hh, 3, axis=0)              # each (H, H)
    b_hr, b_hz, b_hn = np.split(p.b_hh, 3)
    r = _sigmoid(x_r + h @ w_hr.T + b_hr)
    z = _sigmoid(x_z + h @ w_hz.T + b_hz)
    if linear_before_reset:
        h_n = h @ w_hn.T + b_hn                                  # the reset gate scales this
        n = np.tanh(x_n + r * h_n)
    else:
        h_n = (r * h) @ w_hn.T + b_hn                            # the reset gate scales h first
        n = np.tanh(x_n + h_n)
    h1 = (1.0 - z) * n + z * h
    cache = (x, h, r, z, n, h_n)
    return (h1,), cache


def _gru_step_backward(cache: tuple, dstate1: tuple, p: _Params,
                       linear_before_reset: bool) -> tuple:
    """Backward of one GRU step: (dx, (dh,), (dw_ih, dw_hh, db_ih, db_hh)) from dh1 = dL/dh1."""
    x, h, r, z, n, h_n = cache
    (dh1,) = dstate1
    w_hr, w_hz, w_hn = np.split(p.w_hh, 3, axis=0)
    # h1 = (1 - z) * n + z * h
    dn = dh1 * (1.0 - z)
    dz = dh1 * (h - n)
    dh = dh1 * z                                                 # the direct path h -> h1
    # Pre-activations: a_n is the argument of tanh, a_r and a_z those of the sigmoids.
    da_n = dn * (1.0 - n ** 2)
    da_z = dz * z * (1.0 - z)
    if linear_before_reset:
        # a_n = x_n + r * h_n, with h_n = h W_hn^T + b_hn
        dr = da_n * h_n
        dh_n = da_n * r                                          # gradient wrt h_n
        da_r = dr * r * (1.0 - r)
        # The hidden-side pre-activations [h_r, h_z, h_n] all come from h W_hh^T + b_hh.
        dgh = np.concatenate([da_r, da_z, dh_n], axis=1)         # (B, 3H)
        dh = dh + dgh @ p.w_hh
        dw_hh = dgh.T @ h
    else:
        # a_n = x_n + (r * h) W_hn^T + b_hn: the product r * h gets da_n W_hn,
        # which splits into the reset gate (times h) and h itself (times r).
        d_rh = da_n @ w_hn
        dr = d_rh * h
        da_r = dr * r * (1.0 - r)
        dh = dh + d_rh * r + da_r @ w_hr + da_z @ w_hz
        dgh = np.concatenate([da_r, da_z, da_n], axis=1)
        dw_hh = np.concatenate([da_r.T @ h, da_z.T @ h, da_n.T @ (r * h)], axis=0)
    # The input-side pre-activations [x_r, x_z, x_n] = x W_ih^T + b_ih feed a_r, a_z, a_n with
    # coefficient 1 in both variants.
    dgi = np.concatenate([da_r, da_z, da_n], axis=1)             # (B, 3H)
    dx = dgi @ p.w_ih
    dparams = (dgi.T @ x, dw_hh, dgi.sum(axis=0), dgh.sum(axis=0))
    return dx, (dh,), dparams


# ----------------------------------------------------------------------------------------------
# Extended GRU cell: layer normalisation and a recurrent (variational dropout) mask
# ----------------------------------------------------------------------------------------------

LN_EPS = 1e-5


@dataclass
class _GRUExt:
    """The extensions of one GRU call, float64: layer-norm gains (None: no layer norm) and
    the recurrent mask (ones when none was given)."""

    g_ih: Optional[np.ndarray]
    g_hh: Optional[np.ndarray]
    mask: np.ndarray


def _gru_ext(ln_gain_ih, ln_gain_hh, recurrent_mask, B: int, H: int,
             linear_before_reset: bool) -> Optional[_GRUExt]:
    """Validated extensions, or None when neither is used (the plain GRU)."""
    if (ln_gain_ih is None) != (ln_gain_hh is None):
        missing = "ln_gain_hh" if ln_gain_hh is None else "ln_gain_ih"
        raise ValueError(f"{missing} is missing: layer norm needs both ln_gain_ih and "
                         "ln_gain_hh (or neither)")
    if ln_gain_ih is not None and not linear_before_reset:
        raise ValueError("layer norm (ln_gain_ih, ln_gain_hh) is only supported with "
                         "linear_before_reset=True")
    if ln_gain_ih is None and recurrent_mask is None:
        return None
    ln = ln_gain_ih is not None
    return _GRUExt(g_ih=_f64("ln_gain_ih", ln_gain_ih, (3 * H,)) if ln else None,
                   g_hh=_f64("ln_gain_hh", ln_gain_hh, (3 * H,)) if ln else None,
                   mask=_optional_f64("recurrent_mask", recurrent_mask, (B, H))
                   if recurrent_mask is not None else np.ones((B, H)))


def _layer_norm(v: np.ndarray, g: np.ndarray) -> tuple:
    """g * (v - mean) / sqrt(var + eps) over each row of v (B, N). Returns (y, (xhat, rstd))."""
    mean = v.mean(axis=1, keepdims=True)
    var = ((v - mean) ** 2).mean(axis=1, keepdims=True)          # population variance
    rstd = 1.0 / np.sqrt(var + LN_EPS)
    xhat = (v - mean) * rstd
    return g * xhat, (xhat, rstd)


def _layer_norm_backward(dy: np.ndarray, cache: tuple, g: np.ndarray) -> tuple:
    """(dv, dg) of y = g * xhat(v) given dy. With e = g * dy (the gradient wrt xhat):
    dv = rstd * (e - mean(e) - xhat * mean(e * xhat)), the mean terms coming from the
    row's mean and variance depending on every entry of v."""
    xhat, rstd = cache
    e = dy * g
    dv = rstd * (e - e.mean(axis=1, keepdims=True)
                 - xhat * (e * xhat).mean(axis=1, keepdims=True))
    return dv, (dy * xhat).sum(axis=0)


def _gru_ext_step(x: np.ndarray, state: tuple, p: _Params, ext: _GRUExt,
                  linear_before_reset: bool) -> tuple:
    """One extended GRU step. x (B, I), state (h,). Returns ((h1,), cache)."""
    (h,) = state
    hm = ext.mask * h                                            # masked h: the products' operand
    w_hr, w_hz, w_hn = np.split(p.w_hh, 3, axis=0)
    b_hr, b_hz, b_hn = np.split(p.b_hh, 3)
    ln_x = ln_h = None
    if ext.g_ih is not None:                                     # (linear_before_reset only)
        vx, ln_x = _layer_norm(x @ p.w_ih.T, ext.g_ih)
        vh, ln_h = _layer_norm(hm @ p.w_hh.T, ext.g_hh)
        a_x, a_h = vx + p.b_ih, vh + p.b_hh
    else:
        a_x, a_h = x @ p.w_ih.T + p.b_ih, hm @ p.w_hh.T + p.b_hh
    x_r, x_z, x_n = np.split(a_x, 3, axis=1)
    h_r, h_z, h_n = np.split(a_h, 3, axis=1)
    r = _sigmoid(x_r + h_r)
    z = _sigmoid(x_z + h_z)
    if linear_before_reset:
        n = np.tanh(x_n + r * h_n)
    else:
        h_n = (r * hm) @ w_hn.T + b_hn                           # the reset gate scales hm first
        n = np.tanh(x_n + h_n)
    h1 = (1.0 - z) * n + z * h                                   # the unmasked h
    return (h1,), (x, h, hm, r, z, n, h_n, ln_x, ln_h)


def _gru_ext_step_backward(cache: tuple, dstate1: tuple, p: _Params, ext: _GRUExt,
                           linear_before_reset: bool) -> tuple:
    """Backward of one extended step: (dx, (dh,), (dw_ih, dw_hh, db_ih, db_hh), (dg_ih, dg_hh))
    (the gains' gradients are None without layer norm)."""
    x, h, hm, r, z, n, h_n, ln_x, ln_h = cache
    (dh1,) = dstate1
    w_hr, w_hz, w_hn = np.split(p.w_hh, 3, axis=0)
    # h1 = (1 - z) * n + z * h: the direct path h -> h1, and the pre-activations of z and n
    dh = dh1 * z
    da_z = dh1 * (h - n) * z * (1.0 - z)
    da_n = dh1 * (1.0 - z) * (1.0 - n ** 2)
    dg_ih = dg_hh = None
    if linear_before_reset:
        da_r = da_n * h_n * r * (1.0 - r)
        da_h = np.concatenate([da_r, da_z, da_n * r], axis=1)   # wrt a_h = [h_r, h_z, h_n]
        dv_h = da_h                                              # wrt hm W_hh^T
        if ln_h is not None:
            dv_h, dg_hh = _layer_norm_backward(da_h, ln_h, ext.g_hh)
        dhm = dv_h @ p.w_hh
        dw_hh = dv_h.T @ hm
    else:
        d_rhm = da_n @ w_hn                                      # wrt r * hm
        da_r = d_rhm * hm * r * (1.0 - r)
        da_h = np.concatenate([da_r, da_z, da_n], axis=1)
        dhm = d_rhm * r + da_r @ w_hr + da_z @ w_hz
        dw_hh = np.concatenate([da_r.T @ hm, da_z.T @ hm, da_n.T @ (r * hm)], axis=0)
    dh = dh + ext.mask * dhm                                     # hm = m * h
    da_x = np.concatenate([da_r, da_z, da_n], axis=1)           # wrt a_x
    dv_x = da_x                                                  # wrt x W_ih^T
    if ln_x is not None:
        dv_x, dg_ih = _layer_norm_backward(da_x, ln_x, ext.g_ih)
    dx = dv_x @ p.w_ih
    dparams = (dv_x.T @ x, dw_hh, da_x.sum(axis=0), da_h.sum(axis=0))
    return dx, (dh,), dparams, (dg_ih, dg_hh)


def _gru_ext_step_backward_summing_gains(p: _Params, ext: _GRUExt,
                                         linear_before_reset: bool) -> tuple:
    """A step backward for _scan_backward (which sums the four weight gradients), plus the
    list it sums the two gains' gradients into, step by step."""
    H = p.w_hh.shape[1]
    dgains = [np.zeros(3 * H), np.zeros(3 * H)]

    def step_backward(cache, d):
        dx, dstate, dparams, (dg_ih, dg_hh) = _gru_ext_step_backward(cache, d, p, ext,
                                                                     linear_before_reset)
        if dg_ih is not None:
            dgains[0] += dg_ih
            dgains[1] += dg_hh
        return dx, dstate, dparams

    return step_backward, dgains


# ----------------------------------------------------------------------------------------------
# Scan over time (shared by LSTM and GRU), with packed-sequence lengths
# ----------------------------------------------------------------------------------------------

def _scan_forward(step: Callable, x: np.ndarray, state: tuple, lengths: np.ndarray) -> tuple:
    """Run ``step`` over x (T, B, I). Returns (output (T, B, H), final state, caches).

    A sequence whose end is before step t keeps its state unchanged and gets a zero output row.
    """
    T, B, _ = x.shape
    H = state[0].shape[1]
    output = np.zeros((T, B, H))
    caches = []
    for t in range(T):
        active = (t < lengths)[:, None]                          # (B, 1)
        new_state, cache = step(x[t], state)
        state = tuple(np.where(active, new, old) for new, old in zip(new_state, state))
        output[t] = np.where(active, new_state[0], 0.0)
        caches.append(cache)
    return output, state, caches


def _scan_backward(step_backward: Callable, caches: list, x: np.ndarray, lengths: np.ndarray,
                   grad_output: np.ndarray, grad_state: tuple, params: _Params) -> tuple:
    """Backpropagation through time for :func:`_scan_forward`.

    Returns (dx (T, B, I), d(initial state), (dw_ih, dw_hh, db_ih, db_hh)).
    """
    T = x.shape[0]
    dx = np.zeros_like(x)
    dparams = None                                               # summed over the steps
    dstate = list(grad_state)                                    # dL/d(state after step t)
    for t in reversed(range(T)):
        active = (t < lengths)[:, None]
        # Rows past their end did not run this step: their state passed through unchanged, so
        # the gradient passes through unchanged too, and their grad_output row is ignored.
        # Active rows: the state after step t is this step's new state, and h also feeds
        # output[t].
        dnew = [np.where(active, d, 0.0) for d in dstate]
        dnew[0] = dnew[0] + np.where(active, grad_output[t], 0.0)
        dx[t], dprev, dp = step_backward(caches[t], tuple(dnew))
        # Inactive rows have zero dnew, so dx[t] and dp get exactly zero from them.
        dstate = [np.where(active, d_prev, d) for d_prev, d in zip(dprev, dstate)]
        dparams = [d.copy() for d in dp] if dparams is None else dparams
        if t < T - 1:
            for acc, d in zip(dparams, dp):
                acc += d
    return dx, tuple(dstate), tuple(dparams)


def _sequence_inputs(x, batch_first: bool, params_args: tuple, n_gates: int,
                     lengths) -> tuple:
    """Validate a sequence call; return (x as (T, B, I) float64, params, lengths)."""
    x = np.asarray(x)
    if x.ndim != 3:
        layout = "(B, T, I)" if batch_first else "(T, B, I)"
        raise ValueError(f"x must have 3 dimensions {layout}, got shape {x.shape}")
    x = _f64("x", x, (None, None, None))
    if batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    T, B, I = x.shape
    params = _params(*params_args, n_gates=n_gates, I=I)
    return x, params, _check_lengths(lengths, T, B)


def _grad_or_zeros(name: str, grad, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """An upstream gradient: None means zeros; otherwise it must have the inputs' dtype."""
    if grad is None:
        return np.zeros(shape)
    grad_dtype = np.asarray(grad).dtype
    if grad_dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} like the inputs, got {grad_dtype}")
    return _f64(name, grad, shape)


def _grad_output(grad_output, T: int, B: int, H: int, batch_first: bool,
                 dtype: np.dtype) -> np.ndarray:
    """grad_output in the caller's layout -> (T, B, H) float64 (zeros if None)."""
    shape = (B, T, H) if batch_first else (T, B, H)
    g = _grad_or_zeros("grad_output", grad_output, shape, dtype)
    return g.transpose(1, 0, 2) if batch_first else g


# ----------------------------------------------------------------------------------------------
# LSTM: public API
# ----------------------------------------------------------------------------------------------

class LSTMResult:
    """Result of :func:`lstm`: ``output``, ``h_n``, ``c_n`` and :meth:`backward`."""

    def __init__(self, output, h_n, c_n, caches, x, lengths, params, batch_first, dtype):
        self.output = output
        self.h_n = h_n
        self.c_n = c_n
        self._caches, self._x, self._lengths = caches, x, lengths
        self._params, self._batch_first, self._dtype = params, batch_first, dtype

    def backward(self, grad_output: Optional[ArrayLike] = None,
                 grad_h_n: Optional[ArrayLike] = None,
                 grad_c_n: Optional[ArrayLike] = None) -> LSTMGradients:
        """Gradients wrt every input, given dL/d``output``, dL/d``h_n``, dL/d``c_n``.

        Each upstream gradient has the shape of the matching result; None means zeros.
        May be called any number of times.
        """
        T, B, _ = self._x.shape
        H = self.h_n.shape[1]
        go = _grad_output(grad_output, T, B, H, self._batch_first, self._dtype)
        gh = _grad_or_zeros("grad_h_n", grad_h_n, (B, H), self._dtype)
        gc = _grad_or_zeros("grad_c_n", grad_c_n, (B, H), self._dtype)
        p = self._params
        dx, (dh0, dc0), (dw_ih, dw_hh, db_ih, db_hh) = _scan_backward(
            lambda cache, d: _lstm_step_backward(cache, d, p),
            self._caches, self._x, self._lengths, go, (gh, gc), p)
        if self._batch_first:
            dx = np.ascontiguousarray(dx.transpose(1, 0, 2))
        return LSTMGradients(x=dx, weight_ih=dw_ih, weight_hh=dw_hh, bias_ih=db_ih,
                             bias_hh=db_hh, h0=dh0, c0=dc0)


def lstm(x: ArrayLike, weight_ih: ArrayLike, weight_hh: ArrayLike, bias_ih: ArrayLike,
         bias_hh: ArrayLike, h0: Optional[ArrayLike] = None, c0: Optional[ArrayLike] = None,
         *, lengths: Optional[Sequence[int]] = None, batch_first: bool = False,
         weight_hr: Optional[ArrayLike] = None, ln_gain_ih: Optional[ArrayLike] = None,
         ln_gain_hh: Optional[ArrayLike] = None, ln_gain_c: Optional[ArrayLike] = None,
         ln_bias_c: Optional[ArrayLike] = None,
         recurrent_mask: Optional[ArrayLike] = None) -> LSTMResult:
    """Run an LSTM over a batch of sequences.

    The extensions (a projection ``weight_hr``, layer norm ``ln_*``, a ``recurrent_mask``) are
    described in :func:`lstm_extended`, which runs when any of them is given.

    Parameters
    ----------
    x : (T, B, I) array, or (B, T, I) if ``batch_first``
    weight_ih : (4H, I) array, gate rows i, f, g, o
    weight_hh : (4H, H) array
    bias_ih, bias_hh : (4H,) arrays
    h0, c0 : (B, H) arrays or None (zeros)
    lengths : (B,) integers in 1..T, or None (all T)
    batch_first : bool

    Returns
    -------
    LSTMResult
        ``output`` (T, B, H) (or (B, T, H)), ``h_n`` and ``c_n`` (B, H), all float64, and
        ``backward(grad_output=None, grad_h_n=None, grad_c_n=None) -> LSTMGradients``.
    """
    ext = dict(weight_hr=weight_hr, ln_gain_ih=ln_gain_ih, ln_gain_hh=ln_gain_hh,
               ln_gain_c=ln_gain_c, ln_bias_c=ln_bias_c, recurrent_mask=recurrent_mask)
    if any(v is not None for v in ext.values()):
        return lstm_extended(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0,
                             lengths=lengths, batch_first=batch_first, **ext)
    dtype = _common_dtype(x=x, weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih,
                          bias_hh=bias_hh, h0=h0, c0=c0)
    x, p, lengths = _sequence_inputs(x, batch_first, (weight_ih, weight_hh, bias_ih, bias_hh),
                                     4, lengths)
    T, B, _ = x.shape
    H = p.w_hh.shape[1]
    h = _optional_f64("h0", h0, (B, H))
    c = _optional_f64("c0", c0, (B, H))
    output, (h_n, c_n), caches = _scan_forward(
        lambda x_t, s: _lstm_step(x_t, s, p), x, (h, c), lengths)
    if batch_first:
        output = np.ascontiguousarray(output.transpose(1, 0, 2))
    return LSTMResult(output, h_n, c_n, caches, x, lengths, p, batch_first, dtype)


def lstm_cell(x: ArrayLike, h: ArrayLike, c: ArrayLike, weight_ih: ArrayLike,
              weight_hh: ArrayLike, bias_ih: ArrayLike, bias_hh: ArrayLike) -> tuple:
    """One LSTM step: x (B, I), h and c (B, H) -> (h1, c1), each (B, H) float64."""
    x, h, c, p = _lstm_cell_inputs(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh)
    (h1, c1), _ = _lstm_step(x, (h, c), p)
    return h1, c1


def lstm_cell_backward(x: ArrayLike, h: ArrayLike, c: ArrayLike, weight_ih: ArrayLike,
                       weight_hh: ArrayLike, bias_ih: ArrayLike, bias_hh: ArrayLike,
                       grad_h: Optional[ArrayLike] = None,
                       grad_c: Optional[ArrayLike] = None) -> LSTMCellGradients:
    """Gradients of one LSTM step wrt its inputs, given dL/dh1 and dL/dc1 (None: zeros)."""
    dtype = _common_dtype(x=x, h=h, c=c, weight_ih=weight_ih, weight_hh=weight_hh,
                          bias_ih=bias_ih, bias_hh=bias_hh)
    x, h, c, p = _lstm_cell_inputs(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh)
    dh1 = _grad_or_zeros("grad_h", grad_h, h.shape, dtype)
    dc1 = _grad_or_zeros("grad_c", grad_c, h.shape, dtype)
    _, cache = _lstm_step(x, (h, c), p)
    dx, (dh, dc), (dw_ih, dw_hh, db_ih, db_hh) = _lstm_step_backward(cache, (dh1, dc1), p)
    return LSTMCellGradients(x=dx, h=dh, c=dc, weight_ih=dw_ih, weight_hh=dw_hh,
                             bias_ih=db_ih, bias_hh=db_hh)


def _lstm_cell_inputs(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh) -> tuple:
    _common_dtype(x=x, h=h, c=c, weight_ih=weight_ih, weight_hh=weight_hh,
                  bias_ih=bias_ih, bias_hh=bias_hh)
    x = _f64("x", x, (None, None))
    B, I = x.shape
    p = _params(weight_ih, weight_hh, bias_ih, bias_hh, n_gates=4, I=I)
    H = p.w_hh.shape[1]
    return x, _f64("h", h, (B, H)), _f64("c", c, (B, H)), p


# ----------------------------------------------------------------------------------------------
# GRU: public API
# ----------------------------------------------------------------------------------------------

class GRUResult:
    """Result of :func:`gru`: ``output``, ``h_n`` and :meth:`backward`."""

    def __init__(self, output, h_n, caches, x, lengths, params, batch_first, dtype,
                 linear_before_reset, ext: Optional[_GRUExt] = None):
        self.output = output
        self.h_n = h_n
        self._caches, self._x, self._lengths = caches, x, lengths
        self._params, self._batch_first, self._dtype = params, batch_first, dtype
        self._linear_before_reset = linear_before_reset
        self._ext = ext

    def backward(self, grad_output: Optional[ArrayLike] = None,
                 grad_h_n: Optional[ArrayLike] = None) -> GRUGradients:
        """Gradients wrt every input, given dL/d``output`` and dL/d``h_n`` (None: zeros)."""
        T, B, _ = self._x.shape
        H = self.h_n.shape[1]
        go = _grad_output(grad_output, T, B, H, self._batch_first, self._dtype)
        gh = _grad_or_zeros("grad_h_n", grad_h_n, (B, H), self._dtype)
        p, lbr, ext = self._params, self._linear_before_reset, self._ext
        step_backward = lambda cache, d: _gru_step_backward(cache, d, p, lbr)  # noqa: E731
        if ext is not None:
            step_backward, dgains = _gru_ext_step_backward_summing_gains(p, ext, lbr)
        dx, (dh0,), (dw_ih, dw_hh, db_ih, db_hh) = _scan_backward(
            step_backward, self._caches, self._x, self._lengths, go, (gh,), p)
        if self._batch_first:
            dx = np.ascontiguousarray(dx.transpose(1, 0, 2))
        ln = ext is not None and ext.g_ih is not None
        return GRUGradients(x=dx, weight_ih=dw_ih, weight_hh=dw_hh, bias_ih=db_ih,
                            bias_hh=db_hh, h0=dh0, ln_gain_ih=dgains[0] if ln else None,
                            ln_gain_hh=dgains[1] if ln else None)


def gru(x: ArrayLike, weight_ih: ArrayLike, weight_hh: ArrayLike, bias_ih: ArrayLike,
        bias_hh: ArrayLike, h0: Optional[ArrayLike] = None, *,
        lengths: Optional[Sequence[int]] = None, batch_first: bool = False,
        linear_before_reset: bool = True, ln_gain_ih: Optional[ArrayLike] = None,
        ln_gain_hh: Optional[ArrayLike] = None,
        recurrent_mask: Optional[ArrayLike] = None) -> GRUResult:
    """Run a GRU over a batch of sequences.

    Parameters
    ----------
    x : (T, B, I) array, or (B, T, I) if ``batch_first``
    weight_ih : (3H, I) array, gate rows r, z, n
    weight_hh : (3H, H) array
    bias_ih, bias_hh : (3H,) arrays
    h0 : (B, H) array or None (zeros)
    lengths : (B,) integers in 1..T, or None (all T)
    batch_first : bool
    linear_before_reset : bool
        True: ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`` (PyTorch);
        False: ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``.
    ln_gain_ih, ln_gain_hh : (3H,) arrays or None
        Layer norm of ``x W_ih^T`` and ``hm W_hh^T`` (both or neither; needs
        ``linear_before_reset``); see the module docstring.
    recurrent_mask : (B, H) array or None
        hm = recurrent_mask * h inside the products with W_hh (None: no mask).

    Returns
    -------
    GRUResult
        ``output`` (T, B, H) (or (B, T, H)) and ``h_n`` (B, H), float64, and
        ``backward(grad_output=None, grad_h_n=None) -> GRUGradients``.
    """
    dtype = _common_dtype(x=x, weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih,
                          bias_hh=bias_hh, h0=h0, ln_gain_ih=ln_gain_ih, ln_gain_hh=ln_gain_hh,
                          recurrent_mask=recurrent_mask)
    x, p, lengths = _sequence_inputs(x, batch_first, (weight_ih, weight_hh, bias_ih, bias_hh),
                                     3, lengths)
    T, B, _ = x.shape
    H = p.w_hh.shape[1]
    h = _optional_f64("h0", h0, (B, H))
    lbr = bool(linear_before_reset)
    ext = _gru_ext(ln_gain_ih, ln_gain_hh, recurrent_mask, B, H, lbr)
    step = lambda x_t, s: _gru_step(x_t, s, p, lbr)  # noqa: E731
    if ext is not None:
        step = lambda x_t, s: _gru_ext_step(x_t, s, p, ext, lbr)  # noqa: E731
    output, (h_n,), caches = _scan_forward(step, x, (h,), lengths)
    if batch_first:
        output = np.ascontiguousarray(output.transpose(1, 0, 2))
    return GRUResult(output, h_n, caches, x, lengths, p, batch_first, dtype, lbr, ext)


def gru_cell(x: ArrayLike, h: ArrayLike, weight_ih: ArrayLike, weight_hh: ArrayLike,
             bias_ih: ArrayLike, bias_hh: ArrayLike, *,
             linear_before_reset: bool = True) -> np.ndarray:
    """One GRU step: x (B, I), h (B, H) -> h1 (B, H) float64."""
    x, h, p = _gru_cell_inputs(x, h, weight_ih, weight_hh, bias_ih, bias_hh)
    (h1,), _ = _gru_step(x, (h,), p, bool(linear_before_reset))
    return h1


def gru_cell_backward(x: ArrayLike, h: ArrayLike, weight_ih: ArrayLike, weight_hh: ArrayLike,
                      bias_ih: ArrayLike, bias_hh: ArrayLike,
                      grad_h: Optional[ArrayLike] = None, *,
                      linear_before_reset: bool = True) -> GRUCellGradients:
    """Gradients of one GRU step wrt its inputs, given dL/dh1 (None: zeros)."""
    dtype = _common_dtype(x=x, h=h, weight_ih=weight_ih, weight_hh=weight_hh,
                          bias_ih=bias_ih, bias_hh=bias_hh)
    x, h, p = _gru_cell_inputs(x, h, weight_ih, weight_hh, bias_ih, bias_hh)
    dh1 = _grad_or_zeros("grad_h", grad_h, h.shape, dtype)
    lbr = bool(linear_before_reset)
    _, cache = _gru_step(x, (h,), p, lbr)
    dx, (dh,), (dw_ih, dw_hh, db_ih, db_hh) = _gru_step_backward(cache, (dh1,), p, lbr)
    return GRUCellGradients(x=dx, h=dh, weight_ih=dw_ih, weight_hh=dw_hh,
                            bias_ih=db_ih, bias_hh=db_hh)


def _gru_cell_inputs(x, h, weight_ih, weight_hh, bias_ih, bias_hh) -> tuple:
    _common_dtype(x=x, h=h, weight_ih=weight_ih, weight_hh=weight_hh,
                  bias_ih=bias_ih, bias_hh=bias_hh)
    x = _f64("x", x, (None, None))
    B, I = x.shape
    p = _params(weight_ih, weight_hh, bias_ih, bias_hh, n_gates=3, I=I)
    H = p.w_hh.shape[1]
    return x, _f64("h", h, (B, H)), p


# ----------------------------------------------------------------------------------------------
# Extended LSTM: projection (LSTMP), layer normalisation, recurrent dropout mask
# ----------------------------------------------------------------------------------------------
#
# P = proj_size (weight_hr (P, H)), R = P with a projection else H (the width of h):
#
#     a_x = x W_ih^T                     a_h = (m * h) W_hh^T          weight_hh (4H, R)
#     pre = a_x + a_h + b_ih + b_hh                                    (no layer norm)
#     pre = LN(a_x; g_ih) + LN(a_h; g_hh) + b_ih + b_hh                (layer norm)
#     i, f, o = sigmoid(pre_i, pre_f, pre_o)   g = tanh(pre_g)
#     c' = f * c + i * g                                               (c stays un-normalised)
#     r = o * tanh(c')        or, with layer norm,   r = o * tanh(LN(c'; g_c) + b_c)
#     h' = r W_hr^T (projection)   or   h' = r
#
# LN(v; gain) = gain * (v - mean(v)) / sqrt(var(v) + 1e-5) over each row's whole vector (all
# 4H gate pre-activations at once, as haste's LayerNormLSTM), population variance. The mask m
# (B, R) is the same at every step (variational recurrent dropout), already scaled.
# (LN_EPS, _layer_norm and _layer_norm_backward: the extended GRU's, above.)


@dataclass
class _ExtParams:
    """The parameters of the extended cell, float64; None where a feature is off."""

    base: _Params
    w_hr: Optional[np.ndarray]
    g_ih: Optional[np.ndarray]
    g_hh: Optional[np.ndarray]
    g_c: Optional[np.ndarray]
    b_c: Optional[np.ndarray]
    mask: np.ndarray                                             # (B, R), ones when none

    @property
    def layer_norm(self) -> bool:
        return self.g_ih is not None


def _lstmx_step(x: np.ndarray, state: tuple, p: _ExtParams) -> tuple:
    """One extended LSTM step. x (B, I), state (h (B, R), c (B, H)). Returns ((h1, c1), cache)."""
    h, c = state
    hm = p.mask * h                                              # the dropped-out h
    a_x = x @ p.base.w_ih.T
    a_h = hm @ p.base.w_hh.T
    ln = {}
    if p.layer_norm:
        n_x, ln["x"] = _layer_norm(a_x, p.g_ih)
        n_h, ln["h"] = _layer_norm(a_h, p.g_hh)
        a = n_x + n_h + p.base.b_ih + p.base.b_hh
    else:
        a = a_x + a_h + p.base.b_ih + p.base.b_hh
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)
    i, f, g, o = _sigmoid(a_i), _sigmoid(a_f), np.tanh(a_g), _sigmoid(a_o)
    c1 = f * c + i * g
    if p.layer_norm:
        n_c, ln["c"] = _layer_norm(c1, p.g_c)
        u = n_c + p.b_c
    else:
        u = c1
    tanh_u = np.tanh(u)
    r = o * tanh_u
    h1 = r @ p.w_hr.T if p.w_hr is not None else r
    cache = (x, hm, c, i, f, g, o, tanh_u, r, ln)
    return (h1, c1), cache


def _lstmx_step_backward(cache: tuple, dstate1: tuple, p: _ExtParams) -> tuple:
    """Backward of one extended step: (dx, (dh, dc), dparams) from (dL/dh1, dL/dc1), where
    dparams = (dw_ih, dw_hh, db_ih, db_hh, dw_hr, dg_ih, dg_hh, dg_c, db_c) (empty arrays for
    the features that are off)."""
    x, hm, c, i, f, g, o, tanh_u, r, ln = cache
    dh1, dc1 = dstate1
    none = np.zeros(0)
    # h1 = r W_hr^T
    if p.w_hr is not None:
        dr, dw_hr = dh1 @ p.w_hr, dh1.T @ r
    else:
        dr, dw_hr = dh1, none
    # r = o * tanh(u)
    do = dr * tanh_u
    du = dr * o * (1.0 - tanh_u ** 2)
    # u = LN(c1; g_c) + b_c (or u = c1); c1 also gets dc1 from outside the step
    if p.layer_norm:
        dc1_u, dg_c = _layer_norm_backward(du, ln["c"], p.g_c)
        db_c = du.sum(axis=0)
    else:
        dc1_u, dg_c, db_c = du, none, none
    dc_total = dc1 + dc1_u
    # c1 = f * c + i * g
    di, df, dg, dc = dc_total * g, dc_total * c, dc_total * i, dc_total * f
    da = np.concatenate([di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g ** 2),
                         do * o * (1.0 - o)], axis=1)            # dL/dpre, (B, 4H)
    # pre = LN(a_x; g_ih) + LN(a_h; g_hh) + b_ih + b_hh (or a_x + a_h + b_ih + b_hh)
    if p.layer_norm:
        da_x, dg_ih = _layer_norm_backward(da, ln["x"], p.g_ih)
        da_h, dg_hh = _layer_norm_backward(da, ln["h"], p.g_hh)
    else:
        da_x, da_h, dg_ih, dg_hh = da, da, none, none
    # a_x = x W_ih^T, a_h = (m * h) W_hh^T
    dx = da_x @ p.base.w_ih
    dh = p.mask * (da_h @ p.base.w_hh)
    db = da.sum(axis=0)
    dparams = (da_x.T @ x, da_h.T @ hm, db, db, dw_hr, dg_ih, dg_hh, dg_c, db_c)
    return dx, (dh, dc), dparams


def _ln_args(**gains: Optional[ArrayLike]) -> bool:
    """Whether layer norm is on: all four of its parameters or none (ValueError naming the
    missing ones otherwise)."""
    missing = [name for name, a in gains.items() if a is None]
    if missing and len(missing) < len(gains):
        raise ValueError(f"layer norm needs all of {', '.join(gains)}; missing "
                         f"{', '.join(missing)}")
    return not missing


def lstm_extended(x: ArrayLike, weight_ih: ArrayLike, weight_hh: ArrayLike,
                  bias_ih: ArrayLike, bias_hh: ArrayLike, h0: Optional[ArrayLike] = None,
                  c0: Optional[ArrayLike] = None, *, lengths: Optional[Sequence[int]] = None,
                  batch_first: bool = False, weight_hr: Optional[ArrayLike] = None,
                  ln_gain_ih: Optional[ArrayLike] = None, ln_gain_hh: Optional[ArrayLike] = None,
                  ln_gain_c: Optional[ArrayLike] = None, ln_bias_c: Optional[ArrayLike] = None,
                  recurrent_mask: Optional[ArrayLike] = None) -> LSTMResult:
    """The LSTM with a projection, layer norm and a recurrent mask (equations above).

    Parameters
    ----------
    x, bias_ih, bias_hh, lengths, batch_first
        As for :func:`lstm`. H is ``weight_ih.shape[0] // 4``.
    weight_ih : (4H, I) array
    weight_hh : (4H, R) array, R = P with a projection, else H
    h0 : (B, R) array or None;  c0 : (B, H) array or None
    weight_hr : (P, H) array or None (no projection)
    ln_gain_ih, ln_gain_hh : (4H,) arrays;  ln_gain_c, ln_bias_c : (H,) arrays
        Layer norm: all four, or none.
    recurrent_mask : (B, R) array or None (ones)

    Returns
    -------
    LSTMResult
        ``output`` (T, B, R), ``h_n`` (B, R), ``c_n`` (B, H); ``backward`` also gives the
        gradients of ``weight_hr`` and the layer-norm parameters.
    """
    dtype = _common_dtype(x=x, weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih,
                          bias_hh=bias_hh, h0=h0, c0=c0, weight_hr=weight_hr,
                          ln_gain_ih=ln_gain_ih, ln_gain_hh=ln_gain_hh, ln_gain_c=ln_gain_c,
                          ln_bias_c=ln_bias_c, recurrent_mask=recurrent_mask)
    layer_norm = _ln_args(ln_gain_ih=ln_gain_ih, ln_gain_hh=ln_gain_hh, ln_gain_c=ln_gain_c,
                          ln_bias_c=ln_bias_c)
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must have 3 dimensions, got shape {x.shape}")
    x = _f64("x", x.transpose(1, 0, 2) if batch_first else x, (None, None, None))
    T, B, I = x.shape
    shape = np.shape(weight_ih)
    if len(shape) != 2 or shape[0] % 4 or shape[0] == 0:
        raise ValueError(f"weight_ih must have shape (4*H, {I}), got {shape}")
    H = shape[0] // 4
    w_hr = None if weight_hr is None else _f64("weight_hr", weight_hr, (None, H))
    R = H if w_hr is None else w_hr.shape[0]
    G = 4 * H
    if w_hr is not None and np.shape(weight_hh) != (G, R):
        raise ValueError(f"weight_hh must have shape (4*H, P) = {(G, R)} with a projection "
                         f"(P = weight_hr.shape[0]), got {np.shape(weight_hh)}")
    base = _Params(w_ih=_f64("weight_ih", weight_ih, (G, I)),
                   w_hh=_f64("weight_hh", weight_hh, (G, R)),
                   b_ih=_f64("bias_ih", bias_ih, (G,)), b_hh=_f64("bias_hh", bias_hh, (G,)))
    ln = dict(g_ih=None, g_hh=None, g_c=None, b_c=None)
    if layer_norm:
        ln = dict(g_ih=_f64("ln_gain_ih", ln_gain_ih, (G,)),
                  g_hh=_f64("ln_gain_hh", ln_gain_hh, (G,)),
                  g_c=_f64("ln_gain_c", ln_gain_c, (H,)), b_c=_f64("ln_bias_c", ln_bias_c, (H,)))
    mask = (np.ones((B, R)) if recurrent_mask is None
            else _f64("recurrent_mask", recurrent_mask, (B, R)))
    p = _ExtParams(base=base, w_hr=w_hr, mask=mask, **ln)
    lengths = _check_lengths(lengths, T, B)
    h = _optional_f64("h0", h0, (B, R))
    c = _optional_f64("c0", c0, (B, H))
    output, (h_n, c_n), caches = _scan_forward(lambda x_t, s: _lstmx_step(x_t, s, p), x, (h, c),
                                               lengths)
    if batch_first:
        output = np.ascontiguousarray(output.transpose(1, 0, 2))
    return _LSTMXResult(output, h_n, c_n, caches, x, lengths, p, batch_first, dtype)


class _LSTMXResult(LSTMResult):
    """:class:`LSTMResult` of the extended LSTM (its backward also gives the extensions')."""

    def backward(self, grad_output: Optional[ArrayLike] = None,
                 grad_h_n: Optional[ArrayLike] = None,
                 grad_c_n: Optional[ArrayLike] = None) -> LSTMGradients:
        T, B, _ = self._x.shape
        R, H = self.h_n.shape[1], self.c_n.shape[1]
        go = _grad_output(grad_output, T, B, R, self._batch_first, self._dtype)
        gh = _grad_or_zeros("grad_h_n", grad_h_n, (B, R), self._dtype)
        gc = _grad_or_zeros("grad_c_n", grad_c_n, (B, H), self._dtype)
        p = self._params
        dx, (dh0, dc0), d = _scan_backward(lambda cache, ds: _lstmx_step_backward(cache, ds, p),
                                           self._caches, self._x, self._lengths, go, (gh, gc),
                                           p.base)
        if self._batch_first:
            dx = np.ascontiguousarray(dx.transpose(1, 0, 2))
        ln = p.layer_norm
        return LSTMGradients(x=dx, weight_ih=d[0], weight_hh=d[1], bias_ih=d[2], bias_hh=d[3],
                             h0=dh0, c0=dc0, weight_hr=d[4] if p.w_hr is not None else None,
                             ln_gain_ih=d[5] if ln else None, ln_gain_hh=d[6] if ln else None,
                             ln_gain_c=d[7] if ln else None, ln_bias_c=d[8] if ln else None)
