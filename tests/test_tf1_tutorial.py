"""Worked example: the TensorFlow 1 tutorials' MNIST model, moved into fastlstm.

The tutorials this project grew from classify MNIST row by row with

    x = tf.unstack(images, 28, 1)                          # 28 steps of 28 pixels
    cell = tf.nn.rnn_cell.BasicLSTMCell(128, forget_bias=1.0)
    outputs, states = tf.nn.static_rnn(cell, x, dtype=tf.float32)   # or dynamic_rnn
    logits = tf.matmul(outputs[-1], weights["out"]) + biases["out"]  # (128, 10), (10,)

Its trained variables are ``rnn/basic_lstm_cell/kernel`` (156, 512) over [x, h] with gates
i, j, f, o, ``rnn/basic_lstm_cell/bias`` (512,), and the output layer's (128, 10) matrix and
(10,) bias. The forget bias of 1.0 is not a variable: BasicLSTMCell adds it at every step.
From a checkpoint (TensorFlow is needed only for reading it)::

    import tensorflow as tf
    r = tf.train.load_checkpoint("model.ckpt")          # tf.train.list_variables shows names
    kernel, bias = (r.get_tensor("rnn/basic_lstm_cell/" + n) for n in ("kernel", "bias"))
    out_w, out_b = r.get_tensor("Variable"), r.get_tensor("Variable_1")   # the tutorial's names

and then :func:`tf1_to_fastlstm` below. Here the weights are random (TensorFlow is not a
dependency); the TF1 forward pass is written out in NumPy from ``BasicLSTMCell.call``
(tensorflow/python/ops/rnn_cell_impl.py), and ``test_real_tensorflow_checkpoint`` repeats the
check against TensorFlow itself when it is installed. Run as a script, this file prints the
comparison: ``python tests/test_tf1_tutorial.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from fastlstm import convert

STEPS, INPUTS, HIDDEN, CLASSES = 28, 28, 128, 10


def tf1_weights(seed: int = 0):
    """Weights shaped like the tutorial's (random, as if trained)."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 0.08, (INPUTS + HIDDEN, 4 * HIDDEN)).astype(np.float32)
    bias = rng.normal(0, 0.1, 4 * HIDDEN).astype(np.float32)
    out_w = rng.normal(0, 0.3, (HIDDEN, CLASSES)).astype(np.float32)
    out_b = rng.normal(0, 0.1, CLASSES).astype(np.float32)
    return kernel, bias, out_w, out_b


def tf1_logits(images, kernel, bias, out_w, out_b, forget_bias=1.0):
    """The tutorial's graph in NumPy (float64): static_rnn over the rows, then the output
    layer on the last output."""
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    B = images.shape[0]
    h = np.zeros((B, HIDDEN))
    c = np.zeros((B, HIDDEN))
    for t in range(images.shape[1]):
        i, j, f, o = np.split(np.concatenate([images[:, t], h], 1) @ kernel + bias, 4, axis=1)
        c = c * sig(f + forget_bias) + sig(i) * np.tanh(j)
        h = np.tanh(c) * sig(o)
    return h @ out_w + out_b


def tf1_to_fastlstm(kernel, bias, out_w, out_b, forget_bias=1.0) -> fastlstm.SequenceClassifier:
    """The tutorial's variables as a fastlstm SequenceClassifier (same logits)."""
    p = convert.from_tf1_lstm(kernel, bias, input_size=INPUTS, forget_bias=forget_bias)
    model = fastlstm.SequenceClassifier(INPUTS, HIDDEN, CLASSES, cell="lstm")
    state = {"rnn." + k: v for k, v in convert.state_dict([p]).items()}
    state["fc.weight"] = np.asarray(out_w).T        # TF: h @ W (128, 10); fastlstm: (10, 128)
    state["fc.bias"] = np.asarray(out_b)
    model.load_state_dict(state)
    return model


def images(n=64, seed=1):
    """MNIST-like inputs in [0, 1] (the tutorial feeds mnist.train.next_batch's floats)."""
    return np.random.default_rng(seed).random((n, STEPS, INPUTS), dtype=np.float32)


def test_tutorial_model_same_logits():
    w = tf1_weights()
    x = images()
    want = tf1_logits(x.astype(np.float64), *(a.astype(np.float64) for a in w))
    model = tf1_to_fastlstm(*w)
    got = model.forward(x, training=False)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert (np.argmax(got, 1) == np.argmax(want, 1)).all()


def test_forgetting_the_forget_bias_changes_the_model():
    """Why from_tf1_lstm asks for forget_bias: without it the converted model is different."""
    w = tf1_weights()
    x = images(16)
    want = tf1_logits(x.astype(np.float64), *(a.astype(np.float64) for a in w))
    wrong = tf1_to_fastlstm(*w, forget_bias=0.0).forward(x, training=False)
    assert np.abs(wrong - want).max() > 1e-2


def test_real_tensorflow_checkpoint(tmp_path):
    """With TensorFlow installed: a real BasicLSTMCell under static_rnn, its checkpoint read
    with tf.train.load_checkpoint, converted, gives TensorFlow's logits."""
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    w = tf1_weights(2)
    x = images(8, seed=3)
    graph = tf.Graph()
    with graph.as_default():
        inp = v1.placeholder(tf.float32, (None, STEPS, INPUTS))
        cell = v1.nn.rnn_cell.BasicLSTMCell(HIDDEN, forget_bias=1.0)
        outputs, _ = v1.nn.static_rnn(cell, tf.unstack(inp, STEPS, 1), dtype=tf.float32)
        out_w = tf.Variable(w[2], name="out_w")
        out_b = tf.Variable(w[3], name="out_b")
        logits = tf.matmul(outputs[-1], out_w) + out_b
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            by_name = {v.name: v for v in v1.global_variables()}
            by_name["rnn/basic_lstm_cell/kernel:0"].load(w[0], sess)
            by_name["rnn/basic_lstm_cell/bias:0"].load(w[1], sess)
            want = sess.run(logits, {inp: x})
            path = v1.train.Saver().save(sess, str(tmp_path / "model.ckpt"))
    r = tf.train.load_checkpoint(path)
    kernel, bias = (r.get_tensor("rnn/basic_lstm_cell/" + n) for n in ("kernel", "bias"))
    model = tf1_to_fastlstm(kernel, bias, r.get_tensor("out_w"), r.get_tensor("out_b"))
    np.testing.assert_allclose(model.forward(x, training=False), want, rtol=1e-4, atol=1e-4)


if __name__ == "__main__":
    w = tf1_weights()
    x = images()
    want = tf1_logits(x.astype(np.float64), *(a.astype(np.float64) for a in w))
    got = tf1_to_fastlstm(*w).forward(x, training=False)
    print(f"TF1 BasicLSTMCell({HIDDEN}, forget_bias=1.0) tutorial model, {len(x)} images")
    print(f"max |logit difference| fastlstm vs TF1 equations: {np.abs(got - want).max():.2e}")
    print(f"same predicted class for {int((got.argmax(1) == want.argmax(1)).sum())}/{len(x)}")
    wrong = tf1_to_fastlstm(*w, forget_bias=0.0).forward(x, training=False)
    print(f"without the forget bias: max difference {np.abs(wrong - want).max():.2e}, same class "
          f"for {int((wrong.argmax(1) == want.argmax(1)).sum())}/{len(x)}")
