"""fastlstm.keras_io.read_keras: LSTM/GRU layers of real Keras 3 files, and hostile files."""

from __future__ import annotations

import importlib.util
import os
import sys
import zipfile

import numpy as np
import pytest

import fastlstm
from fastlstm import convert

from fastlstm.keras_io import KerasFileError, read_keras  # imports h5py only when reading

# Checked without importing h5py (see test_onnx.py: memory at collection time).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("h5py") is None,
                                reason="needs h5py (pip install 'fastlstm[keras]')")


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    if "keras" not in sys.modules and os.environ["KERAS_BACKEND"] == "torch":
        pytest.importorskip("torch")
    return pytest.importorskip("keras")


def _randomise(keras, model, rng):
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5 for w in ws])


def _stack(recs):
    """A fastlstm layer for consecutive records of one cell type and width."""
    r0 = recs[0]
    kw = dict(num_layers=len(recs), bidirectional=r0["bidirectional"], batch_first=True)
    if r0["cell"] == "gru":
        layer = fastlstm.GRU(r0["input_size"], r0["hidden_size"],
                             linear_before_reset=r0["reset_after"], **kw)
    else:
        layer = fastlstm.LSTM(r0["input_size"], r0["hidden_size"], **kw)
    layer.load_state_dict(convert.state_dict([r["directions"] for r in recs]))
    return layer


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory):
    keras = _keras()
    rng = np.random.default_rng(5)
    inp = keras.Input((7, 3))
    x = keras.layers.LSTM(4, return_sequences=True, name="first")(inp)
    x = keras.layers.Bidirectional(keras.layers.GRU(5, reset_after=False, return_sequences=True),
                                   name="second")(x)
    x = keras.layers.GRU(6, name="third")(x)                     # reset_after=True
    out = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inp, out)
    _randomise(keras, model, rng)
    d = tmp_path_factory.mktemp("keras")
    model.save(d / "m.keras")
    model.save_weights(d / "m.weights.h5")
    xs = rng.standard_normal((4, 7, 3)).astype(np.float32)
    feats = keras.Model(inp, [model.get_layer(n).output for n in ("first", "second", "third")])
    want = [keras.ops.convert_to_numpy(v) for v in feats(xs)]
    return d, xs, want


