"""Recurrent weights from and to other frameworks' layouts, in plain NumPy.

fastlstm uses PyTorch's layout (see the README's "Weight layout"). Every ``from_*`` function
returns a dict ``{"weight_ih", "weight_hh", "bias_ih", "bias_hh"}`` in that layout, plus
``"linear_before_reset"`` for a GRU, ready for :func:`fastlstm.lstm` / :func:`fastlstm.gru`
(``fastlstm.gru(x, **{k: v for k, v in p.items()})`` works as is) or, through
:func:`state_dict`, for :class:`fastlstm.LSTM` / :class:`fastlstm.GRU`.

Gate orders and bias conventions (H hidden units, I inputs)::

    framework            gates (LSTM | GRU)    weights                       biases
    PyTorch / fastlstm   i f g o | r z n       W_ih (G, I), W_hh (G, H)      b_ih, b_hh (G,)
    Keras 2/3            i f c o | z r h       kernel (I, G), recurrent (H, G)  LSTM (4H,);
                                                                             GRU reset_after
                                                                             (2, 3H), else (3H,)
    TF1 BasicLSTMCell    i j f o (j = g)       kernel (I+H, 4H) over [x, h]  bias (4H,), plus
                                                                             forget_bias at run time
    TF1 GRUCell          r u | candidate       gates (I+H, 2H), candidate    gates bias (2H,),
                                               (I+H, H), over [x, h] / [x, r*h]  candidate (H,)
    ONNX LSTM / GRU      i o f c | z r h       W (D, G, I), R (D, G, H)      B (D, 2G) = [Wb, Rb]

Nothing here imports anything but NumPy. Arrays keep their floating dtype (float32 or
float64; anything else becomes float64) and are always fresh C-contiguous copies.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["from_keras", "to_keras", "from_tf1_lstm", "from_tf1_gru", "from_onnx", "to_onnx",
           "state_dict", "CELLS"]

CELLS = ("lstm", "gru")

# Row blocks of PyTorch's layout taken from another framework's blocks: PYTORCH[k] is the
# index, in the other framework's order, of PyTorch's k-th gate.
_KERAS_LSTM = (0, 1, 2, 3)      # Keras i f c o      -> PyTorch i f g o
_KERAS_GRU = (1, 0, 2)          # Keras z r h        -> PyTorch r z n
_ONNX_LSTM = (0, 2, 3, 1)       # ONNX  i o f c      -> PyTorch i f g o
_ONNX_GRU = (1, 0, 2)           # ONNX  z r h        -> PyTorch r z n
_TF1_LSTM = (0, 2, 1, 3)        # TF1   i j f o      -> PyTorch i f g o


def _gates(cell: str) -> int:
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    return 4 if cell == "lstm" else 3


def _float(name: str, a, ndim: int) -> np.ndarray:
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension{'s' if ndim != 1 else ''}, "
                         f"got shape {a.shape}")
    dtype = a.dtype if a.dtype in (np.float32, np.float64) else np.float64
    return np.array(a, dtype=dtype, order="C", copy=True)


def _dtype(*arrays: np.ndarray) -> np.dtype:
    return np.result_type(*arrays)


def _reorder(a: np.ndarray, order: Sequence[int], axis: int = 0) -> np.ndarray:
    """Blocks of ``a`` along ``axis`` (len(order) equal blocks) put in ``order``."""
    blocks = np.split(a, len(order), axis=axis)
    return np.ascontiguousarray(np.concatenate([blocks[k] for k in order], axis=axis))


def _inverse(order: Sequence[int]) -> Tuple[int, ...]:
    inv = [0] * len(order)
    for k, src in enumerate(order):
        inv[src] = k
    return tuple(inv)


def _pack(weight_ih, weight_hh, bias_ih, bias_hh, cell: str,
          linear_before_reset: Optional[bool]) -> Dict[str, object]:
    dt = _dtype(weight_ih, weight_hh, bias_ih, bias_hh)
    out: Dict[str, object] = {"weight_ih": np.ascontiguousarray(weight_ih, dt),
                              "weight_hh": np.ascontiguousarray(weight_hh, dt),
                              "bias_ih": np.ascontiguousarray(bias_ih, dt),
                              "bias_hh": np.ascontiguousarray(bias_hh, dt)}
    if cell == "gru":
        out["linear_before_reset"] = bool(linear_before_reset)
    return out


def _check_params(params, cell: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                              int, int]:
    """The four arrays of a PyTorch-layout dict, shapes checked; and (I, H)."""
    n = _gates(cell)
    if not hasattr(params, "__getitem__"):
        raise TypeError("params must be a dict with weight_ih, weight_hh, bias_ih, bias_hh")
    missing = [k for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if k not in params]
    if missing:
        raise ValueError(f"params lacks {missing}")
    w_ih = _float("weight_ih", params["weight_ih"], 2)
    w_hh = _float("weight_hh", params["weight_hh"], 2)
    G, I = w_ih.shape
    if G == 0 or G % n:
        raise ValueError(f"weight_ih must have {n}*H rows ({cell}), got shape {w_ih.shape}")
    H = G // n
    if w_hh.shape != (G, H):
        raise ValueError(f"weight_hh must have shape {(G, H)}, got {w_hh.shape}")
    b_ih = _float("bias_ih", params["bias_ih"], 1)
    b_hh = _float("bias_hh", params["bias_hh"], 1)
    for name, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
        if b.shape != (G,):
            raise ValueError(f"{name} must have shape {(G,)}, got {b.shape}")
    return w_ih, w_hh, b_ih, b_hh, I, H


# ----------------------------------------------------------------------------------------------
# Keras (2 and 3; tf.keras included)
# ----------------------------------------------------------------------------------------------

def from_keras(kernel, recurrent_kernel, bias=None, *, cell: str,
               reset_after: bool = True) -> Dict[str, object]:
    """A Keras ``LSTM``/``GRU`` layer's weights (``layer.get_weights()``) in PyTorch's layout.

    Parameters
    ----------
    kernel : (I, G) array, G = 4H (LSTM, gates i f c o) or 3H (GRU, gates z r h)
    recurrent_kernel : (H, G) array
    bias : LSTM (4H,); GRU with ``reset_after=True`` (2, 3H) = [input bias; recurrent bias],
        with ``reset_after=False`` (3H,); None for a layer built with ``use_bias=False``.
    cell : "lstm" or "gru"
    reset_after : GRU only: the layer's ``reset_after`` (Keras 2.3+/3 default True). True is
        fastlstm's ``linear_before_reset=True``; False applies the reset gate before the
        recurrent product (``linear_before_reset=False``), and its one bias is the input bias.

    Keras has a single LSTM bias: it becomes ``bias_ih`` and ``bias_hh`` is zero (the sum is
    what counts). Only the default activations (tanh, recurrent sigmoid) are equivalent.
    """
    n = _gates(cell)
    k = _float("kernel", kernel, 2)
    r = _float("recurrent_kernel", recurrent_kernel, 2)
    I, G = k.shape
    if G == 0 or G % n:
        raise ValueError(f"kernel must have {n}*H columns ({cell}), got shape {k.shape}")
    H = G // n
    if r.shape != (H, G):
        raise ValueError(f"recurrent_kernel must have shape {(H, G)}, got {r.shape}")
    order = _KERAS_LSTM if cell == "lstm" else _KERAS_GRU
    w_ih = _reorder(k.T, order)
    w_hh = _reorder(r.T, order)
    two = cell == "gru" and reset_after
    if bias is None:
        b = np.zeros((2, G) if two else (G,), _dtype(k, r))
    else:
        b = np.asarray(bias)
        b = _float("bias", b, b.ndim if b.ndim in (1, 2) else (2 if two else 1))
    want = (2, G) if two else (G,)
    if b.shape != want:
        why = " (a reset_after=True GRU keeps [input bias; recurrent bias])" if two else ""
        if cell == "gru" and not reset_after and b.shape == (2, G):
            why = " (a (2, 3H) bias belongs to a reset_after=True GRU)"
        raise ValueError(f"bias must have shape {want}{why}, got {b.shape}")
    if two:
        b_ih, b_hh = _reorder(b[0], order), _reorder(b[1], order)
    else:
        b_ih, b_hh = _reorder(b, order), np.zeros(G, b.dtype)
    return _pack(w_ih, w_hh, b_ih, b_hh, cell, reset_after if cell == "gru" else None)


def to_keras(params, *, cell: str, reset_after: bool = True
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of :func:`from_keras`: ``(kernel, recurrent_kernel, bias)`` for
    ``layer.set_weights``.

    LSTM: the bias is ``bias_ih + bias_hh``. GRU with ``reset_after=True`` needs
    ``linear_before_reset`` True (the default when the key is missing) and keeps the two biases;
    with ``reset_after=False`` it needs ``linear_before_reset=False`` (the biases are summed,
    which that variant allows).
    """
    w_ih, w_hh, b_ih, b_hh, I, H = _check_params(params, cell)
    order = _inverse(_KERAS_LSTM if cell == "lstm" else _KERAS_GRU)
    kernel = np.ascontiguousarray(_reorder(w_ih, order).T)
    recurrent = np.ascontiguousarray(_reorder(w_hh, order).T)
    if cell == "lstm":
        return kernel, recurrent, _reorder(b_ih, order) + _reorder(b_hh, order)
    lbr = bool(params.get("linear_before_reset", True)) if hasattr(params, "get") else True
    if lbr != bool(reset_after):
        raise ValueError(f"a GRU with linear_before_reset={lbr} cannot be written as a Keras "
                         f"GRU with reset_after={bool(reset_after)} (different equations); "
                         f"use reset_after={lbr}")
    if reset_after:
        bias = np.stack([_reorder(b_ih, order), _reorder(b_hh, order)])
    else:
        bias = _reorder(b_ih, order) + _reorder(b_hh, order)
    return kernel, recurrent, np.ascontiguousarray(bias)


