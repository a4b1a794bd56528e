"""Layers (LSTM, GRU, Dense) and the loss: gradients by finite differences, parity with
PyTorch, the bidirectional reversal, one kernel call per layer and direction, state dicts."""

from __future__ import annotations

import numpy as np
import pytest
from testkit import FD_EPS, assert_close, assert_close_fd

import fastlstm
from fastlstm.layers import GRU, LSTM, Dense
from fastlstm.loss import log_softmax, softmax_cross_entropy

CELLS = {"lstm": LSTM, "gru": GRU}


def _states(cell, result):
    """(output, [h_n] or [h_n, c_n]) from a layer's forward result."""
    out, st = result
    return out, (list(st) if cell == "lstm" else [st])


def _x(rng, layer, T, B, dtype=np.float64):
    shape = (B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size)
    return rng.uniform(-1, 1, shape).astype(dtype)


def _upstream(rng, cell, out, states):
    return [rng.standard_normal(out.shape)] + [rng.standard_normal(s.shape) for s in states]


def _loss(layer, cell, x, lengths, ups):
    out, states = _states(cell, layer.forward(x, lengths=lengths))
    return sum(float(np.sum(u * a)) for u, a in zip(ups, [out] + states))


# ----------------------------------------------------------------------------------------------
# Recurrent layers
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_recurrent_gradients_match_finite_differences(cell, batch_first, rng):
    """2 layers x 2 directions with ragged lengths: every parameter and x, along a random
    direction each (central differences on the float64 layer)."""
    T, B, I, H = 4, 3, 3, 4
    layer = CELLS[cell](I, H, 2, bidirectional=True, batch_first=batch_first,
                        dtype=np.float64, seed=1)
    x = _x(rng, layer, T, B)
    lengths = np.array([4, 1, 3])
    out, states = _states(cell, layer.forward(x, lengths=lengths))
    ups = _upstream(rng, cell, out, states)
    layer.zero_grad()
    gx = layer.backward(*ups)
    params = layer.parameters()
    for name, p in list(params.items()) + [("x", x)]:
        u = rng.standard_normal(p.shape)
        analytic = float(np.sum((gx if name == "x" else layer.grads[name]) * u))
        orig = p.copy()
        p[...] = orig + FD_EPS * u
        lp = _loss(layer, cell, x, lengths, ups)
        p[...] = orig - FD_EPS * u
        lm = _loss(layer, cell, x, lengths, ups)
        p[...] = orig
        assert_close_fd(analytic, (lp - lm) / (2 * FD_EPS), f"{cell} {name}")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_reverse_runs_each_sequence_within_its_length(cell, rng):
    """The reverse half of out[t, b] equals a fresh run over the reversed x[:len_b, b] alone."""
    T, B, I, H = 5, 3, 2, 3
    layer = CELLS[cell](I, H, bidirectional=True, dtype=np.float64, seed=2)
    x = _x(rng, layer, T, B)
    lengths = np.array([2, 5, 3])
    out, states = _states(cell, layer.forward(x, lengths=lengths))
    single = CELLS[cell](I, H, dtype=np.float64)
    single.load_state_dict({k.replace("_reverse", ""): v for k, v in layer.parameters().items()
                            if k.endswith("_reverse")})
    for b, n in enumerate(lengths):
        rev_out, rev_states = _states(cell, single.forward(x[:n, b:b + 1][::-1]))
        assert_close(out[:n, b, H:], rev_out[::-1, 0], np.float64, f"reverse output b={b}")
        np.testing.assert_array_equal(out[n:, b], 0)
        assert_close(states[0][1, b], rev_states[0][0, 0], np.float64, f"reverse h_n b={b}")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_one_kernel_call_per_layer_and_direction(cell, rng, monkeypatch):
    """The time loop runs in C: a forward is exactly L*D kernel calls, a backward L*D
    backward calls, whatever T."""
    kernel = getattr(fastlstm, cell)
    calls = {"forward": 0, "backward": 0}

    class Counted:
        def __init__(self, result):
            self._r = result

        def __getattr__(self, name):
            return getattr(self._r, name)

        def backward(self, *args, **kwargs):
            calls["backward"] += 1
            return self._r.backward(*args, **kwargs)

    def counting(*args, **kwargs):
        calls["forward"] += 1
        return Counted(kernel(*args, **kwargs))

    monkeypatch.setattr(fastlstm, cell, counting)
    layer = CELLS[cell](3, 4, 3, bidirectional=True, seed=0)
    out, _ = layer.forward(_x(rng, layer, 11, 2, np.float32))
    layer.backward(np.ones_like(out))
    assert calls == {"forward": 6, "backward": 6}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_float32_layer_matches_float64(cell, rng):
    T, B, I, H = 6, 4, 5, 8
    l64 = CELLS[cell](I, H, 2, bidirectional=True, dtype=np.float64, seed=3)
    l32 = CELLS[cell](I, H, 2, bidirectional=True, dtype=np.float32, seed=3)
    l32.load_state_dict(l64.parameters())
    x = _x(rng, l64, T, B)
    out64, st64 = _states(cell, l64.forward(x))
    out32, st32 = _states(cell, l32.forward(x.astype(np.float32)))
    assert_close(out32, out64, np.float32, "output")
    for a, b in zip(st32, st64):
        assert_close(a, b, np.float32, "state")
    ups = _upstream(rng, cell, out64, st64)
    g64 = l64.backward(*ups)
    g32 = l32.backward(*[u.astype(np.float32) for u in ups])
    assert_close(g32, g64, np.float32, "grad x")
    for k in l64.grads:
        assert_close(l32.grads[k], l64.grads[k], np.float32, k)


