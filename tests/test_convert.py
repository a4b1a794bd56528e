"""fastlstm.convert: other frameworks' recurrent weights in PyTorch's layout.

Each converter is checked by running the converted weights through fastlstm's kernels against
the source framework's own equations: real Keras 3 layers (skipped without keras), TF1's cell
equations written out in NumPy (TensorFlow itself is not needed; the equations are those of
tensorflow/python/ops/rnn_cell_impl.py, BasicLSTMCell.call and GRUCell.call), and ONNX's LSTM
and GRU operator equations from the ONNX operator specification (also in NumPy; torch's and
onnxruntime's readings of real ONNX graphs are in test_onnx.py).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm import convert

from testkit import child_env


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def run(p, x, cell, h0=None, c0=None):
    """fastlstm's kernel (float64) over x (T, B, I) with the converted params: (output, h_n)."""
    if cell == "lstm":
        r = fastlstm.lstm(x, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"], h0, c0,
                          training=False)
    else:
        r = fastlstm.gru(x, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"], h0,
                         linear_before_reset=p["linear_before_reset"], training=False)
    return r.output, r.h_n


# ----------------------------------------------------------------------------------------------
# TF1 cells, written out from rnn_cell_impl.py
# ----------------------------------------------------------------------------------------------

def tf1_basic_lstm(x, kernel, bias, forget_bias, h, c):
    """BasicLSTMCell.call over a sequence: gates i, j, f, o of concat([x, h]) @ kernel + bias;
    c' = c*sigmoid(f + forget_bias) + sigmoid(i)*tanh(j); h' = tanh(c')*sigmoid(o)."""
    out = []
    for t in range(x.shape[0]):
        g = np.concatenate([x[t], h], axis=1) @ kernel + bias
        i, j, f, o = np.split(g, 4, axis=1)
        c = c * sigmoid(f + forget_bias) + sigmoid(i) * np.tanh(j)
        h = np.tanh(c) * sigmoid(o)
        out.append(h)
    return np.stack(out), h, c


def tf1_gru(x, gk, gb, ck, cb, h):
    """GRUCell.call over a sequence: [r, u] = sigmoid(concat([x, h]) @ gk + gb);
    c = tanh(concat([x, r*h]) @ ck + cb); h' = u*h + (1-u)*c."""
    out = []
    for t in range(x.shape[0]):
        r, u = np.split(sigmoid(np.concatenate([x[t], h], axis=1) @ gk + gb), 2, axis=1)
        c = np.tanh(np.concatenate([x[t], r * h], axis=1) @ ck + cb)
        h = u * h + (1 - u) * c
        out.append(h)
    return np.stack(out), h


@pytest.mark.parametrize("forget_bias", [1.0, 0.0, 2.5])
def test_tf1_lstm_matches_cell_equations(rng, forget_bias):
    T, B, I, H = 7, 3, 5, 4
    kernel = rng.standard_normal((I + H, 4 * H)) * 0.5
    bias = rng.standard_normal(4 * H) * 0.5
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    want_out, want_h, want_c = tf1_basic_lstm(x, kernel, bias, forget_bias, h0, c0)
    p = convert.from_tf1_lstm(kernel, bias, input_size=I, forget_bias=forget_bias)
    assert set(p) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}
    assert not p["bias_hh"].any()
    r = fastlstm.lstm(x, **p, h0=h0, c0=c0, training=False)
    np.testing.assert_allclose(r.output, want_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.h_n, want_h, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.c_n, want_c, rtol=1e-10, atol=1e-12)


def test_tf1_lstm_forget_bias_is_not_stored(rng):
    """The forget bias lands in the forget rows of bias_ih only (TF1 never stores it)."""
    I, H = 3, 2
    kernel, bias = rng.standard_normal((I + H, 4 * H)), np.zeros(4 * H)
    p = convert.from_tf1_lstm(kernel, bias, input_size=I, forget_bias=1.0)
    np.testing.assert_array_equal(p["bias_ih"], [0, 0, 1, 1, 0, 0, 0, 0])