# ----------------------------------------------------------------------------------------------
# TensorFlow 1 (tf.nn.rnn_cell / tf.compat.v1.nn.rnn_cell)
# ----------------------------------------------------------------------------------------------

def _split_tf1_kernel(name: str, kernel: np.ndarray, input_size: int, cols: int,
                      ) -> Tuple[np.ndarray, np.ndarray, int]:
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) \
            or input_size < 1:
        raise ValueError(f"input_size must be a positive integer, got {input_size!r}")
    rows, c = kernel.shape
    H = rows - int(input_size)
    if H < 1 or c != cols * H:
        raise ValueError(f"{name} must have shape (input_size + H, {cols}*H) = "
                         f"({input_size} + H, {cols}*H) for some H >= 1, got {kernel.shape}")
    return kernel[:input_size], kernel[input_size:], H


def from_tf1_lstm(kernel, bias, *, input_size: int,
                  forget_bias: float = 1.0) -> Dict[str, np.ndarray]:
    """A TF1 ``BasicLSTMCell`` / ``LSTMCell`` (no peepholes, no projection, no cell clipping)
    in PyTorch's layout.

    ``kernel`` (I+H, 4H) multiplies ``concat([x, h])``; gates i, j, f, o (j is the candidate,
    PyTorch's g); ``bias`` (4H,). TF1 adds ``forget_bias`` (the cell's constructor argument,
    1.0 by default; it is not stored in checkpoints) to the forget gate at run time: here it is
    folded into the forget rows of ``bias_ih``. ``bias_hh`` is zero. Variables in a checkpoint:
    ``<scope>/basic_lstm_cell/kernel`` and ``.../bias`` (``lstm_cell`` for LSTMCell).
    """
    k = _float("kernel", kernel, 2)
    b = _float("bias", bias, 1)
    kx, kh, H = _split_tf1_kernel("kernel", k, input_size, 4)
    if b.shape != (4 * H,):
        raise ValueError(f"bias must have shape {(4 * H,)}, got {b.shape}")
    fb = float(forget_bias)
    if not np.isfinite(fb):
        raise ValueError(f"forget_bias must be finite, got {forget_bias!r}")
    b_ih = _reorder(b, _TF1_LSTM)
    b_ih[H:2 * H] += np.asarray(fb, b_ih.dtype)
    return _pack(_reorder(kx.T, _TF1_LSTM), _reorder(kh.T, _TF1_LSTM), b_ih,
                 np.zeros(4 * H, b.dtype), "lstm", None)


