"""The reference and the C kernels against torch.nn.LSTM / torch.nn.GRU (float64, same weights).

torch has only linear_before_reset=True; the other GRU variant is checked against torch
autograd of the equations written out with torch ops (``torch_gru_orig``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastlstm  # noqa: E402
from testkit import (GRU_GRAD_NAMES, LSTM_GRAD_NAMES, assert_close,  # noqa: E402
                      make_cell_problem, make_gru_problem, make_lstm_problem, make_upstream)
from fastlstm import reference as ref  # noqa: E402

F64 = np.float64
IMPLS = [pytest.param(ref, id="reference"), pytest.param(fastlstm, id="fastlstm")]
WEIGHT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def leaf(a: np.ndarray):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


def initial_states(p: dict, names) -> dict:
    """The problem's initial states as leaf tensors (zeros where the problem has None)."""
    x = p["x"]
    B = x.shape[0] if p["batch_first"] else x.shape[1]
    H = p["weight_hh"].shape[1]
    return {n: leaf(np.zeros((B, H)) if p[n] is None else p[n]) for n in names}


def run_torch_module(module, p: dict, up: dict, states: tuple):
    """Run an nn.LSTM/nn.GRU (packed if p has lengths); return (outputs, grads) as numpy."""
    with torch.no_grad():
        for name in WEIGHT_NAMES:
            getattr(module, name + "_l0").copy_(torch.from_numpy(p[name]))
    x = leaf(p["x"])
    hx = tuple(s.unsqueeze(0) for s in states)
    hx = hx if len(hx) > 1 else hx[0]
    if p["lengths"] is None:
        y, hn = module(x, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.as_tensor(p["lengths"], dtype=torch.int64), batch_first=p["batch_first"],
            enforce_sorted=False)
        y_packed, hn = module(packed, hx)
        T = p["x"].shape[1] if p["batch_first"] else p["x"].shape[0]
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y_packed, batch_first=p["batch_first"],
                                                      total_length=T)
    hn = hn if isinstance(hn, tuple) else (hn,)
    finals = [s[0] for s in hn]                        # drop the num_layers axis
    loss = torch.sum(y * torch.from_numpy(up["grad_output"]))
    for s, g in zip(finals, ("grad_h_n", "grad_c_n")):
        loss = loss + torch.sum(s * torch.from_numpy(up[g]))
    loss.backward()
    outputs = [y.detach().numpy()] + [s.detach().numpy() for s in finals]
    grads = {"x": x.grad.numpy()}
    grads.update({n: getattr(module, n + "_l0").grad.numpy() for n in WEIGHT_NAMES})
    return outputs, grads


