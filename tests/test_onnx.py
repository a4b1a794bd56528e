"""ONNX: fastlstm.onnx.export/load of a SequenceClassifier (checked in onnxruntime), the CLI's
``export``, and torch.onnx.export's LSTM/GRU graphs read through fastlstm.convert.from_onnx."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastlstm
from fastlstm import convert
from fastlstm.model import SequenceClassifier, save

from testkit import child_env

import fastlstm.onnx as fonnx  # imports onnx only when used

# Checked without importing onnx: the test session's memory at collection time is what the
# child processes of test_checkpoint_safety inherit as their peak RSS.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnx") is None,
                                reason="needs onnx (pip install 'fastlstm[onnx]')")

CONFIGS = [("lstm", 1, False), ("gru", 1, False), ("lstm", 2, True), ("gru", 2, True),
           ("lstm", 3, False), ("gru", 1, True)]


def make_model(cell, layers, bidir, normalize=True, seed=0, forget_bias=0.0):
    m = SequenceClassifier(6, 5, 4, cell=cell, num_layers=layers, bidirectional=bidir, seed=seed,
                           forget_bias=forget_bias if cell == "lstm" else 0.0)
    if normalize:
        m.metadata["normalize"] = {"mean": 0.1307, "std": 0.3081}
    return m


def fastlstm_logits(model, x):
    norm = model.metadata.get("normalize")
    if norm:
        x = ((x - norm["mean"]) / norm["std"]).astype(np.float32)
    return model.forward(x, training=False)


@pytest.mark.parametrize("cell,layers,bidir", CONFIGS)
@pytest.mark.parametrize("normalize", [True, False])
def test_onnxruntime_gives_fastlstm_logits(tmp_path, cell, layers, bidir, normalize):
    import onnx
    ort = pytest.importorskip("onnxruntime")
    model = make_model(cell, layers, bidir, normalize, forget_bias=1.0)
    path = tmp_path / "m.onnx"
    fonnx.export(model, path)
    onnx.checker.check_model(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for B, T in ((3, 7), (1, 2), (5, 11)):               # batch and time are free
        x = rng.random((B, T, 6), dtype=np.float32)
        (got,) = sess.run(None, {"x": x})
        want = fastlstm_logits(model, x)
        assert got.shape == (B, 4)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell,layers,bidir", CONFIGS)
def test_load_of_export_is_identical(tmp_path, cell, layers, bidir):
    model = make_model(cell, layers, bidir)
    fonnx.export(model, tmp_path / "m.onnx")
    back = fonnx.load(tmp_path / "m.onnx")
    assert back.config() == model.config()
    assert back.metadata == {"normalize": model.metadata["normalize"]}
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(back.parameters()[k], v, err_msg=k)


@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True)])
def test_tf1_gru_round_trips_and_runs_in_onnxruntime(tmp_path, layers, bidir):
    """The TF1 GRU (reset gate before the recurrent product) is ONNX's linear_before_reset=0."""
    model = SequenceClassifier(6, 5, 4, cell="gru", num_layers=layers, bidirectional=bidir,
                               seed=2, linear_before_reset=False, gate_bias=1.0)
    path = tmp_path / "tf1.onnx"
    fonnx.export(model, path)
    back = fonnx.load(path)
    assert back.config() == model.config() and back.config()["linear_before_reset"] is False
    x = np.random.default_rng(4).random((3, 7, 6), dtype=np.float32)
    np.testing.assert_array_equal(back.forward(x, training=False),
                                  model.forward(x, training=False))
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], fastlstm_logits(model, x),
                               rtol=1e-5, atol=1e-5)


def test_models_with_features_onnx_cannot_express_are_refused_by_name(tmp_path):
    model = SequenceClassifier(6, 5, 4, layer_norm=True, proj_size=3, seed=0)
    with pytest.raises(ValueError, match="proj_size, layer_norm"):
        fonnx.export(model, tmp_path / "m.onnx")


def test_float64_model_exports_in_float32(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = SequenceClassifier(3, 4, 2, cell="gru", dtype=np.float64, seed=1)
    fonnx.export(model, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], model.forward(x, training=False),
                               rtol=1e-5, atol=1e-5)
    assert fonnx.load(tmp_path / "m.onnx").dtype == np.float32