def from_tf1_gru(gates_kernel, gates_bias, candidate_kernel, candidate_bias, *,
                 input_size: int) -> Dict[str, object]:
    """A TF1 ``GRUCell`` in PyTorch's layout (``linear_before_reset=False``).

    TF1: ``[r, u] = sigmoid(concat([x, h]) @ gates_kernel + gates_bias)`` (gates_kernel
    (I+H, 2H), r then u; the bias is initialised to 1.0), ``c = tanh(concat([x, r*h]) @
    candidate_kernel + candidate_bias)`` ((I+H, H), (H,)), ``h' = u*h + (1-u)*c``. So u is
    PyTorch's z and the reset gate acts before the recurrent product. Variables in a
    checkpoint: ``<scope>/gru_cell/gates/kernel``, ``.../gates/bias``,
    ``.../candidate/kernel``, ``.../candidate/bias``.
    """
    gk = _float("gates_kernel", gates_kernel, 2)
    gb = _float("gates_bias", gates_bias, 1)
    ck = _float("candidate_kernel", candidate_kernel, 2)
    cb = _float("candidate_bias", candidate_bias, 1)
    gx, gh, H = _split_tf1_kernel("gates_kernel", gk, input_size, 2)
    if ck.shape != (int(input_size) + H, H):
        raise ValueError(f"candidate_kernel must have shape {(int(input_size) + H, H)}, "
                         f"got {ck.shape}")
    if gb.shape != (2 * H,):
        raise ValueError(f"gates_bias must have shape {(2 * H,)}, got {gb.shape}")
    if cb.shape != (H,):
        raise ValueError(f"candidate_bias must have shape {(H,)}, got {cb.shape}")
    cx, ch = ck[:input_size], ck[input_size:]
    w_ih = np.concatenate([gx.T, cx.T])         # r, u(=z), c(=n): TF1's order is PyTorch's
    w_hh = np.concatenate([gh.T, ch.T])
    b_ih = np.concatenate([gb, cb])
    return _pack(w_ih, w_hh, b_ih, np.zeros(3 * H, b_ih.dtype), "gru", False)