def test_backward_accumulates_until_zero_grad(rng):
    layer = LSTM(3, 4, seed=0, dtype=np.float64)
    x = _x(rng, layer, 5, 2)
    out, _ = layer.forward(x)
    g = rng.standard_normal(out.shape)
    layer.backward(g)
    once = {k: v.copy() for k, v in layer.grads.items()}
    layer.backward(g)
    for k, v in layer.grads.items():
        np.testing.assert_allclose(v, 2 * once[k], rtol=1e-12, atol=1e-15)
    layer.zero_grad()
    assert all(not v.any() for v in layer.grads.values())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_initial_state_and_its_gradient(cell, rng):
    """h0 (and c0) change the result; grad_h0 matches finite differences."""
    T, B, I, H = 3, 2, 2, 3
    layer = CELLS[cell](I, H, 2, dtype=np.float64, seed=4)
    x = _x(rng, layer, T, B)
    h0 = rng.uniform(-0.5, 0.5, (2, B, H))
    extra = (rng.uniform(-0.5, 0.5, (2, B, H)),) if cell == "lstm" else ()
    out, states = _states(cell, layer.forward(x, h0, *extra))
    out_zero, _ = _states(cell, layer.forward(x))
    assert not np.allclose(out, out_zero)
    out, states = _states(cell, layer.forward(x, h0, *extra))
    ups = _upstream(rng, cell, out, states)
    layer.backward(*ups)
    u = rng.standard_normal(h0.shape)

    def loss(h):
        o, s = _states(cell, layer.forward(x, h, *extra))
        return sum(float(np.sum(a * b)) for a, b in zip(ups, [o] + s))

    fd = (loss(h0 + FD_EPS * u) - loss(h0 - FD_EPS * u)) / (2 * FD_EPS)
    assert_close_fd(float(np.sum(layer.grad_h0 * u)), fd, "grad_h0")


def test_parameter_names_shapes_and_init():
    layer = LSTM(28, 16, 2, bidirectional=True, seed=7)
    params = layer.parameters()
    assert list(params) == [f"{w}_l{k}{s}" for k in range(2) for s in ("", "_reverse")
                            for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert params["weight_ih_l0"].shape == (64, 28)
    assert params["weight_ih_l1_reverse"].shape == (64, 32)
    assert params["weight_hh_l1"].shape == (64, 16)
    assert params["bias_hh_l0"].shape == (64,)
    assert all(p.dtype == np.float32 for p in params.values())
    bound = 1 / np.sqrt(16)
    allp = np.concatenate([p.ravel() for p in params.values()])
    assert np.abs(allp).max() <= bound and np.abs(allp).max() > 0.95 * bound
    assert abs(allp.mean()) < 0.01
    again = LSTM(28, 16, 2, bidirectional=True, seed=7).parameters()
    assert all(np.array_equal(params[k], again[k]) for k in params)
    other = LSTM(28, 16, 2, bidirectional=True, seed=8).parameters()
    assert not np.array_equal(params["weight_hh_l0"], other["weight_hh_l0"])
    assert GRU(5, 6).parameters()["weight_hh_l0"].shape == (18, 6)


def test_load_state_dict_checks_before_changing_anything():
    layer = GRU(3, 4, seed=0)
    before = layer.state_dict()
    bad = {k: np.zeros_like(v) for k, v in before.items()}
    bad["weight_hh_l0"] = np.zeros((12, 5))
    with pytest.raises(ValueError, match=r"weight_hh_l0 must have shape \(12, 4\), got \(12, 5\)"):
        layer.load_state_dict(bad)
    with pytest.raises(ValueError, match="missing.*bias_hh_l0"):
        layer.load_state_dict({k: v for k, v in before.items() if k != "bias_hh_l0"})
    with pytest.raises(ValueError, match="unexpected.*weight_ih_l1"):
        layer.load_state_dict({**before, "weight_ih_l1": np.zeros((12, 4))})
    for k, v in layer.parameters().items():
        np.testing.assert_array_equal(v, before[k])


def test_input_errors_name_the_argument(rng):
    layer = LSTM(3, 4, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, 3\)"):
        layer.forward(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 2, 4\)"):
        layer.forward(np.zeros((5, 2, 3), np.float32), np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"lengths must be in 1..T = 1..5"):
        layer.forward(np.zeros((5, 2, 3), np.float32), lengths=[6, 1])
    with pytest.raises(RuntimeError, match="forward with training=True"):
        LSTM(3, 4).backward()
    with pytest.raises(TypeError, match="float32 or float64"):
        GRU(3, 4, dtype=np.int32)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_matches_torch_packed_bidirectional_stack(cell, batch_first, rng):
    """A converted torch state_dict loads directly and gives torch's outputs and gradients."""
    torch = pytest.importorskip("torch")
    T, B, I, H = 6, 4, 5, 7
    layer = CELLS[cell](I, H, 2, bidirectional=True, batch_first=batch_first,
                        dtype=np.float64, seed=0)
    tmod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        I, H, 2, bidirectional=True, batch_first=batch_first).double()
    layer.load_state_dict({k: v.detach().numpy() for k, v in tmod.state_dict().items()})
    x = _x(rng, layer, T, B)
    lengths = np.array([6, 2, 1, 5])
    xt = torch.tensor(x, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths),
                                                     batch_first=batch_first,
                                                     enforce_sorted=False)
    out_p, st_t = tmod(packed)
    out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, batch_first=batch_first,
                                                      total_length=T)
    st_t = list(st_t) if cell == "lstm" else [st_t]
    out, states = _states(cell, layer.forward(x, lengths=lengths))
    assert_close(out, out_t.detach().numpy(), np.float64, "output")
    for a, b in zip(states, st_t):
        assert_close(a, b.detach().numpy(), np.float64, "state")
    ups = _upstream(rng, cell, out, states)
    torch.autograd.backward([out_t] + st_t, [torch.tensor(u) for u in ups])
    gx = layer.backward(*ups)
    assert_close(gx, xt.grad.numpy(), np.float64, "grad x")
    for name, p in tmod.named_parameters():
        assert_close(layer.grads[name], p.grad.numpy(), np.float64, name)


