"""A :class:`~fastlstm.SequenceClassifier` as an ONNX graph, and back.

    import fastlstm.onnx
    fastlstm.onnx.export(model, "model.onnx")        # python -m fastlstm export --load m.npz --onnx m.onnx
    model = fastlstm.onnx.load("model.onnx")

The graph (opset 14, IR version 7, float32) uses ONNX's standard ``LSTM``/``GRU`` operators,
so any ONNX runtime runs it:

- input ``x``: float32 (batch, time, input_size), batch-first like ``SequenceClassifier``;
  batch and time are free dimensions. Every sequence runs all ``time`` steps (no lengths).
- when ``model.metadata["normalize"]`` is set (the trainer sets it), the graph starts with
  ``Sub(mean)``, ``Div(std)``: feed what :func:`fastlstm.train.prepare_images` takes as float
  input (pixels scaled to [0, 1]), not its output. Without it, ``x`` goes in as is.
- ``Transpose`` to (time, batch, input); per layer one ``LSTM``/``GRU`` node (``direction``
  forward or bidirectional; GRU ``linear_before_reset`` 1 (PyTorch's) or 0 (TF1's)); between layers
  ``Transpose`` + ``Reshape`` of ``Y`` (time, dirs, batch, H) to (time, batch, dirs*H).
- the last layer's ``Y_h`` (dirs, batch, H) -> (batch, dirs*H): the forward final state and the
  reverse one, concatenated, exactly the model's features; then ``Gemm`` (the dense head).
- output ``logits``: float32 (batch, num_classes).

A float64 model is written in float32. :func:`load` reads graphs of exactly this shape (those
written by :func:`export`, or built the same way) and nothing else.
Needs the ``onnx`` package (``pip install "fastlstm[onnx]"``), imported only here.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional

import numpy as np

from . import convert
from .model import SequenceClassifier, write_atomic

__all__ = ["export", "load", "to_model_proto", "from_model_proto", "OnnxGraphError", "OPSET"]

OPSET = 14
IR_VERSION = 7
_PRODUCER = "fastlstm"
_META_KEY = "fastlstm"


class OnnxGraphError(ValueError):
    """The ONNX file is not a graph of the shape :func:`export` writes."""


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ImportError("fastlstm.onnx needs the onnx package: pip install 'fastlstm[onnx]'"
                          ) from None
    return onnx, helper, numpy_helper


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------

def to_model_proto(model: SequenceClassifier):
    """The ``onnx.ModelProto`` of ``model`` (see the module docstring for the graph)."""
    if not isinstance(model, SequenceClassifier):
        raise TypeError(f"model must be a fastlstm.SequenceClassifier, got "
                        f"{type(model).__name__}")
    cfg = model.config()
    unsupported = [k for k in ("proj_size", "layer_norm", "input_proj") if cfg.get(k)]
    if unsupported:  # ONNX's LSTM/GRU operators have no projection or layer norm
        raise ValueError(f"ONNX export supports plain LSTM/GRU stacks; this model uses "
                         f"{', '.join(unsupported)}")
    onnx, helper, numpy_helper = _onnx()
    cell, L, H = cfg["cell"], cfg["num_layers"], cfg["hidden_size"]
    D = 2 if cfg["bidirectional"] else 1
    lbr = bool(getattr(model.rnn, "linear_before_reset", True))
    params = model.parameters()
    f32 = np.float32
    inits: List[Any] = []
    nodes: List[Any] = []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    x = "x"
    norm = model.metadata.get("normalize")
    if norm:
        mean, std = float(norm["mean"]), float(norm["std"])
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ValueError(f"model.metadata['normalize'] must have finite mean and std > 0, "
                             f"got {norm!r}")
        nodes.append(helper.make_node("Sub", [x, const("norm_mean", np.array(mean, f32))],
                                      ["x_centered"], name="normalize_sub"))
        nodes.append(helper.make_node("Div", ["x_centered", const("norm_std", np.array(std, f32))],
                                      ["x_normalized"], name="normalize_div"))
        x = "x_normalized"
    nodes.append(helper.make_node("Transpose", [x], ["x_tbi"], perm=[1, 0, 2],
                                  name="to_time_major"))
    inp = "x_tbi"
    op = "LSTM" if cell == "lstm" else "GRU"
    for layer in range(L):
        dirs = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            p = {k: params[f"rnn.{k}{sfx}"] for k in
                 ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            if cell == "gru":
                p["linear_before_reset"] = lbr
            dirs.append(p)
        W, R, B = convert.to_onnx(dirs, cell=cell)
        last = layer == L - 1
        y, y_h = ("" if last else f"Y_l{layer}"), f"Y_h_l{layer}"
        attrs: Dict[str, Any] = dict(hidden_size=H,
                                     direction="bidirectional" if D == 2 else "forward")
        if cell == "gru":
            attrs["linear_before_reset"] = int(lbr)
        nodes.append(helper.make_node(
            op, [inp, const(f"W_l{layer}", W.astype(f32)), const(f"R_l{layer}", R.astype(f32)),
                 const(f"B_l{layer}", B.astype(f32))], [y, y_h], name=f"{op.lower()}_l{layer}",
            **attrs))
        if not last:
            nodes.append(helper.make_node("Transpose", [y], [f"Y_l{layer}_tbdh"],
                                          perm=[0, 2, 1, 3], name=f"merge_dirs_l{layer}_t"))
            nodes.append(helper.make_node(
                "Reshape", [f"Y_l{layer}_tbdh", const(f"shape_l{layer}",
                                                      np.array([0, 0, -1], np.int64))],
                [f"X_l{layer + 1}"], name=f"merge_dirs_l{layer}_r"))
            inp = f"X_l{layer + 1}"
    nodes.append(helper.make_node("Transpose", [f"Y_h_l{L - 1}"], ["h_bdh"], perm=[1, 0, 2],
                                  name="final_states_t"))
    nodes.append(helper.make_node("Reshape", ["h_bdh", const("shape_features",
                                                             np.array([0, -1], np.int64))],
                                  ["features"], name="final_states_r"))
    nodes.append(helper.make_node("Gemm", ["features",
                                           const("fc_weight", params["fc.weight"].astype(f32)),
                                           const("fc_bias", params["fc.bias"].astype(f32))],
                                  ["logits"], transB=1, name="fc"))
    T = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "fastlstm_SequenceClassifier",
        [helper.make_tensor_value_info("x", T, ["batch", "time", cfg["input_size"]])],
        [helper.make_tensor_value_info("logits", T, ["batch", cfg["num_classes"]])],
        initializer=inits)
    proto = helper.make_model(graph, producer_name=_PRODUCER,
                              opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    meta = {"config": cfg}
    if norm:
        meta["normalize"] = {"mean": float(norm["mean"]), "std": float(norm["std"])}
    helper.set_model_props(proto, {_META_KEY: json.dumps(meta)})
    proto.doc_string = ("fastlstm SequenceClassifier: input x (batch, time, input_size) float32"
                        + ("; normalised in the graph as (x - mean) / std" if norm else "")
                        + "; output logits (batch, num_classes)")
    onnx.checker.check_model(proto)
    return proto


def export(model: SequenceClassifier, path: "os.PathLike[str] | str") -> None:
    """Write ``model`` to the ONNX file ``path`` (atomically: the old file stays until the new
    one is complete)."""
    data = to_model_proto(model).SerializeToString()
    write_atomic(path, lambda f: f.write(data))


# ----------------------------------------------------------------------------------------------
# load
# ----------------------------------------------------------------------------------------------

def load(path: "os.PathLike[str] | str") -> SequenceClassifier:
    """Read a graph written by :func:`export` back into a float32 ``SequenceClassifier``
    (``metadata["normalize"]`` restored when the graph normalises its input). Any other graph
    is a one-line :class:`OnnxGraphError`; the file is never allowed to pull in external
    data."""
    onnx, _, _ = _onnx()
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        proto = onnx.load_from_string(data)
    except Exception as e:  # protobuf's DecodeError and friends
        raise OnnxGraphError(f"{path}: not an ONNX model ({type(e).__name__})") from None
    return from_model_proto(proto, where=path)


def _attrs(onnx, node) -> Dict[str, Any]:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def from_model_proto(proto, *, where: str = "ONNX model") -> SequenceClassifier:
    """:func:`load` for an ``onnx.ModelProto`` in memory."""
    onnx, helper, numpy_helper = _onnx()

    def bad(why: str) -> OnnxGraphError:
        return OnnxGraphError(f"{where}: {why} (fastlstm reads only graphs of the shape "
                              f"fastlstm.onnx.export writes)")

    g = proto.graph
    opsets = {o.domain: o.version for o in proto.opset_import}
    if opsets.get("", opsets.get("ai.onnx", 0)) < 7:
        raise bad("needs the default ONNX domain, opset >= 7")
    inits: Dict[str, np.ndarray] = {}
    for t in g.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL or t.external_data:
            raise bad(f"initializer {t.name!r} refers to external data")
        if t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                               onnx.TensorProto.INT64):
            raise bad(f"initializer {t.name!r} has an unsupported type")
        count = 1
        for n in t.dims:
            if n < 0:
                raise bad(f"initializer {t.name!r} has a negative dimension")
            count *= int(n)
        if count > 2**31:
            raise bad(f"initializer {t.name!r} is too large")
        try:
            inits[t.name] = numpy_helper.to_array(t)
        except Exception as e:
            raise bad(f"initializer {t.name!r} is corrupt ({type(e).__name__})") from None
        if inits[t.name].shape != tuple(t.dims):
            raise bad(f"initializer {t.name!r} does not match its dimensions")
    if len(g.input) - sum(i.name in inits for i in g.input) != 1 or len(g.output) != 1:
        raise bad("expected one input and one output")
    x_name = next(i.name for i in g.input if i.name not in inits)
    nodes = list(g.node)

    def take(op: str):
        if not nodes or nodes[0].op_type != op or nodes[0].domain not in ("", "ai.onnx"):
            got = nodes[0].op_type if nodes else "the end of the graph"
            raise bad(f"expected a {op} node, found {got}")
        return nodes.pop(0)

    def init(node, k: int) -> np.ndarray:
        if len(node.input) <= k or node.input[k] not in inits:
            raise bad(f"{node.op_type} node {node.name!r}: input {k} is not a constant")
        return inits[node.input[k]]

    def chained(node, src: str) -> None:
        if not node.input or node.input[0] != src:
            raise bad(f"{node.op_type} node {node.name!r} does not read {src!r}")

    cur = x_name
    normalize: Optional[Dict[str, float]] = None
    if nodes and nodes[0].op_type == "Sub":
        sub = take("Sub")
        chained(sub, cur)
        div = take("Div")
        chained(div, sub.output[0])
        mean, std = init(sub, 1), init(div, 1)
        if mean.size != 1 or std.size != 1 or not np.isfinite(mean).all() or not std > 0:
            raise bad("the input normalisation must be scalar (x - mean) / std, std > 0")
        normalize = {"mean": float(mean.reshape(())), "std": float(std.reshape(()))}
        cur = div.output[0]
    t = take("Transpose")
    chained(t, cur)
    if list(_attrs(onnx, t).get("perm", [])) != [1, 0, 2]:
        raise bad("the input must be transposed to (time, batch, input) first")
    cur = t.output[0]
    layers: List[List[Dict[str, Any]]] = []
    cell = None
    H = D = None
    gru_lbr = set()
    while nodes and nodes[0].op_type in ("LSTM", "GRU"):
        node = nodes.pop(0)
        chained(node, cur)
        this = "lstm" if node.op_type == "LSTM" else "gru"
        if cell not in (None, this):
            raise bad("mixes LSTM and GRU layers")
        cell = this
        a = _attrs(onnx, node)
        unsupported = {k for k in a if k not in ("hidden_size", "direction", "linear_before_reset",
                                                 "layout", "input_forget")}
        if unsupported:
            raise bad(f"{node.op_type} node {node.name!r} sets {sorted(unsupported)}")
        if a.get("layout", 0) != 0 or a.get("input_forget", 0) != 0:
            raise bad(f"{node.op_type} node {node.name!r}: layout/input_forget must be 0")
        direction = a.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        if direction not in ("forward", "bidirectional"):
            raise bad(f"{node.op_type} node {node.name!r}: direction {direction!r}")
        if len(node.input) > 4 and any(node.input[4:]):
            raise bad(f"{node.op_type} node {node.name!r} has sequence_lens, initial states "
                      f"or peepholes")
        lbr = int(a.get("linear_before_reset", 0))
        if cell == "gru":
            gru_lbr.add(lbr)
            if len(gru_lbr) > 1:
                raise bad("GRU layers with different linear_before_reset")
        W, R = init(node, 1), init(node, 2)
        Bias = init(node, 3) if len(node.input) > 3 and node.input[3] else None
        try:
            dirs = convert.from_onnx(W, R, Bias, cell=cell, linear_before_reset=lbr)
        except (ValueError, TypeError) as e:
            raise bad(f"{node.op_type} node {node.name!r}: {e}") from None
        d_here, h_here = len(dirs), dirs[0]["weight_hh"].shape[1]
        if (d_here == 2) != (direction == "bidirectional"):
            raise bad(f"{node.op_type} node {node.name!r}: W does not match direction")
        if a.get("hidden_size", h_here) != h_here:
            raise bad(f"{node.op_type} node {node.name!r}: hidden_size does not match R")
        if H not in (None, h_here) or D not in (None, d_here):
            raise bad("layers differ in hidden size or direction")
        if layers and dirs[0]["weight_ih"].shape[1] != h_here * d_here:
            raise bad(f"{node.op_type} node {node.name!r}: input size is not dirs*hidden")
        H, D = h_here, d_here
        layers.append(dirs)
        nxt = nodes[0] if nodes else None
        if nxt is None:
            raise bad("the graph ends after a recurrent node")
        y = node.output[0] if node.output else ""
        y_h = node.output[1] if len(node.output) > 1 else ""
        if nxt.op_type == "Transpose" and y and nxt.input[0] == y:
            t = take("Transpose")
            if list(_attrs(onnx, t).get("perm", [])) != [0, 2, 1, 3]:
                raise bad("Y must be transposed with perm [0, 2, 1, 3] between layers")
            r = take("Reshape")
            chained(r, t.output[0])
            if list(init(r, 1)) != [0, 0, -1]:
                raise bad("Y must be reshaped to (time, batch, -1) between layers")
            cur = r.output[0]
        else:
            t = take("Transpose")
            chained(t, y_h)
            if list(_attrs(onnx, t).get("perm", [])) != [1, 0, 2]:
                raise bad("Y_h must be transposed with perm [1, 0, 2]")
            r = take("Reshape")
            chained(r, t.output[0])
            if list(init(r, 1)) != [0, -1]:
                raise bad("Y_h must be reshaped to (batch, -1)")
            cur = r.output[0]
            break
    if not layers:
        raise bad("no LSTM or GRU node")
    fc = take("Gemm")
    chained(fc, cur)
    a = _attrs(onnx, fc)
    if a.get("transB", 0) != 1 or a.get("transA", 0) != 0 or a.get("alpha", 1.0) != 1.0 \
            or a.get("beta", 1.0) != 1.0:
        raise bad("the head must be Gemm(features, weight, bias, transB=1)")
    weight, bias = init(fc, 1), init(fc, 2)
    if nodes:
        raise bad(f"unexpected {nodes[0].op_type} node after the head")
    if fc.output[0] != g.output[0].name:
        raise bad("the head's output is not the graph's output")
    I = layers[0][0]["weight_ih"].shape[1]
    if weight.ndim != 2 or weight.shape[1] != H * D or bias.shape != (weight.shape[0],) \
            or weight.shape[0] < 1:
        raise bad(f"the head's weight must be (classes, {H * D}) and its bias (classes,)")
    variant = {"linear_before_reset": bool(gru_lbr.pop())} if cell == "gru" else {}
    model = SequenceClassifier(I, H, weight.shape[0], cell=cell, num_layers=len(layers),
                               bidirectional=D == 2, dtype=np.float32, seed=0, **variant)
    state = {"rnn." + k: v for k, v in convert.state_dict(layers).items()}
    state["fc.weight"], state["fc.bias"] = weight, bias
    model.load_state_dict(state)
    if normalize is not None:
        model.metadata["normalize"] = _exact_normalize(proto, normalize)
    return model


def _exact_normalize(proto, normalize: Dict[str, float]) -> Dict[str, float]:
    """The double-precision mean/std export recorded, when they round to the graph's float32
    constants (which are what the graph computes with); else the constants."""
    for prop in proto.metadata_props:
        if prop.key == _META_KEY:
            try:
                rec = json.loads(prop.value).get("normalize") or {}
                exact = {"mean": float(rec["mean"]), "std": float(rec["std"])}
            except (ValueError, KeyError, TypeError, AttributeError):
                return normalize
            if all(np.float32(exact[k]) == np.float32(normalize[k]) for k in ("mean", "std")):
                return exact
    return normalize