def test_cli_export(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = make_model("lstm", 2, True)
    save(model, tmp_path / "m.npz")
    r = subprocess.run([sys.executable, "-m", "fastlstm", "export", "--load",
                        str(tmp_path / "m.npz"), "--onnx", str(tmp_path / "m.onnx")],
                       capture_output=True, text=True, env=child_env(), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "m.onnx" in r.stdout
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 4, 6), dtype=np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], fastlstm_logits(model, x),
                               rtol=1e-5, atol=1e-5)
    # a bad checkpoint is one line and status 1
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    r = subprocess.run([sys.executable, "-m", "fastlstm", "export", "--load",
                        str(tmp_path / "bad.npz"), "--onnx", str(tmp_path / "x.onnx")],
                       capture_output=True, text=True, env=child_env(), cwd=str(tmp_path))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "fastlstm: error:" in r.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_load_refuses_other_graphs(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    model = make_model("gru", 2, False)
    proto = fonnx.to_model_proto(model)
    # two GRU layers with different equations are no SequenceClassifier
    node = next(n for n in proto.graph.node if n.op_type == "GRU")
    next(a for a in node.attribute if a.name == "linear_before_reset").i = 0
    with pytest.raises(fonnx.OnnxGraphError, match="different linear_before_reset"):
        fonnx.from_model_proto(proto)
    # an unrelated graph
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(fonnx.OnnxGraphError, match="expected a Transpose node, found Relu"):
        fonnx.from_model_proto(helper.make_model(g))
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    with pytest.raises(fonnx.OnnxGraphError, match="not an ONNX model") as e:
        fonnx.load(tmp_path / "junk.onnx")
    assert "\n" not in str(e.value)
    # initializers kept outside the file are never read
    proto = fonnx.to_model_proto(make_model("lstm", 1, False))
    t = proto.graph.initializer[0]
    t.data_location = onnx.TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "/etc/passwd"
    with pytest.raises(fonnx.OnnxGraphError, match="external data"):
        fonnx.from_model_proto(proto)


# ----------------------------------------------------------------------------------------------
# torch.onnx.export's graphs -> from_onnx -> fastlstm == torch
# ----------------------------------------------------------------------------------------------

def _torch_onnx(module, x):
    import onnx
    torch = pytest.importorskip("torch")
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:   # the TorchScript exporter writes ONNX's LSTM/GRU operators
            torch.onnx.export(module, (x,), f, dynamo=False, opset_version=14,
                              input_names=["x"], output_names=["y", "h_n"])
        except Exception as e:  # pragma: no cover - depends on the torch build
            pytest.skip(f"torch.onnx.export failed: {type(e).__name__}: {e}")
    return onnx.load_from_string(f.getvalue())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers,bidir", [(1, True), (2, True), (2, False)])
def test_torch_onnx_graphs_through_from_onnx(cell, layers, bidir):
    import onnx
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    I, H, T, B = 5, 4, 6, 3
    cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    module = cls(I, H, num_layers=layers, bidirectional=bidir).eval()
    x = torch.randn(T, B, I)
    proto = _torch_onnx(module, x)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    rnn_nodes = [n for n in proto.graph.node if n.op_type in ("LSTM", "GRU")]
    assert len(rnn_nodes) == layers
    stack = []
    for node in rnn_nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        W, R, Bias = (inits[node.input[k]] for k in (1, 2, 3))
        stack.append(convert.from_onnx(W, R, Bias, cell=cell,
                                       linear_before_reset=attrs.get("linear_before_reset", 0)))
    if cell == "gru":
        assert stack[0][0]["linear_before_reset"] is True      # torch writes PyTorch's GRU
        layer = fastlstm.GRU(I, H, layers, bidirectional=bidir)
    else:
        layer = fastlstm.LSTM(I, H, layers, bidirectional=bidir)
    layer.load_state_dict(convert.state_dict(stack))
    # the converted weights are torch's own, element for element
    for k, v in module.state_dict().items():
        np.testing.assert_array_equal(layer.parameters()[k], v.numpy(), err_msg=k)
    with torch.no_grad():
        want_y, want_s = module(x)
    got_y, got_s = layer.forward(x.numpy(), training=False)
    np.testing.assert_allclose(got_y, want_y.numpy(), rtol=1e-5, atol=1e-5)
    want_h = want_s[0] if cell == "lstm" else want_s
    got_h = got_s[0] if cell == "lstm" else got_s
    np.testing.assert_allclose(got_h, want_h.numpy(), rtol=1e-5, atol=1e-5)
