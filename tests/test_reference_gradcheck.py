"""The NumPy reference checked on its own: finite differences and independent re-derivations.

Everything here is float64 and uses only ``fastlstm.reference``. The loss is always
``<grad_output, output> + <grad_h_n, h_n> (+ <grad_c_n, c_n>)`` with random upstream gradients,
so its gradient is exactly what ``backward(grad_output, grad_h_n, grad_c_n)`` returns.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from testkit import (FD_EPS, GRU_GRAD_NAMES, LSTM_GRAD_NAMES, assert_close, assert_close_fd,
                      copy_problem, make_cell_problem, make_gru_problem, make_lstm_problem,
                      make_upstream)
from fastlstm import reference as ref

F64 = np.float64


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def run(kind: str, p: dict):
    return ref.lstm(**p) if kind == "lstm" else ref.gru(**p)


def seq_loss(kind: str, p: dict, up: dict) -> float:
    out = run(kind, p)
    loss = np.sum(out.output * up["grad_output"]) + np.sum(out.h_n * up["grad_h_n"])
    if kind == "lstm":
        loss += np.sum(out.c_n * up["grad_c_n"])
    return float(loss)


def array_names(kind: str) -> tuple:
    return LSTM_GRAD_NAMES if kind == "lstm" else GRU_GRAD_NAMES


def with_explicit_states(kind: str, p: dict) -> dict:
    """h0 (and c0) None -> explicit zeros, so finite differences can perturb them."""
    q = dict(p)
    B = p["x"].shape[0] if p["batch_first"] else p["x"].shape[1]
    H = p["weight_hh"].shape[1]
    for name in ("h0", "c0") if kind == "lstm" else ("h0",):
        if q[name] is None:
            q[name] = np.zeros((B, H))
    return q


def fd_gradient(loss, p: dict, name: str) -> np.ndarray:
    """Central-difference gradient of ``loss(p)`` wrt every entry of ``p[name]``."""
    grad = np.zeros_like(p[name])
    for idx in np.ndindex(p[name].shape):
        q = dict(p)
        q[name] = p[name].copy()
        q[name][idx] += FD_EPS
        plus = loss(q)
        q[name][idx] -= 2 * FD_EPS
        minus = loss(q)
        grad[idx] = (plus - minus) / (2 * FD_EPS)
    return grad


def check_full_jacobian(kind: str, p: dict) -> None:
    up = make_upstream(p, seed=7, lstm=(kind == "lstm"))
    grads = run(kind, p).backward(**up)                 # h0/c0 may be None here
    q = with_explicit_states(kind, p)
    for name in array_names(kind):
        numeric = fd_gradient(lambda r: seq_loss(kind, r, up), q, name)
        assert np.any(numeric != 0), f"{name}: gradient is all zero"
        assert_close_fd(getattr(grads, name), numeric, name)


# ----------------------------------------------------------------------------------------------
# Full Jacobian-vector entries on tiny shapes (T=3, B=2, I=3, H=4)
# ----------------------------------------------------------------------------------------------

TINY = dict(T=3, B=2, I=3, H=4)
SEQ_CONFIGS = [
    pytest.param(dict(with_h0=True, lengths=None, batch_first=False), id="h0"),
    pytest.param(dict(with_h0=False, lengths=None, batch_first=False), id="no_h0"),
    pytest.param(dict(with_h0=True, lengths=[3, 1], batch_first=False), id="lengths_3_1"),
    pytest.param(dict(with_h0=True, lengths=[2, 3], batch_first=True), id="lengths_2_3_bf"),
    pytest.param(dict(with_h0=False, lengths=[1, 2], batch_first=True), id="no_h0_lengths_1_2_bf"),
]


def tiny_problem(kind: str, cfg: dict, seed: int) -> dict:
    if kind == "lstm":
        p = make_lstm_problem(**TINY, dtype=F64, seed=seed, with_h0=cfg["with_h0"],
                              batch_first=cfg["batch_first"])
    else:
        p = make_gru_problem(**TINY, dtype=F64, seed=seed, with_h0=cfg["with_h0"],
                             batch_first=cfg["batch_first"],
                             linear_before_reset=(kind == "gru_lbr"))
        kind = "gru"
    if cfg["lengths"] is not None:
        p["lengths"] = np.array(cfg["lengths"])
    return p


@pytest.mark.parametrize("cfg", SEQ_CONFIGS)
def test_lstm_gradients_match_finite_differences(cfg):
    check_full_jacobian("lstm", tiny_problem("lstm", cfg, seed=1))


@pytest.mark.parametrize("cfg", SEQ_CONFIGS)
@pytest.mark.parametrize("linear_before_reset", [True, False])
def test_gru_gradients_match_finite_differences(cfg, linear_before_reset):
    kind = "gru_lbr" if linear_before_reset else "gru_orig"
    check_full_jacobian("gru", tiny_problem(kind, cfg, seed=2))


def test_lengths_gradient_past_end_is_zero_and_grad_output_past_end_ignored():
    p = make_lstm_problem(**TINY, seed=3)
    p["lengths"] = np.array([3, 1])
    up = make_upstream(p, seed=4)
    out = ref.lstm(**p)
    assert np.all(out.output[1:, 1] == 0.0)
    g1 = out.backward(**up)
    assert np.all(g1.x[1:, 1] == 0.0) and np.any(g1.x[0, 1] != 0.0)
    up["grad_output"][1:, 1] = 123.0                    # past sequence 1's end: ignored
    g2 = out.backward(**up)
    for name in LSTM_GRAD_NAMES:
        np.testing.assert_array_equal(getattr(g1, name), getattr(g2, name), err_msg=name)


@pytest.mark.parametrize("kind", ["lstm", "gru_lbr", "gru_orig"])
def test_cell_gradients_match_finite_differences(kind):
    cell_kind = "lstm" if kind == "lstm" else "gru"
    p = make_cell_problem(cell_kind, B=2, I=3, H=4, seed=5)
    rng = np.random.default_rng(6)
    gh = rng.standard_normal(p["h"].shape)
    gc = rng.standard_normal(p["h"].shape)
    if cell_kind == "lstm":
        def loss(q):
            h1, c1 = ref.lstm_cell(**q)
            return float(np.sum(h1 * gh) + np.sum(c1 * gc))
        grads = ref.lstm_cell_backward(**p, grad_h=gh, grad_c=gc)
        names = ("x", "h", "c", "weight_ih", "weight_hh", "bias_ih", "bias_hh")
    else:
        lbr = kind == "gru_lbr"

        def loss(q):
            return float(np.sum(ref.gru_cell(**q, linear_before_reset=lbr) * gh))
        grads = ref.gru_cell_backward(**p, grad_h=gh, linear_before_reset=lbr)
        names = ("x", "h", "weight_ih", "weight_hh", "bias_ih", "bias_hh")
    for name in names:
        assert_close_fd(getattr(grads, name), fd_gradient(loss, p, name), name)


# ----------------------------------------------------------------------------------------------
# Random-direction check v^T J u on a larger shape (gradcheck's fast mode)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lstm", "gru_lbr", "gru_orig"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_random_direction_derivative(kind, batch_first):
    T, B, I, H = 9, 6, 7, 11
    if kind == "lstm":
        p = make_lstm_problem(T, B, I, H, seed=8, with_lengths=True, batch_first=batch_first)
    else:
        p = make_gru_problem(T, B, I, H, seed=8, with_lengths=True, batch_first=batch_first,
                             linear_before_reset=(kind == "gru_lbr"))
        kind = "gru"
    up = make_upstream(p, seed=9)
    grads = run(kind, p).backward(**up)
    rng = np.random.default_rng(10)
    names = array_names(kind)
    u = {name: rng.standard_normal(p[name].shape) for name in names}

    def shifted(s):
        return {k: (v + s * u[k] if k in u else v) for k, v in p.items()}

    numeric = (seq_loss(kind, shifted(FD_EPS), up) - seq_loss(kind, shifted(-FD_EPS), up)) \
        / (2 * FD_EPS)
    analytic = sum(float(np.sum(getattr(grads, name) * u[name])) for name in names)
    assert_close_fd(np.array([analytic]), np.array([numeric]), "v^T J u")


# ----------------------------------------------------------------------------------------------
# Independent re-derivations of the forward pass and the scan
# ----------------------------------------------------------------------------------------------

def _sig(a: float) -> float:
    return 1.0 / (1.0 + math.exp(-a))


def scalar_lstm(x, w_ih, w_hh, b_ih, b_hh, h0, c0):
    """Element-by-element LSTM with Python floats and math: shares no code with the reference."""
    T, B, I = x.shape
    H = w_hh.shape[1]
    h, c = h0.tolist(), c0.tolist()
    out = np.zeros((T, B, H))
    for t in range(T):
        h_new, c_new = [[0.0] * H for _ in range(B)], [[0.0] * H for _ in range(B)]
        for b in range(B):
            for j in range(H):
                a = []
                for gate in range(4):
                    row = gate * H + j
                    s = b_ih[row] + b_hh[row]
                    s += sum(w_ih[row, k] * x[t, b, k] for k in range(I))
                    s += sum(w_hh[row, k] * h[b][k] for k in range(H))
                    a.append(s)
                i, f, g, o = _sig(a[0]), _sig(a[1]), math.tanh(a[2]), _sig(a[3])
                c_new[b][j] = f * c[b][j] + i * g
                h_new[b][j] = o * math.tanh(c_new[b][j])
        h, c = h_new, c_new
        out[t] = h
    return out, np.array(h), np.array(c)


def scalar_gru(x, w_ih, w_hh, b_ih, b_hh, h0, linear_before_reset):
    """Element-by-element GRU with Python floats and math."""
    T, B, I = x.shape
    H = w_hh.shape[1]
    h = h0.tolist()
    out = np.zeros((T, B, H))
    for t in range(T):
        def xw(row):
            return b_ih[row] + sum(w_ih[row, k] * x[t, b, k] for k in range(I))

        def hw(row, hv):
            return b_hh[row] + sum(w_hh[row, k] * hv[k] for k in range(H))
        h_new = [[0.0] * H for _ in range(B)]
        for b in range(B):
            r = [_sig(xw(j) + hw(j, h[b])) for j in range(H)]
            for j in range(H):
                z = _sig(xw(H + j) + hw(H + j, h[b]))
                if linear_before_reset:
                    n = math.tanh(xw(2 * H + j) + r[j] * hw(2 * H + j, h[b]))
                else:
                    rh = [r[k] * h[b][k] for k in range(H)]
                    n = math.tanh(xw(2 * H + j) + hw(2 * H + j, rh))
                h_new[b][j] = (1 - z) * n + z * h[b][j]
        h = h_new
        out[t] = h
    return out, np.array(h)


def test_lstm_forward_matches_scalar_implementation():
    p = make_lstm_problem(T=3, B=2, I=3, H=4, seed=11)
    out = ref.lstm(**p)
    exp_out, exp_h, exp_c = scalar_lstm(p["x"], p["weight_ih"], p["weight_hh"], p["bias_ih"],
                                        p["bias_hh"], p["h0"], p["c0"])
    assert_close(out.output, exp_out, F64, "output")
    assert_close(out.h_n, exp_h, F64, "h_n")
    assert_close(out.c_n, exp_c, F64, "c_n")


@pytest.mark.parametrize("linear_before_reset", [True, False])
def test_gru_forward_matches_scalar_implementation(linear_before_reset):
    p = make_gru_problem(T=3, B=2, I=3, H=4, seed=12, linear_before_reset=linear_before_reset)
    out = ref.gru(**p)
    exp_out, exp_h = scalar_gru(p["x"], p["weight_ih"], p["weight_hh"], p["bias_ih"],
                                p["bias_hh"], p["h0"], linear_before_reset)
    assert_close(out.output, exp_out, F64, "output")
    assert_close(out.h_n, exp_h, F64, "h_n")


def test_lstm_one_step_sequence_equals_cell():
    p = make_lstm_problem(T=1, B=3, I=5, H=6, seed=13)
    up = make_upstream(p, seed=14)
    weights = {k: p[k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    out = ref.lstm(**p)
    h1, c1 = ref.lstm_cell(p["x"][0], p["h0"], p["c0"], **weights)
    assert_close(out.output[0], h1, F64, "output")
    assert_close(out.h_n, h1, F64, "h_n")
    assert_close(out.c_n, c1, F64, "c_n")
    g = out.backward(**up)
    gc = ref.lstm_cell_backward(p["x"][0], p["h0"], p["c0"], **weights,
                                grad_h=up["grad_output"][0] + up["grad_h_n"],
                                grad_c=up["grad_c_n"])
    for seq_name, cell_name in [("x", "x"), ("h0", "h"), ("c0", "c"), ("weight_ih", "weight_ih"),
                                ("weight_hh", "weight_hh"), ("bias_ih", "bias_ih"),
                                ("bias_hh", "bias_hh")]:
        expected = getattr(gc, cell_name)
        actual = getattr(g, seq_name)
        assert_close(actual[0] if seq_name == "x" else actual, expected, F64, seq_name)


@pytest.mark.parametrize("linear_before_reset", [True, False])
def test_gru_one_step_sequence_equals_cell(linear_before_reset):
    lbr = linear_before_reset
    p = make_gru_problem(T=1, B=3, I=5, H=6, seed=15, linear_before_reset=lbr)
    up = make_upstream(p, seed=16)
    weights = {k: p[k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    out = ref.gru(**p)
    h1 = ref.gru_cell(p["x"][0], p["h0"], **weights, linear_before_reset=lbr)
    assert_close(out.output[0], h1, F64, "output")
    assert_close(out.h_n, h1, F64, "h_n")
    g = out.backward(**up)
    gc = ref.gru_cell_backward(p["x"][0], p["h0"], **weights,
                               grad_h=up["grad_output"][0] + up["grad_h_n"],
                               linear_before_reset=lbr)
    for seq_name, cell_name in [("x", "x"), ("h0", "h"), ("weight_ih", "weight_ih"),
                                ("weight_hh", "weight_hh"), ("bias_ih", "bias_ih"),
                                ("bias_hh", "bias_hh")]:
        actual = getattr(g, seq_name)
        assert_close(actual[0] if seq_name == "x" else actual, getattr(gc, cell_name), F64,
                     seq_name)


def test_lstm_sequence_equals_loop_of_public_cells():
    """Forward and BPTT written out by hand with the public cell functions."""
    p = make_lstm_problem(T=4, B=3, I=5, H=6, seed=17)
    up = make_upstream(p, seed=18)
    weights = {k: p[k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    T = p["x"].shape[0]
    hs, cs = [p["h0"]], [p["c0"]]
    for t in range(T):
        h, c = ref.lstm_cell(p["x"][t], hs[-1], cs[-1], **weights)
        hs.append(h)
        cs.append(c)
    out = ref.lstm(**p)
    assert_close(out.output, np.stack(hs[1:]), F64, "output")
    dh, dc = up["grad_h_n"], up["grad_c_n"]
    dw = {k: 0.0 for k in weights}
    dx = np.zeros_like(p["x"])
    for t in reversed(range(T)):
        g = ref.lstm_cell_backward(p["x"][t], hs[t], cs[t], **weights,
                                   grad_h=dh + up["grad_output"][t], grad_c=dc)
        dh, dc, dx[t] = g.h, g.c, g.x
        for k in dw:
            dw[k] = dw[k] + getattr(g, k)
    grads = out.backward(**up)
    assert_close(grads.x, dx, F64, "x")
    assert_close(grads.h0, dh, F64, "h0")
    assert_close(grads.c0, dc, F64, "c0")
    for k, v in dw.items():
        assert_close(getattr(grads, k), v, F64, k)


@pytest.mark.parametrize("kind", ["lstm", "gru_lbr", "gru_orig"])
def test_lengths_equal_running_each_sequence_alone(kind):
    """Packed semantics, checked by running every sequence truncated to its own length."""
    T, B, I, H = 5, 4, 3, 4
    if kind == "lstm":
        p = make_lstm_problem(T, B, I, H, seed=19)
    else:
        p = make_gru_problem(T, B, I, H, seed=19, linear_before_reset=(kind == "gru_lbr"))
        kind = "gru"
    p["lengths"] = np.array([5, 1, 3, 2])
    up = make_upstream(p, seed=20)
    out = run(kind, p)
    grads = out.backward(**up)
    weight_names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    wsum = {k: 0.0 for k in weight_names}
    for b, L in enumerate(p["lengths"]):
        q = dict(p, x=p["x"][:L, b:b + 1], h0=p["h0"][b:b + 1], lengths=None)
        upb = dict(grad_output=up["grad_output"][:L, b:b + 1], grad_h_n=up["grad_h_n"][b:b + 1])
        if kind == "lstm":
            q["c0"] = p["c0"][b:b + 1]
            upb["grad_c_n"] = up["grad_c_n"][b:b + 1]
        single = run(kind, q)
        assert_close(out.output[:L, b:b + 1], single.output, F64, f"output[:, {b}]")
        assert np.all(out.output[L:, b] == 0.0)
        assert_close(out.h_n[b:b + 1], single.h_n, F64, f"h_n[{b}]")
        gs = single.backward(**upb)
        assert_close(grads.x[:L, b:b + 1], gs.x, F64, f"x[:, {b}]")
        assert np.all(grads.x[L:, b] == 0.0)
        assert_close(grads.h0[b:b + 1], gs.h0, F64, f"h0[{b}]")
        if kind == "lstm":
            assert_close(out.c_n[b:b + 1], single.c_n, F64, f"c_n[{b}]")
            assert_close(grads.c0[b:b + 1], gs.c0, F64, f"c0[{b}]")
        for k in weight_names:
            wsum[k] = wsum[k] + getattr(gs, k)
    for k in weight_names:
        assert_close(getattr(grads, k), wsum[k], F64, k)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_batch_first_is_a_transpose(kind):
    make = make_lstm_problem if kind == "lstm" else make_gru_problem
    p = make(T=4, B=3, I=2, H=5, seed=21, with_lengths=True)
    up = make_upstream(p, seed=22)
    pb = dict(p, x=p["x"].transpose(1, 0, 2).copy(), batch_first=True)
    upb = dict(up, grad_output=up["grad_output"].transpose(1, 0, 2).copy())
    out, outb = run(kind, p), run(kind, pb)
    np.testing.assert_array_equal(outb.output, out.output.transpose(1, 0, 2))
    np.testing.assert_array_equal(outb.h_n, out.h_n)
    g, gb = out.backward(**up), outb.backward(**upb)
    np.testing.assert_array_equal(gb.x, g.x.transpose(1, 0, 2))
    np.testing.assert_array_equal(gb.weight_hh, g.weight_hh)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_defaults_mean_zeros(kind):
    """h0/c0 None == zeros, lengths None == all T, upstream None == zeros."""
    make = make_lstm_problem if kind == "lstm" else make_gru_problem
    p = make(T=3, B=2, I=3, H=4, seed=23, with_h0=False)
    T, B = p["x"].shape[:2]
    q = dict(with_explicit_states(kind, p), lengths=np.full(B, T))
    up = make_upstream(p, seed=24)
    out, outq = run(kind, p), run(kind, q)
    np.testing.assert_array_equal(out.output, outq.output)
    np.testing.assert_array_equal(out.backward(**up).h0, outq.backward(**up).h0)
    only_h = out.backward(grad_h_n=up["grad_h_n"])
    zeros = {k: np.zeros_like(v) for k, v in up.items()}
    explicit = out.backward(**dict(zeros, grad_h_n=up["grad_h_n"]))
    for name in array_names(kind):
        np.testing.assert_array_equal(getattr(only_h, name), getattr(explicit, name), name)
    assert np.all(out.backward().weight_hh == 0.0)


def test_float32_inputs_give_float64_results_and_inputs_untouched():
    p = make_lstm_problem(T=3, B=2, I=3, H=4, dtype=np.float32, seed=25, with_lengths=True)
    before = copy_problem(p)
    up = make_upstream(p, seed=26)
    out = ref.lstm(**p)
    g = out.backward(**up)
    assert out.output.dtype == out.h_n.dtype == out.c_n.dtype == F64
    assert all(getattr(g, n).dtype == F64 for n in LSTM_GRAD_NAMES)
    for k, v in before.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(p[k], v, err_msg=k)
            assert p[k].dtype == v.dtype


def test_backward_twice_is_identical():
    p = make_gru_problem(T=4, B=3, I=2, H=5, seed=27, with_lengths=True)
    up = make_upstream(p, seed=28)
    out = ref.gru(**p)
    g1, g2 = out.backward(**up), out.backward(**up)
    for name in GRU_GRAD_NAMES:
        np.testing.assert_array_equal(getattr(g1, name), getattr(g2, name), err_msg=name)


@pytest.mark.parametrize("change, exc, match", [
    (dict(weight_hh=np.zeros((16, 3))), ValueError, "weight_hh"),
    (dict(weight_ih=np.zeros((16, 2))), ValueError, r"weight_ih must have shape \(16, 3\)"),
    (dict(bias_hh=np.zeros(15)), ValueError, "bias_hh"),
    (dict(h0=np.zeros((3, 4))), ValueError, "h0"),
    (dict(c0=np.zeros((2, 5))), ValueError, "c0"),
    (dict(x=np.zeros((3, 3))), ValueError, "x"),
    (dict(lengths=np.array([4, 1])), ValueError, "lengths"),
    (dict(lengths=np.array([0, 1])), ValueError, "lengths"),
    (dict(lengths=np.array([1.0, np.nan])), ValueError, "lengths"),
    (dict(lengths=np.array([1, 2, 3])), ValueError, "lengths"),
    (dict(bias_ih=np.zeros(16, np.float32)), TypeError, "bias_ih"),
    (dict(x=np.zeros((3, 2, 3), np.int64)), TypeError, "x"),
])
def test_reference_rejects_bad_input_naming_the_argument(change, exc, match):
    p = make_lstm_problem(T=3, B=2, I=3, H=4, seed=29)
    p.update(change)
    with pytest.raises(exc, match=match):
        ref.lstm(**p)