def test_tf1_gru_matches_cell_equations(rng):
    T, B, I, H = 6, 4, 3, 5
    gk = rng.standard_normal((I + H, 2 * H)) * 0.5
    gb = np.ones(2 * H)                      # GRUCell's default gate-bias initialisation
    gb += rng.standard_normal(2 * H) * 0.1
    ck = rng.standard_normal((I + H, H)) * 0.5
    cb = rng.standard_normal(H) * 0.5
    x, h0 = rng.standard_normal((T, B, I)), rng.standard_normal((B, H))
    want_out, want_h = tf1_gru(x, gk, gb, ck, cb, h0)
    p = convert.from_tf1_gru(gk, gb, ck, cb, input_size=I)
    assert p["linear_before_reset"] is False
    out, h_n = run(p, x, "gru", h0)
    np.testing.assert_allclose(out, want_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n, want_h, rtol=1e-10, atol=1e-12)


def test_tf1_float32_stays_float32(rng):
    I, H = 3, 2
    p = convert.from_tf1_lstm(rng.standard_normal((I + H, 4 * H)).astype(np.float32),
                              np.zeros(4 * H, np.float32), input_size=I)
    assert all(v.dtype == np.float32 for v in p.values())


def test_tf1_shape_errors(rng):
    with pytest.raises(ValueError, match="kernel must have shape"):
        convert.from_tf1_lstm(np.zeros((7, 12)), np.zeros(12), input_size=5)   # H=2 != 3
    with pytest.raises(ValueError, match="bias must have shape"):
        convert.from_tf1_lstm(np.zeros((5, 8)), np.zeros(9), input_size=3)
    with pytest.raises(ValueError, match="input_size"):
        convert.from_tf1_lstm(np.zeros((5, 8)), np.zeros(8), input_size=0)
    with pytest.raises(ValueError, match="candidate_kernel"):
        convert.from_tf1_gru(np.zeros((5, 4)), np.zeros(4), np.zeros((5, 3)), np.zeros(2),
                             input_size=3)


# ----------------------------------------------------------------------------------------------
# Keras: round trips and shape rules (real layers below)
# ----------------------------------------------------------------------------------------------

def keras_weights(rng, cell, I, H, reset_after=True, dtype=np.float32):
    G = (4 if cell == "lstm" else 3) * H
    bias_shape = (2, G) if cell == "gru" and reset_after else (G,)
    return (rng.standard_normal((I, G)).astype(dtype), rng.standard_normal((H, G)).astype(dtype),
            rng.standard_normal(bias_shape).astype(dtype))


@pytest.mark.parametrize("cell,reset_after", [("lstm", True), ("gru", True), ("gru", False)])
def test_keras_round_trip_is_exact(rng, cell, reset_after):
    w = keras_weights(rng, cell, 5, 3, reset_after)
    p = convert.from_keras(*w, cell=cell, reset_after=reset_after)
    back = convert.to_keras(p, cell=cell, reset_after=reset_after)
    for a, b in zip(back, w):
        assert a.dtype == b.dtype and a.shape == b.shape and a.flags.c_contiguous
        np.testing.assert_array_equal(a, b)


def test_keras_gate_blocks(rng):
    """Keras GRU z r h -> r z n; LSTM i f c o is PyTorch's order already."""
    I, H = 2, 3
    k = np.repeat(np.arange(3.0), H)[None, :].repeat(I, 0)     # column block index z=0 r=1 h=2
    p = convert.from_keras(k, np.zeros((H, 3 * H)), np.zeros((2, 3 * H)), cell="gru")
    np.testing.assert_array_equal(p["weight_ih"][:, 0], np.repeat([1.0, 0.0, 2.0], H))
    k = np.repeat(np.arange(4.0), H)[None, :].repeat(I, 0)
    p = convert.from_keras(k, np.zeros((H, 4 * H)), np.zeros(4 * H), cell="lstm")
    np.testing.assert_array_equal(p["weight_ih"][:, 0], np.repeat([0.0, 1.0, 2.0, 3.0], H))