# ----------------------------------------------------------------------------------------------
# ONNX LSTM / GRU operators
# ----------------------------------------------------------------------------------------------

def from_onnx(W, R, B=None, *, cell: str, linear_before_reset: int = 0
              ) -> List[Dict[str, object]]:
    """The inputs W, R, B of an ONNX ``LSTM``/``GRU`` node in PyTorch's layout: one dict per
    direction (forward, then reverse for ``direction="bidirectional"``).

    W (D, G, I), R (D, G, H), B (D, 2G) = [Wb; Rb] or None (zeros); G = 4H with gates
    i, o, f, c (LSTM; peepholes P are not supported) or 3H with gates z, r, h (GRU, whose
    ``linear_before_reset`` attribute defaults to 0 in ONNX, unlike PyTorch). The default
    activations (Sigmoid, Tanh, Tanh), no ``clip`` and LSTM ``input_forget=0`` are assumed.
    """
    n = _gates(cell)
    w = _float("W", W, 3)
    r = _float("R", R, 3)
    D, G, I = w.shape
    if D not in (1, 2):
        raise ValueError(f"W must have 1 or 2 directions, got shape {w.shape}")
    if G == 0 or G % n:
        raise ValueError(f"W must have {n}*H rows per direction ({cell}), got shape {w.shape}")
    H = G // n
    if r.shape != (D, G, H):
        raise ValueError(f"R must have shape {(D, G, H)}, got {r.shape}")
    b = np.zeros((D, 2 * G), _dtype(w, r)) if B is None else _float("B", B, 2)
    if b.shape != (D, 2 * G):
        raise ValueError(f"B must have shape {(D, 2 * G)}, got {b.shape}")
    if linear_before_reset not in (0, 1, False, True):
        raise ValueError(f"linear_before_reset must be 0 or 1, got {linear_before_reset!r}")
    order = _ONNX_LSTM if cell == "lstm" else _ONNX_GRU
    return [_pack(_reorder(w[d], order), _reorder(r[d], order), _reorder(b[d, :G], order),
                  _reorder(b[d, G:], order), cell, bool(linear_before_reset))
            for d in range(D)]


def to_onnx(directions, *, cell: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of :func:`from_onnx`: (W, R, B) for a list of one or two PyTorch-layout
    dicts (forward, reverse). A GRU's ``linear_before_reset`` is the node's attribute, not
    part of W, R, B: both directions must agree on it."""
    if isinstance(directions, dict) or not 1 <= len(directions) <= 2:
        raise ValueError("directions must be a list of one or two parameter dicts")
    order = _inverse(_ONNX_LSTM if cell == "lstm" else _ONNX_GRU)
    Ws, Rs, Bs, shape, lbr = [], [], [], None, set()
    for p in directions:
        w_ih, w_hh, b_ih, b_hh, I, H = _check_params(p, cell)
        if shape is not None and (I, H) != shape:
            raise ValueError(f"the directions differ in size: {shape} and {(I, H)}")
        shape = (I, H)
        if cell == "gru":
            lbr.add(bool(p.get("linear_before_reset", True)) if hasattr(p, "get") else True)
        Ws.append(_reorder(w_ih, order))
        Rs.append(_reorder(w_hh, order))
        Bs.append(np.concatenate([_reorder(b_ih, order), _reorder(b_hh, order)]))
    if len(lbr) > 1:
        raise ValueError("the directions differ in linear_before_reset")
    return np.stack(Ws), np.stack(Rs), np.stack(Bs)


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------

def state_dict(layers) -> Dict[str, np.ndarray]:
    """PyTorch parameter names for a stack: ``layers[l]`` is one dict (unidirectional) or a
    list of one or two dicts (forward, reverse) from the functions above. The result loads
    into :class:`fastlstm.LSTM` / :class:`fastlstm.GRU` (``load_state_dict``), or into a
    :class:`~fastlstm.SequenceClassifier` with an ``rnn.`` prefix."""
    out: Dict[str, np.ndarray] = {}
    if isinstance(layers, dict):
        layers = [layers]
    for layer, dirs in enumerate(layers):
        if isinstance(dirs, dict):
            dirs = [dirs]
        if not 1 <= len(dirs) <= 2:
            raise ValueError(f"layer {layer} must have one or two directions, got {len(dirs)}")
        for d, p in enumerate(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                out[k + sfx] = np.asarray(p[k])
    return out
