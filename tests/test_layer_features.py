"""The layers' model features: dropout between layers, recurrent dropout, layer norm,
projection (proj_size), forget/gate bias initialisation.

Exactness is checked by central finite differences of a training forward whose masks are held
fixed (the layer's generator is rewound before every evaluation); PyTorch parity for
``proj_size`` with a real ``torch.nn.LSTM`` (skipped without torch)."""
from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from fastlstm import GRU, LSTM

T, B, I, H = 5, 3, 4, 6

FEATURES = {
    "dropout": dict(dropout=0.4),
    "recurrent_dropout": dict(recurrent_dropout=0.3),
    "layer_norm": dict(layer_norm=True),
    "proj": dict(proj_size=4),
    "all": dict(dropout=0.3, recurrent_dropout=0.3, layer_norm=True, proj_size=3),
}


def make(cls, feats, seed=0, layers=2, bidirectional=True, dtype=np.float64, **kw):
    if cls is GRU:
        feats = {k: v for k, v in feats.items() if k != "proj_size"}
    return cls(I, H, layers, bidirectional=bidirectional, dtype=dtype, seed=seed, **feats, **kw)


def inputs(dtype=np.float64, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((T, B, I)).astype(dtype)


def perturb_params(layer, seed=5):
    """Layer-norm gains start at 1 and biases at 0; move them so their gradients are generic."""
    rng = np.random.default_rng(seed)
    for name, p in layer.parameters().items():
        if name.startswith("ln_"):
            p += 0.3 * rng.standard_normal(p.shape)


def loss_and_grads(layer, x, upstream, rng_state):
    layer._rng.bit_generator.state = rng_state
    out, _ = layer.forward(x)
    loss = float(np.sum(out * upstream))
    layer.zero_grad()
    gx = layer.backward(upstream)
    return loss, gx, {k: v.copy() for k, v in layer.grads.items()}


def loss_only(layer, x, upstream, rng_state):
    layer._rng.bit_generator.state = rng_state
    out, _ = layer.forward(x)
    return float(np.sum(out * upstream))


@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("feature", list(FEATURES))
def test_gradients_are_exact_for_the_drawn_masks(cls, feature):
    layer = make(cls, FEATURES[feature])
    perturb_params(layer)
    x = inputs()
    state = layer._rng.bit_generator.state
    out, _ = layer.forward(x)
    upstream = np.random.default_rng(2).standard_normal(out.shape)
    _, gx, grads = loss_and_grads(layer, x, upstream, state)
    eps = 1e-6
    rng = np.random.default_rng(3)
    for name, p in layer.parameters().items():
        for idx in [tuple(rng.integers(0, n) for n in p.shape) for _ in range(3)]:
            old = p[idx]
            p[idx] = old + eps
            lp = loss_only(layer, x, upstream, state)
            p[idx] = old - eps
            lm = loss_only(layer, x, upstream, state)
            p[idx] = old
            fd = (lp - lm) / (2 * eps)
            assert grads[name][idx] == pytest.approx(fd, rel=1e-5, abs=1e-7), (name, idx)
    for idx in [(0, 0, 0), (T - 1, B - 1, I - 1), (2, 1, 3)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        fd = (loss_only(layer, xp, upstream, state) - loss_only(layer, xm, upstream, state)) / (2 * eps)
        assert gx[idx] == pytest.approx(fd, rel=1e-5, abs=1e-7), ("x", idx)


@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("feature", ["dropout", "recurrent_dropout"])
def test_inference_applies_no_dropout(cls, feature):
    """training=False gives exactly the result of the same layer built without dropout (the
    initialisation draws the same numbers whatever the dropout)."""
    with_drop, without = make(cls, FEATURES[feature]), make(cls, {})
    for k in without.parameters():
        np.testing.assert_array_equal(with_drop.parameters()[k], without.parameters()[k])
    x = inputs()
    a, _ = with_drop.forward(x, training=False)
    b, _ = without.forward(x, training=False)
    np.testing.assert_array_equal(a, b)
    c, _ = with_drop.forward(x, training=True)
    assert not np.allclose(a, c), "training with dropout gave the inference result"


@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("feature", ["dropout", "recurrent_dropout", "all"])
def test_seeded_masks_reproduce(cls, feature):
    x = inputs()
    runs = []
    for seed in (7, 7, 8):
        layer = make(cls, FEATURES[feature], seed=seed)
        outs = [layer.forward(x)[0] for _ in range(2)]   # the second call draws new masks
        assert not np.array_equal(outs[0], outs[1])
        runs.append(outs)
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(runs[0][0], runs[2][0])


def test_dropout_mask_is_inverted_and_between_layers_only():
    """One layer: dropout has nothing to act on (PyTorch's semantics: not on the last
    layer's output). Masks are 0 or 1/(1-p), kept with probability 1-p."""
    x = inputs()
    with pytest.warns(UserWarning, match="num_layers=1"):
        one = make(LSTM, {"dropout": 0.5}, layers=1)
    a, _ = one.forward(x)
    b, _ = one.forward(x, training=False)
    np.testing.assert_array_equal(a, b)
    layer = make(LSTM, {"dropout": 0.25})
    m = layer._keep_mask(0.25, (200, 300))
    assert set(np.unique(m)) == {0.0, 1 / 0.75}
    assert abs(np.mean(m > 0) - 0.75) < 0.01


def test_forget_and_gate_bias():
    plain, fb = make(LSTM, {}, seed=3), make(LSTM, {}, seed=3, forget_bias=1.0)
    for k, p in plain.parameters().items():
        d = fb.parameters()[k] - p
        if k.startswith("bias_ih"):
            np.testing.assert_allclose(d[H:2 * H], 1.0)
            np.testing.assert_array_equal(np.delete(d, np.s_[H:2 * H]), 0)
        else:
            np.testing.assert_array_equal(d, 0)
    g = GRU(I, H, linear_before_reset=False, gate_bias=1.0, seed=3)
    g0 = GRU(I, H, linear_before_reset=False, seed=3)
    np.testing.assert_allclose(g.parameters()["bias_ih_l0"][:2 * H] -
                               g0.parameters()["bias_ih_l0"][:2 * H], 1.0)


@pytest.mark.parametrize("kw, match", [
    (dict(dropout=1.0), "dropout"), (dict(dropout=-0.1), "dropout"),
    (dict(recurrent_dropout=1.5), "recurrent_dropout"), (dict(proj_size=-1), "proj_size"),
    (dict(forget_bias=float("nan")), "forget_bias")])
def test_bad_feature_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        LSTM(I, H, **kw)


def test_gru_layer_norm_needs_linear_before_reset():
    with pytest.raises(ValueError, match="linear_before_reset"):
        GRU(I, H, layer_norm=True, linear_before_reset=False)


def test_proj_state_shapes_and_names():
    layer = LSTM(I, H, 2, bidirectional=True, proj_size=4, layer_norm=True, seed=0)
    shapes = {k: v.shape for k, v in layer.parameters().items()}
    assert shapes["weight_hh_l1_reverse"] == (4 * H, 4)
    assert shapes["weight_ih_l1"] == (4 * H, 8)
    assert shapes["weight_hr_l0"] == (4, H)
    assert shapes["ln_gain_c_l1_reverse"] == (H,)
    out, (h_n, c_n) = layer.forward(inputs(np.float32), training=False)
    assert out.shape == (T, B, 8) and h_n.shape == (4, B, 4) and c_n.shape == (4, B, H)
    with pytest.raises(ValueError, match="h0"):
        layer.forward(inputs(np.float32), np.zeros((4, B, H)))


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_layer_norm_is_invariant_to_weight_scale(cls):
    """Up to eps = 1e-5 against the variance of each normalised row (~0.3 for the recurrent
    product at H = 6, so ~1e-5 relative): weights of unit scale, not the small initialisation,
    keep those variances far above eps. Without layer norm the outputs move by ~0.1."""
    x = inputs()
    a = make(cls, FEATURES["layer_norm"])
    perturb_params(a)
    rng = np.random.default_rng(6)
    for name, p in a.parameters().items():
        if name.startswith("weight"):
            p[...] = rng.standard_normal(p.shape)
    ref, _ = a.forward(x, training=False)
    for name, p in a.parameters().items():
        if name.startswith(("weight_ih", "weight_hh")):
            p *= 3.0
    out, _ = a.forward(x, training=False)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    b = make(cls, {})   # without layer norm the same scaling does change the output
    for name, p in b.parameters().items():
        if name.startswith("weight"):
            p *= 3.0
    assert not np.allclose(b.forward(x, training=False)[0],
                           make(cls, {}).forward(x, training=False)[0], atol=1e-2)


# ------------------------------------------------------------------------- PyTorch parity

@pytest.mark.parametrize("bidirectional", [False, True])
def test_torch_proj_size_parity(bidirectional):
    torch = pytest.importorskip("torch")
    P, L = 4, 2
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H, L, proj_size=P, bidirectional=bidirectional,
                        dtype=torch.float64)
    layer = LSTM(I, H, L, proj_size=P, bidirectional=bidirectional, dtype=np.float64)
    layer.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    D = 2 if bidirectional else 1
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((L * D, B, P)), rng.standard_normal((L * D, B, H))
    gy, gh, gc = (rng.standard_normal(s) for s in ((T, B, D * P), (L * D, B, P), (L * D, B, H)))

    xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    yt, (hnt, cnt) = ref(xt, (h0t, c0t))
    ((yt * torch.tensor(gy)).sum() + (hnt * torch.tensor(gh)).sum()
     + (cnt * torch.tensor(gc)).sum()).backward()

    y, (h_n, c_n) = layer.forward(x, h0, c0)
    gx = layer.backward(gy, gh, gc)
    for a, b in ((y, yt), (h_n, hnt), (c_n, cnt), (gx, xt.grad), (layer.grad_h0, h0t.grad),
                 (layer.grad_c0, c0t.grad)):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-12)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(layer.grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)