def test_keras_errors(rng):
    k, r, b = keras_weights(rng, "gru", 4, 3, reset_after=True)
    with pytest.raises(ValueError, match="belongs to a reset_after=True GRU"):
        convert.from_keras(k, r, b, cell="gru", reset_after=False)
    with pytest.raises(ValueError, match=r"bias must have shape \(2, 9\)"):
        convert.from_keras(k, r, b[0], cell="gru", reset_after=True)
    with pytest.raises(ValueError, match="recurrent_kernel must have shape"):
        convert.from_keras(k, r[:2], b, cell="gru")
    with pytest.raises(ValueError, match="cell must be one of"):
        convert.from_keras(k, r, b, cell="rnn")
    p = convert.from_keras(k, r, b, cell="gru", reset_after=True)
    with pytest.raises(ValueError, match="cannot be written as a Keras GRU"):
        convert.to_keras(p, cell="gru", reset_after=False)


def test_keras_no_bias(rng):
    k, r, _ = keras_weights(rng, "lstm", 4, 3)
    p = convert.from_keras(k, r, None, cell="lstm")
    assert not p["bias_ih"].any() and not p["bias_hh"].any()


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    if "keras" not in sys.modules and os.environ["KERAS_BACKEND"] == "torch":
        pytest.importorskip("torch")
    return pytest.importorskip("keras")


@pytest.mark.parametrize("cell,reset_after,use_bias",
                         [("lstm", True, True), ("lstm", True, False), ("gru", True, True),
                          ("gru", False, True), ("gru", True, False), ("gru", False, False)])
def test_real_keras_layers(rng, cell, reset_after, use_bias):
    keras = _keras()
    T, B, I, H = 6, 3, 5, 4
    kw = dict(return_sequences=True, return_state=True, use_bias=use_bias)
    if cell == "lstm":
        layer = keras.layers.LSTM(H, **kw)
    else:
        layer = keras.layers.GRU(H, reset_after=reset_after, **kw)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    layer.build((B, T, I))
    # random biases too (Keras initialises them to zeros / the forget gate to one)
    layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5
                       for w in layer.get_weights()])
    res = [keras.ops.convert_to_numpy(v) for v in layer(x)]
    weights = layer.get_weights()
    p = convert.from_keras(*weights[:2], weights[2] if use_bias else None, cell=cell,
                           reset_after=reset_after)
    out, h_n = run(p, np.ascontiguousarray(x.transpose(1, 0, 2)), cell)
    np.testing.assert_allclose(out.transpose(1, 0, 2), res[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_n, res[1], rtol=1e-5, atol=1e-5)
    if cell == "lstm":
        c_n = fastlstm.lstm(np.ascontiguousarray(x.transpose(1, 0, 2)), **p, training=False).c_n
        np.testing.assert_allclose(c_n, res[2], rtol=1e-5, atol=1e-5)
    # and back: set_weights(to_keras(...)) reproduces the layer's weights exactly
    back = convert.to_keras(p, cell=cell, reset_after=reset_after)
    for a, b in zip(back, weights):
        np.testing.assert_array_equal(a, b)


def test_real_keras_bidirectional_layer(rng):
    keras = _keras()
    T, B, I, H = 5, 2, 3, 4
    layer = keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True))
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    layer.build((B, T, I))
    layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5
                       for w in layer.get_weights()])
    want = keras.ops.convert_to_numpy(layer(x))
    w = layer.get_weights()
    dirs = [convert.from_keras(*w[:3], cell="gru"), convert.from_keras(*w[3:], cell="gru")]
    gru = fastlstm.GRU(I, H, bidirectional=True, batch_first=True)
    gru.load_state_dict(convert.state_dict([dirs]))
    out, _ = gru.forward(x, training=False)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# ONNX operator layout (the equations of the ONNX LSTM/GRU operator specification)
# ----------------------------------------------------------------------------------------------

def onnx_lstm_ref(x, W, R, B, h, c):
    """ONNX LSTM, one direction: gates i o f c of Xt*W^T + Ht-1*R^T + Wb + Rb."""
    G = W.shape[0]
    out = []
    for t in range(x.shape[0]):
        g = x[t] @ W.T + h @ R.T + B[:G] + B[G:]
        i, o, f, cc = np.split(g, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(cc)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out), h