# ----------------------------------------------------------------------------------------------
# Dense and the loss
# ----------------------------------------------------------------------------------------------

def test_dense_forward_backward(rng):
    d = Dense(5, 3, dtype=np.float64, seed=0)
    assert d.parameters()["weight"].shape == (3, 5) and d.parameters()["bias"].shape == (3,)
    assert np.abs(d.parameters()["weight"]).max() <= 1 / np.sqrt(5)
    x = rng.standard_normal((4, 5))
    W, b = d.parameters()["weight"], d.parameters()["bias"]
    np.testing.assert_allclose(d.forward(x), x @ W.T + b, rtol=1e-14)
    gy = rng.standard_normal((4, 3))
    gx = d.backward(gy)
    np.testing.assert_allclose(gx, gy @ W, rtol=1e-14)
    for name, p in [("weight", W), ("bias", b), ("x", x)]:
        u = rng.standard_normal(p.shape)
        orig = p.copy()
        p[...] = orig + FD_EPS * u
        lp = float(np.sum(gy * d.forward(x)))
        p[...] = orig - FD_EPS * u
        lm = float(np.sum(gy * d.forward(x)))
        p[...] = orig
        analytic = float(np.sum((gx if name == "x" else d.grads[name]) * u))
        assert_close_fd(analytic, (lp - lm) / (2 * FD_EPS), f"dense {name}")


def test_softmax_cross_entropy_value_and_gradient(rng):
    logits = rng.standard_normal((6, 4))
    labels = np.array([0, 3, 1, 1, 2, 3])
    loss, grad = softmax_cross_entropy(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(6), labels])), rel=1e-12)
    onehot = np.eye(4)[labels]
    np.testing.assert_allclose(grad, (p - onehot) / 6, rtol=1e-12, atol=1e-15)
    u = rng.standard_normal(logits.shape)
    fd = (softmax_cross_entropy(logits + FD_EPS * u, labels)[0]
          - softmax_cross_entropy(logits - FD_EPS * u, labels)[0]) / (2 * FD_EPS)
    assert_close_fd(float(np.sum(grad * u)), fd, "loss grad")


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 3e4, 3e4]], dtype=np.float32)
    loss, grad = softmax_cross_entropy(logits, np.array([0, 1]))
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(np.log(2) / 2, rel=1e-6)
    assert grad.dtype == np.float32
    np.testing.assert_allclose(log_softmax(logits)[1], [-3e4 - np.log(2), -np.log(2), -np.log(2)],
                               rtol=1e-6)


def test_softmax_cross_entropy_errors():
    with pytest.raises(ValueError, match=r"labels must be in 0..2"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2]))


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_inference_forward_matches_training_and_forbids_backward(cls, rng):
    """training=False runs the inference kernels: the same outputs, nothing kept for
    backward, and a backward after it raises instead of using a stale forward."""
    layer = cls(3, 5, 2, bidirectional=True, seed=1)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    out_t, states_t = layer.forward(x)
    out_i, states_i = layer.forward(x, training=False)
    np.testing.assert_array_equal(out_i, out_t)
    as_list = (lambda s: [s]) if cls is GRU else list    # GRU: h_n; LSTM: (h_n, c_n)
    for a, b in zip(as_list(states_i), as_list(states_t)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(RuntimeError, match="forward with training=True"):
        layer.backward(np.ones_like(out_t))