@pytest.mark.parametrize("name", ["m.keras", "m.weights.h5"])
def test_real_keras_file_layers_reproduce_keras(keras_model, name):
    d, xs, want = keras_model
    recs = read_keras(d / name)
    if name == "m.keras":                       # model order and names from config.json
        assert [r["name"] for r in recs] == ["first", "second", "third"]
        assert recs[0]["go_backwards"] is False and recs[1]["merge_mode"] == "concat"
    else:                                       # sorted by group path: bidirectional, gru, lstm
        by = {r["cell"] + str(r["bidirectional"]): r for r in recs}
        assert [r["path"] for r in recs] == ["layers/bidirectional", "layers/gru", "layers/lstm"]
        recs = [by["lstmFalse"], by["gruTrue"], by["gruFalse"]]
    assert [r["cell"] for r in recs] == ["lstm", "gru", "gru"]
    assert [r["bidirectional"] for r in recs] == [False, True, False]
    assert [r["reset_after"] for r in recs[1:]] == [False, True]
    x = xs
    outs = []
    for r in recs:
        out, h = _stack([r]).forward(x, training=False)
        outs.append(out)
        x = out
    np.testing.assert_allclose(outs[0], want[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs[1], want[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs[2][:, -1], want[2], rtol=1e-5, atol=1e-5)


def test_sequential_lstm_stack(tmp_path):
    keras = _keras()
    rng = np.random.default_rng(9)
    model = keras.Sequential([keras.Input((5, 2)), keras.layers.LSTM(3, return_sequences=True),
                              keras.layers.LSTM(3)])
    _randomise(keras, model, rng)
    model.save(tmp_path / "s.keras")
    xs = rng.standard_normal((2, 5, 2)).astype(np.float32)
    want = keras.ops.convert_to_numpy(model(xs))
    recs = read_keras(tmp_path / "s.keras")
    assert [r["input_size"] for r in recs] == [2, 3]
    _, (h_n, _) = _stack(recs).forward(xs, training=False)
    np.testing.assert_allclose(h_n[-1], want, rtol=1e-5, atol=1e-5)


def test_keras_activation_other_than_tanh_is_refused(tmp_path):
    keras = _keras()
    model = keras.Sequential([keras.Input((5, 2)), keras.layers.GRU(3, activation="relu")])
    model.save(tmp_path / "relu.keras")
    with pytest.raises(KerasFileError, match="tanh/sigmoid only"):
        read_keras(tmp_path / "relu.keras")


# ----------------------------------------------------------------------------------------------
# Hand-made files (h5py only)
# ----------------------------------------------------------------------------------------------

def _weights_file(path, arrays, cell_name="lstm_cell", layer="lstm"):
    import h5py
    with h5py.File(path, "w") as f:
        g = f.create_group(f"layers/{layer}/cell/vars")
        g.attrs["name"] = cell_name
        f[f"layers/{layer}"].create_group("vars").attrs["name"] = layer
        for k, a in enumerate(arrays):
            g[str(k)] = a


def test_weights_file_without_keras(tmp_path):
    rng = np.random.default_rng(1)
    I, H = 3, 2
    w = [rng.standard_normal((I, 3 * H)), rng.standard_normal((H, 3 * H)),
         rng.standard_normal((2, 3 * H))]
    _weights_file(tmp_path / "g.weights.h5", w, "gru_cell", "gru")
    (rec,) = read_keras(tmp_path / "g.weights.h5")
    assert rec["cell"] == "gru" and rec["reset_after"] is True and rec["hidden_size"] == H
    ref = convert.from_keras(*w, cell="gru")
    for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        np.testing.assert_array_equal(rec["directions"][0][k], ref[k])


def test_gru_without_bias_needs_reset_after(tmp_path):
    rng = np.random.default_rng(1)
    w = [rng.standard_normal((3, 6)), rng.standard_normal((2, 6))]
    _weights_file(tmp_path / "g.weights.h5", w, "gru_cell", "gru")
    with pytest.raises(KerasFileError, match="pass reset_after"):
        read_keras(tmp_path / "g.weights.h5")
    (rec,) = read_keras(tmp_path / "g.weights.h5", reset_after=False)
    assert rec["reset_after"] is False


@pytest.mark.parametrize("arrays,match", [
    ([np.zeros((3, 8)), np.zeros((2, 8)), np.zeros(9)], "bias must have shape"),
    ([np.zeros((3, 8)), np.zeros((3, 8)), np.zeros(8)], "recurrent_kernel must have shape"),
    ([np.zeros((3, 8), np.int32), np.zeros((2, 8)), np.zeros(8)], "expected float"),
    ([np.zeros((3, 8, 1)), np.zeros((2, 8)), np.zeros(8)], "expected a vector or a matrix"),
])
def test_bad_weights_are_one_line_errors(tmp_path, arrays, match):
    _weights_file(tmp_path / "bad.weights.h5", arrays)
    with pytest.raises(KerasFileError, match=match) as e:
        read_keras(tmp_path / "bad.weights.h5")
    assert "\n" not in str(e.value)


def test_external_link_is_refused(tmp_path):
    import h5py
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["k"] = np.zeros((3, 8))
    with h5py.File(tmp_path / "ext.weights.h5", "w") as f:
        g = f.create_group("layers/lstm/cell/vars")
        g.attrs["name"] = "lstm_cell"
        g["0"] = h5py.ExternalLink(str(other), "k")
        g["1"] = np.zeros((2, 8))
    with pytest.raises(KerasFileError, match="ExternalLink"):
        read_keras(tmp_path / "ext.weights.h5")


def test_not_keras_files(tmp_path):
    import h5py
    (tmp_path / "a.keras").write_bytes(b"hello world")
    with pytest.raises(KerasFileError, match="neither a .keras archive"):
        read_keras(tmp_path / "a.keras")
    with zipfile.ZipFile(tmp_path / "b.keras", "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(KerasFileError, match="no model.weights.h5"):
        read_keras(tmp_path / "b.keras")
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["model_weights/x"] = np.zeros(3)
    with pytest.raises(KerasFileError, match="Keras 2 .h5 files are not supported"):
        read_keras(tmp_path / "c.h5")
    (tmp_path / "d.keras").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(KerasFileError, match="not a valid .keras archive"):
        read_keras(tmp_path / "d.keras")