def onnx_gru_ref(x, W, R, B, h, lbr):
    """ONNX GRU, one direction: gates z r h; linear_before_reset as specified."""
    G = W.shape[0]
    Wz, Wr, Wh = np.split(W, 3)
    Rz, Rr, Rh = np.split(R, 3)
    Wbz, Wbr, Wbh = np.split(B[:G], 3)
    Rbz, Rbr, Rbh = np.split(B[G:], 3)
    out = []
    for t in range(x.shape[0]):
        z = sigmoid(x[t] @ Wz.T + h @ Rz.T + Wbz + Rbz)
        r = sigmoid(x[t] @ Wr.T + h @ Rr.T + Wbr + Rbr)
        if lbr:
            n = np.tanh(x[t] @ Wh.T + r * (h @ Rh.T + Rbh) + Wbh)
        else:
            n = np.tanh(x[t] @ Wh.T + (r * h) @ Rh.T + Rbh + Wbh)
        h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out), h


@pytest.mark.parametrize("cell,lbr", [("lstm", 0), ("gru", 0), ("gru", 1)])
def test_onnx_layout_matches_operator_equations(rng, cell, lbr):
    T, B, I, H, D = 5, 3, 4, 3, 2
    G = (4 if cell == "lstm" else 3) * H
    W = rng.standard_normal((D, G, I)) * 0.5
    R = rng.standard_normal((D, G, H)) * 0.5
    Bias = rng.standard_normal((D, 2 * G)) * 0.5
    x = rng.standard_normal((T, B, I))
    dirs = convert.from_onnx(W, R, Bias, cell=cell, linear_before_reset=lbr)
    assert len(dirs) == 2
    for d, p in enumerate(dirs):
        xd = x if d == 0 else x[::-1]
        h0 = np.zeros((B, H))
        if cell == "lstm":
            want, want_h = onnx_lstm_ref(xd, W[d], R[d], Bias[d], h0, np.zeros((B, H)))
        else:
            want, want_h = onnx_gru_ref(xd, W[d], R[d], Bias[d], h0, lbr)
        out, h_n = run(p, np.ascontiguousarray(xd), cell)
        np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(h_n, want_h, rtol=1e-10, atol=1e-12)
    # and back
    for a, b in zip(convert.to_onnx(dirs, cell=cell), (W, R, Bias)):
        np.testing.assert_array_equal(a, b)


def test_onnx_errors(rng):
    with pytest.raises(ValueError, match="R must have shape"):
        convert.from_onnx(np.zeros((1, 12, 2)), np.zeros((1, 12, 4)), None, cell="lstm")
    with pytest.raises(ValueError, match="B must have shape"):
        convert.from_onnx(np.zeros((1, 9, 2)), np.zeros((1, 9, 3)), np.zeros((1, 9)), cell="gru")
    with pytest.raises(ValueError, match="1 or 2 directions"):
        convert.from_onnx(np.zeros((3, 9, 2)), np.zeros((3, 9, 3)), None, cell="gru")
    p = convert.from_onnx(np.ones((1, 9, 2)), np.ones((1, 9, 3)), None, cell="gru")[0]
    assert p["linear_before_reset"] is False and not p["bias_ih"].any()


def test_state_dict_names(rng):
    dirs = convert.from_onnx(rng.standard_normal((2, 8, 3)), rng.standard_normal((2, 8, 2)),
                             None, cell="lstm")
    sd = convert.state_dict([dirs])
    assert sorted(sd) == sorted(fastlstm.LSTM(3, 2, bidirectional=True).parameters())


def test_import_pulls_no_framework():
    """Importing fastlstm and fastlstm.convert imports none of the optional frameworks."""
    import subprocess
    code = ("import sys, fastlstm, fastlstm.convert; "
            "bad = [m for m in ('onnx', 'onnxruntime', 'keras', 'h5py', 'torch', 'tensorflow') "
            "if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=child_env(),
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    assert r.returncode == 0, r.stdout + r.stderr