SEQ_CASES = [
    pytest.param(dict(T=5, B=4, I=7, H=6, with_h0=True, with_lengths=False, batch_first=False),
                 id="h0"),
    pytest.param(dict(T=6, B=5, I=3, H=17, with_h0=False, with_lengths=False, batch_first=True),
                 id="no_h0-bf"),
    pytest.param(dict(T=7, B=6, I=5, H=9, with_h0=True, with_lengths=True, batch_first=False),
                 id="lengths"),
    pytest.param(dict(T=4, B=3, I=28, H=5, with_h0=False, with_lengths=True, batch_first=True),
                 id="lengths-no_h0-bf"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cfg", SEQ_CASES)
def test_lstm_matches_torch(impl, cfg):
    p = make_lstm_problem(dtype=F64, seed=1, **cfg)
    up = make_upstream(p, seed=2)
    module = torch.nn.LSTM(cfg["I"], cfg["H"], batch_first=cfg["batch_first"],
                           dtype=torch.float64)
    states = initial_states(p, ("h0", "c0"))
    (y, h_n, c_n), t_grads = run_torch_module(module, p, up, (states["h0"], states["c0"]))
    t_grads.update(h0=states["h0"].grad.numpy(), c0=states["c0"].grad.numpy())

    out = impl.lstm(**p)
    assert_close(out.output, y, F64, "output")
    assert_close(out.h_n, h_n, F64, "h_n")
    assert_close(out.c_n, c_n, F64, "c_n")
    grads = out.backward(**up)
    for name in LSTM_GRAD_NAMES:
        assert_close(getattr(grads, name), t_grads[name], F64, name)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cfg", SEQ_CASES)
def test_gru_matches_torch(impl, cfg):
    p = make_gru_problem(dtype=F64, seed=3, linear_before_reset=True, **cfg)
    up = make_upstream(p, seed=4)
    module = torch.nn.GRU(cfg["I"], cfg["H"], batch_first=cfg["batch_first"],
                          dtype=torch.float64)
    states = initial_states(p, ("h0",))
    (y, h_n), t_grads = run_torch_module(module, p, up, (states["h0"],))
    t_grads["h0"] = states["h0"].grad.numpy()

    out = impl.gru(**p)
    assert_close(out.output, y, F64, "output")
    assert_close(out.h_n, h_n, F64, "h_n")
    grads = out.backward(**up)
    for name in GRU_GRAD_NAMES:
        assert_close(getattr(grads, name), t_grads[name], F64, name)


def torch_gru_orig(x, w_ih, w_hh, b_ih, b_hh, h, lengths):
    """GRU with linear_before_reset=False in torch ops, time-major, for autograd."""
    H = w_hh.shape[1]
    w_hr, w_hz, w_hn = w_hh[:H], w_hh[H:2 * H], w_hh[2 * H:]
    b_hr, b_hz, b_hn = b_hh[:H], b_hh[H:2 * H], b_hh[2 * H:]
    outputs = []
    for t in range(x.shape[0]):
        x_r, x_z, x_n = torch.split(x[t] @ w_ih.T + b_ih, H, dim=1)
        r = torch.sigmoid(x_r + h @ w_hr.T + b_hr)
        z = torch.sigmoid(x_z + h @ w_hz.T + b_hz)
        n = torch.tanh(x_n + (r * h) @ w_hn.T + b_hn)
        h_new = (1 - z) * n + z * h
        active = (t < lengths)[:, None]
        h = torch.where(active, h_new, h)
        outputs.append(torch.where(active, h_new, torch.zeros_like(h_new)))
    return torch.stack(outputs), h


@pytest.mark.parametrize("impl", IMPLS)
def test_gru_original_variant_matches_torch_autograd(impl):
    p = make_gru_problem(6, 5, 4, 7, F64, seed=5, with_lengths=True, linear_before_reset=False)
    up = make_upstream(p, seed=6)
    leaves = {n: leaf(p[n]) for n in ("x",) + WEIGHT_NAMES + ("h0",)}
    y, h_n = torch_gru_orig(*leaves.values(), torch.as_tensor(p["lengths"]))
    loss = torch.sum(y * torch.from_numpy(up["grad_output"])) \
        + torch.sum(h_n * torch.from_numpy(up["grad_h_n"]))
    loss.backward()

    out = impl.gru(**p)
    assert_close(out.output, y.detach().numpy(), F64, "output")
    assert_close(out.h_n, h_n.detach().numpy(), F64, "h_n")
    grads = out.backward(**up)
    for name in GRU_GRAD_NAMES:
        assert_close(getattr(grads, name), leaves[name].grad.numpy(), F64, name)


@pytest.mark.parametrize("impl", IMPLS)
def test_cells_match_torch(impl):
    rng = np.random.default_rng(7)
    p = make_cell_problem("lstm", 4, 7, 5, dtype=F64, seed=8)
    gh, gc = rng.standard_normal((2, 4, 5))
    cell = torch.nn.LSTMCell(7, 5, dtype=torch.float64)
    with torch.no_grad():
        for name in WEIGHT_NAMES:
            getattr(cell, name).copy_(torch.from_numpy(p[name]))
    x, h, c = leaf(p["x"]), leaf(p["h"]), leaf(p["c"])
    h1, c1 = cell(x, (h, c))
    (torch.sum(h1 * torch.from_numpy(gh)) + torch.sum(c1 * torch.from_numpy(gc))).backward()
    mine_h1, mine_c1 = impl.lstm_cell(**p)
    assert_close(mine_h1, h1.detach().numpy(), F64, "lstm h1")
    assert_close(mine_c1, c1.detach().numpy(), F64, "lstm c1")
    g = impl.lstm_cell_backward(**p, grad_h=gh, grad_c=gc)
    for name, tensor in (("x", x), ("h", h), ("c", c)):
        assert_close(getattr(g, name), tensor.grad.numpy(), F64, "lstm " + name)
    for name in WEIGHT_NAMES:
        assert_close(getattr(g, name), getattr(cell, name).grad.numpy(), F64, "lstm " + name)

    q = make_cell_problem("gru", 4, 7, 5, dtype=F64, seed=9)
    cell = torch.nn.GRUCell(7, 5, dtype=torch.float64)
    with torch.no_grad():
        for name in WEIGHT_NAMES:
            getattr(cell, name).copy_(torch.from_numpy(q[name]))
    x, h = leaf(q["x"]), leaf(q["h"])
    h1 = cell(x, h)
    torch.sum(h1 * torch.from_numpy(gh)).backward()
    assert_close(impl.gru_cell(**q), h1.detach().numpy(), F64, "gru h1")
    g = impl.gru_cell_backward(**q, grad_h=gh)
    for name, tensor in (("x", x), ("h", h)):
        assert_close(getattr(g, name), tensor.grad.numpy(), F64, "gru " + name)
    for name in WEIGHT_NAMES:
        assert_close(getattr(g, name), getattr(cell, name).grad.numpy(), F64, "gru " + name)
