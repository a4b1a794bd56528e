"""SequenceClassifier: gradients, torch state_dict loading, checkpoint round trip and errors."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from testkit import FD_EPS, assert_close, assert_close_fd

from fastlstm.loss import softmax_cross_entropy
from fastlstm.model import CheckpointError, SequenceClassifier, load, save


@pytest.mark.parametrize("cell,layers,bidirectional", [("lstm", 1, False), ("gru", 2, True),
                                                       ("lstm", 2, True)])
def test_classifier_gradients_match_finite_differences(cell, layers, bidirectional, rng):
    model = SequenceClassifier(3, 4, 5, cell=cell, num_layers=layers,
                               bidirectional=bidirectional, dtype=np.float64, seed=0)
    x = rng.uniform(-1, 1, (3, 6, 3))
    y = np.array([0, 4, 2])
    lengths = np.array([6, 2, 5])
    model.zero_grad()
    loss, g = softmax_cross_entropy(model.forward(x, lengths=lengths), y)
    gx = model.backward(g)
    assert gx.shape == x.shape
    for name, p in list(model.parameters().items()) + [("x", x)]:
        u = rng.standard_normal(p.shape)
        orig = p.copy()
        p[...] = orig + FD_EPS * u
        lp = softmax_cross_entropy(model.forward(x, lengths=lengths), y)[0]
        p[...] = orig - FD_EPS * u
        lm = softmax_cross_entropy(model.forward(x, lengths=lengths), y)[0]
        p[...] = orig
        analytic = float(np.sum((gx if name == "x" else model.grads[name]) * u))
        assert_close_fd(analytic, (lp - lm) / (2 * FD_EPS), name)


def test_parameter_names_and_forget_bias():
    m = SequenceClassifier(28, 8, 10, seed=0)
    assert list(m.parameters()) == ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
                                    "rnn.bias_hh_l0", "fc.weight", "fc.bias"]
    assert list(m.grads) == list(m.parameters())
    assert m.num_parameters() == 4 * 8 * (28 + 8 + 2) + 10 * 8 + 10
    f = SequenceClassifier(28, 8, 10, seed=0, forget_bias=1.0)
    b0, b1 = m.parameters()["rnn.bias_ih_l0"], f.parameters()["rnn.bias_ih_l0"]
    np.testing.assert_allclose(b1[8:16], b0[8:16] + 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.delete(b1, np.s_[8:16]), np.delete(b0, np.s_[8:16]))
    with pytest.raises(ValueError, match="LSTM cell only"):
        SequenceClassifier(28, 8, 10, cell="gru", forget_bias=1.0)
    with pytest.raises(ValueError, match="cell must be one of"):
        SequenceClassifier(28, 8, 10, cell="rnn")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torch_state_dict_loads_and_gives_the_same_logits(cell, rng):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            rnn = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
            self.rnn = rnn(28, 16, 2, batch_first=True, bidirectional=True)
            self.fc = torch.nn.Linear(32, 10)

        def forward(self, x):
            _, h = self.rnn(x)
            h = h[0] if cell == "lstm" else h
            return self.fc(torch.cat([h[-2], h[-1]], dim=1))

    net = Net().double()
    model = SequenceClassifier(28, 16, 10, cell=cell, num_layers=2, bidirectional=True,
                               dtype=np.float64)
    model.load_state_dict({k: v.numpy() for k, v in net.state_dict().items()})
    x = rng.uniform(0, 1, (5, 28, 28))
    assert_close(model.forward(x), net(torch.tensor(x)).detach().numpy(), np.float64, "logits")


@pytest.mark.parametrize("cell,layers,bidirectional,dtype", [
    ("lstm", 1, False, "float32"), ("gru", 2, True, "float64")])
def test_checkpoint_round_trip(tmp_path, rng, cell, layers, bidirectional, dtype):
    m = SequenceClassifier(7, 5, 3, cell=cell, num_layers=layers, bidirectional=bidirectional,
                           dtype=dtype, seed=3)
    m.metadata = {"normalize": {"mean": 0.5, "std": 0.25}, "note": "round trip"}
    path = tmp_path / "model.npz"
    save(m, path)
    assert path.exists() and not list(tmp_path.glob(".fastlstm-*"))
    r = load(path)
    assert r.config() == m.config()
    assert r.metadata == m.metadata
    assert list(r.parameters()) == list(m.parameters())
    for k, v in m.parameters().items():
        assert r.parameters()[k].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(r.parameters()[k], v)
    x = rng.uniform(0, 1, (4, 6, 7)).astype(dtype)
    np.testing.assert_array_equal(r.forward(x), m.forward(x))
    # A plain np.load (no pickle) sees the parameters under their names.
    with np.load(path, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["fc.weight"], m.parameters()["fc.weight"])


def _rewrite(src, dst, change):
    """Copy checkpoint ``src`` to ``dst`` with ``change(arrays)`` applied."""
    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    np.savez(dst, **arrays)


def test_load_rejects_files_that_are_not_checkpoints(tmp_path):
    m = SequenceClassifier(4, 3, 2, seed=0)
    good = tmp_path / "good.npz"
    save(m, good)

    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a fastlstm checkpoint .not an .npz file"):
        load(text)

    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="no '__fastlstm__' entry"):
        load(plain)

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a fastlstm checkpoint"):
        load(truncated)

    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")


def test_load_rejects_mismatched_checkpoints(tmp_path):
    m = SequenceClassifier(4, 3, 2, seed=0)
    good = tmp_path / "good.npz"
    save(m, good)

    def wrong_shape(a):
        a["rnn.weight_hh_l0"] = np.zeros((12, 4), np.float32)

    def missing(a):
        del a["fc.bias"]

    def newer(a):
        header = json.loads(str(a["__fastlstm__"]))
        header["version"] = 99
        a["__fastlstm__"] = np.array(json.dumps(header))

    def bad_config(a):
        header = json.loads(str(a["__fastlstm__"]))
        header["config"]["cell"] = "rnn"
        a["__fastlstm__"] = np.array(json.dumps(header))

    cases = [(wrong_shape, r"rnn.weight_hh_l0 must have shape \(12, 3\), got \(12, 4\)"),
             (missing, r"missing \['fc.bias'\]"),
             (newer, "unsupported checkpoint version 99"),
             (bad_config, "invalid model config")]
    for change, message in cases:
        path = tmp_path / f"{change.__name__}.npz"
        _rewrite(good, path, change)
        assert zipfile.is_zipfile(path)
        with pytest.raises(CheckpointError, match=message):
            load(path)


def test_inference_forward_forbids_backward_before_touching_gradients(rng):
    model = SequenceClassifier(3, 6, 4, seed=0)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    logits = model.forward(x)
    np.testing.assert_array_equal(model.forward(x, training=False), logits)
    np.testing.assert_array_equal(model.predict(x), logits.argmax(axis=1))
    before = {k: v.copy() for k, v in model.grads.items()}
    with pytest.raises(RuntimeError, match="forward with training=True"):
        model.backward(np.ones_like(logits))
    for k, v in model.grads.items():
        np.testing.assert_array_equal(v, before[k])
