"""Adam and SGD against hand-computed steps (and torch.optim), gradient clipping, schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastlstm.optim import (SGD, Adam, ConstantSchedule, CosineSchedule, clip_grad_norm,
                            make_schedule)


def test_adam_hand_computed_steps():
    """p = [1, -2], gradients g1 = [0.5, -1], g2 = [-0.5, 2], lr 0.1, betas (0.9, 0.999)."""
    p = np.array([1.0, -2.0])
    opt = Adam({"p": p}, lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    opt.step({"p": np.array([0.5, -1.0])})
    # m = 0.1 g, v = 0.001 g^2; m_hat = g, v_hat = g^2: the first step is lr * sign(g).
    p1 = [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 1 / (1 + 1e-8)]
    np.testing.assert_allclose(p, p1, rtol=1e-15)
    opt.step({"p": np.array([-0.5, 2.0])})
    # Component 0: m = 0.9*0.05 - 0.05 = -0.005, v = 0.999*0.00025 + 0.00025 = 0.00049975
    m_hat, v_hat = -0.005 / (1 - 0.81), 0.00049975 / (1 - 0.998001)
    expected0 = p1[0] - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8)
    # Component 1: m = 0.9*(-0.1) + 0.2 = 0.11, v = 0.999*0.001 + 0.004 = 0.004999
    m_hat1, v_hat1 = 0.11 / 0.19, 0.004999 / 0.001999
    expected1 = p1[1] - 0.1 * m_hat1 / (math.sqrt(v_hat1) + 1e-8)
    np.testing.assert_allclose(p, [expected0, expected1], rtol=1e-12)
    assert expected0 == pytest.approx(0.9 + 0.1 * (0.005 / 0.19) / 0.5, rel=1e-6)   # v_hat = 0.25


def test_adam_weight_decay_coupled_and_decoupled():
    p1, p2 = np.array([2.0]), np.array([2.0])
    Adam([p1], lr=0.1, weight_decay=0.5).step([np.array([0.0])])
    # Coupled: g = 0 + 0.5 * 2 = 1 -> first step moves by lr.
    np.testing.assert_allclose(p1, [2.0 - 0.1 / (1 + 1e-8)], rtol=1e-15)
    Adam([p2], lr=0.1, weight_decay=0.5, decoupled_weight_decay=True).step([np.array([1.0])])
    # Decoupled: p *= 1 - 0.1 * 0.5, then the Adam step of g = 1.
    np.testing.assert_allclose(p2, [2.0 * 0.95 - 0.1 / (1 + 1e-8)], rtol=1e-15)


def test_sgd_momentum_and_nesterov_hand_computed():
    p = np.array([1.0])
    opt = SGD([p], lr=0.1, momentum=0.9)
    opt.step([np.array([1.0])])            # buf = 1            p = 1 - 0.1
    assert p[0] == pytest.approx(0.9, rel=1e-15)
    opt.step([np.array([1.0])])            # buf = 0.9 + 1      p = 0.9 - 0.19
    assert p[0] == pytest.approx(0.71, rel=1e-14)
    q = np.array([1.0])
    nes = SGD([q], lr=0.1, momentum=0.9, nesterov=True)
    nes.step([np.array([1.0])])            # buf = 1, g' = 1 + 0.9     q = 1 - 0.19
    assert q[0] == pytest.approx(0.81, rel=1e-14)
    nes.step([np.array([1.0])])            # buf = 1.9, g' = 1 + 1.71  q = 0.81 - 0.271
    assert q[0] == pytest.approx(0.539, rel=1e-14)
    r = np.array([1.0])
    SGD([r], lr=0.5, weight_decay=0.1).step([np.array([2.0])])   # g = 2 + 0.1
    assert r[0] == pytest.approx(1.0 - 0.5 * 2.1, rel=1e-15)


@pytest.mark.parametrize("make", [
    lambda ps: Adam(ps, lr=0.01), lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True)])
def test_updates_in_place_keep_dtype(make, rng):
    w = rng.standard_normal((3, 4)).astype(np.float32)
    b = np.zeros(4, np.float32)
    params = {"w": w, "b": b}
    opt = make(params)
    before = w.copy()
    opt.step({"w": np.ones_like(w), "b": np.ones_like(b)})
    assert params["w"] is w and w.dtype == np.float32 and b.dtype == np.float32
    assert np.all(w < before) and np.all(b < 0)


def test_step_checks_grads():
    opt = Adam({"a": np.zeros(3), "b": np.zeros(2)})
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        opt.step({"a": np.zeros(3)})
    with pytest.raises(ValueError, match=r"grad 'b' must have shape \(2,\)"):
        opt.step({"a": np.zeros(3), "b": np.zeros(3)})
    with pytest.raises(TypeError, match="floating-point"):
        SGD({"i": np.zeros(3, dtype=np.int64)})


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd", "nesterov"])
def test_matches_torch_optim(kind, rng):
    torch = pytest.importorskip("torch")
    shapes = [(4, 3), (5,)]
    init = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(5)]
    ours = [a.copy() for a in init]
    theirs = [torch.tensor(a, requires_grad=True) for a in init]
    if kind == "adam":
        o, t = Adam(ours, lr=0.05, weight_decay=0.1), torch.optim.Adam(theirs, lr=0.05,
                                                                           weight_decay=0.1)
    elif kind == "adamw":
        o = Adam(ours, lr=0.05, betas=(0.8, 0.99), weight_decay=0.1, decoupled_weight_decay=True)
        t = torch.optim.AdamW(theirs, lr=0.05, betas=(0.8, 0.99), weight_decay=0.1)
    elif kind == "sgd":
        o = SGD(ours, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)
        t = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)
    else:
        o = SGD(ours, lr=0.1, momentum=0.9, nesterov=True)
        t = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, nesterov=True)
    for step_grads in grads:
        o.step(step_grads)
        for p, g in zip(theirs, step_grads):
            p.grad = torch.tensor(g)
        t.step()
    for a, p in zip(ours, theirs):
        np.testing.assert_allclose(a, p.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_clip_grad_norm():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    norm = clip_grad_norm(g, 1.0)
    assert norm == pytest.approx(5.0, rel=1e-15)
    np.testing.assert_allclose(g["a"], [3 / (5 + 1e-6), 0], rtol=1e-15)
    np.testing.assert_allclose(g["b"], [[4 / (5 + 1e-6)]], rtol=1e-15)
    h = [np.array([0.3, 0.4], np.float32)]
    assert clip_grad_norm(h, 1.0) == pytest.approx(0.5, rel=1e-6)
    np.testing.assert_array_equal(h[0], np.array([0.3, 0.4], np.float32))   # below: untouched
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(h, 0.0)


def test_constant_schedule_with_warmup():
    s = ConstantSchedule(0.1, warmup_steps=4)
    assert [s(k) for k in range(6)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    assert ConstantSchedule(0.1)(0) == 0.1


def test_cosine_schedule():
    s = CosineSchedule(1.0, total_steps=12, warmup_steps=2)
    assert s(0) == pytest.approx(0.5) and s(1) == pytest.approx(1.0)
    assert s(2) == pytest.approx(1.0)                          # start of the decay
    assert s(7) == pytest.approx(0.5)                          # half way: cos(pi/2) = 0
    assert s(12) == pytest.approx(0.0, abs=1e-15) and s(50) == pytest.approx(0.0, abs=1e-15)
    lrs = [s(k) for k in range(2, 13)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    m = CosineSchedule(1.0, total_steps=10, min_lr=0.1)
    assert m(10) == pytest.approx(0.1) and m(0) == pytest.approx(1.0)
    assert isinstance(make_schedule("cosine", 1.0, 10, 2), CosineSchedule)
    assert type(make_schedule("constant", 1.0, 10)) is ConstantSchedule
    with pytest.raises(ValueError, match="schedule must be one of"):
        make_schedule("step", 1.0, 10)
