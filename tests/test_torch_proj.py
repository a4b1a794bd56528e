"""fastlstm.torch.LSTM with proj_size > 0 against torch.nn.LSTM(proj_size=P) (same state_dict).

The projected LSTM runs the extended kernels (``_core.lstmx_forward`` / ``lstmx_backward``,
counted here so a silent fallback to torch's implementation fails the tests): outputs, h_n,
c_n and the gradients of the input, h0, c0 and every parameter (weight_hr_l{k}[_reverse]
included) to ~1e-10 in float64, loosely in float32; stacked, bidirectional, batch_first, no
bias, unsorted PackedSequence, unbatched input, h0/c0 given or not; dropout between layers
with torch's masks; no_grad inference; gradcheck; double backward; convert().
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import fastlstm.torch as ft  # noqa: E402
# the drop-in checks shared with the plain LSTM/GRU tests
from test_torch_modules import (PACKED_CONFIGS, check_dropout_masks,  # noqa: E402
                                gradcheck_module, leaf, run, run_packed)

T, B, I, H, P = 5, 3, 4, 6, 3
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections")  # torch: no oneDNN
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture
def calls(monkeypatch):
    """Counts of the extended kernels' calls (forward, backward) made through fastlstm.torch."""
    n = {"forward": 0, "backward": 0}
    for name in n:
        real = getattr(ft._core, f"lstmx_{name}")

        def counted(*a, _real=real, _name=name):
            n[_name] += 1
            return _real(*a)
        monkeypatch.setattr(ft._core, f"lstmx_{name}", counted)
    return n


def pair(dtype=torch.float64, **kw):
    """torch.nn.LSTM(proj_size=P) and the drop-in holding the same weights."""
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, proj_size=P, dtype=dtype, **kw)
    fast = ft.LSTM(I, H, proj_size=P, dtype=dtype, **kw)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def assert_same(a: dict, b: dict, dtype):
    assert a.keys() == b.keys()
    for k in a:
        if a[k] is None:
            assert b[k] is None, k
        elif a[k].dtype == torch.int64:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(b[k], a[k], **TOL[dtype], msg=lambda m: f"{k}: {m}")


def states(L, D, Bn, dtype):
    return [leaf(L * D, Bn, P, dtype=dtype), leaf(L * D, Bn, H, dtype=dtype)]


CONFIGS = [
    pytest.param(dict(), id="1layer"),
    pytest.param(dict(num_layers=2), id="stacked2"),
    pytest.param(dict(bidirectional=True), id="bidirectional"),
    pytest.param(dict(num_layers=2, bidirectional=True, batch_first=True), id="bi-stacked-bf"),
    pytest.param(dict(num_layers=2, bias=False, batch_first=True), id="no-bias-bf"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kw", CONFIGS)
@pytest.mark.parametrize("with_states", [False, True], ids=["no-h0", "h0"])
def test_parity_padded(kw, dtype, with_states, calls):
    ref, fast = pair(dtype, **kw)
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1)
    torch.manual_seed(1)
    x = leaf(*((B, T, I) if kw.get("batch_first") else (T, B, I)), dtype=dtype)
    assert fast.fastlstm_unsupported(x) is None
    hx = states(L, D, B, dtype) if with_states else None
    want, got = run(ref, x, hx, "lstm"), run(fast, x, hx, "lstm")
    assert calls == {"forward": L * D, "backward": L * D}  # one call per (layer, direction)
    assert got["output"].shape[-1] == D * P and got["state0"].shape == (L * D, B, P)
    assert {f"grad_weight_hr_l{k}" for k in range(L)} <= got.keys()
    assert_same(want, got, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kw", PACKED_CONFIGS)
@pytest.mark.parametrize("with_states", [False, True], ids=["no-h0", "h0"])
def test_parity_packed_unequal_lengths(kw, dtype, with_states, calls):
    """Unsorted unequal lengths: packed output, states in the caller's order, every gradient
    (the reverse direction runs each sequence backwards from its own last step)."""
    ref, fast = pair(dtype, **kw)
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1)
    bf = kw.get("batch_first", False)
    lengths = torch.tensor([3, 5, 1, 4])
    Bp = len(lengths)
    torch.manual_seed(2)
    xs = leaf(*((Bp, T, I) if bf else (T, Bp, I)), dtype=dtype)
    hx = states(L, D, Bp, dtype) if with_states else None
    results = run_packed((ref, fast), xs, lengths, bf, hx, "lstm")
    assert calls["forward"] == L * D and calls["backward"] == L * D
    assert_same(*results, dtype)


def test_parity_unbatched_input(calls):
    ref, fast = pair(num_layers=2)
    x = leaf(T, I, dtype=torch.float64)
    hx = [leaf(2, P, dtype=torch.float64), leaf(2, H, dtype=torch.float64)]
    assert_same(run(ref, x, hx, "lstm"), run(fast, x, hx, "lstm"), torch.float64)
    assert calls["forward"] == 2


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_dropout_in_training_draws_torchs_masks(packed, calls):
    ref, fast = pair(num_layers=3, dropout=0.5, bidirectional=True, batch_first=True)
    check_dropout_masks(ref, fast, packed, "lstm")
    assert calls["forward"] == 2 * 6  # two seeds, 3 layers x 2 directions each


def test_no_grad_runs_inference_kernels(calls):
    ref, fast = pair(torch.float32, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I)
    with torch.no_grad():
        (a, (ha, ca)), (b, (hb, cb)) = ref(x), fast(x)
    assert b.grad_fn is None and calls == {"forward": 4, "backward": 0}
    for u, v in ((a, b), (ha, hb), (ca, cb)):
        torch.testing.assert_close(v, u, **TOL[torch.float32])


def test_kernel_path_saves_weight_hr_without_copy():
    """weight_hr is saved as the caller's tensor: an in-place change before backward is
    refused by autograd's version counter."""
    _, fast = pair(torch.float32)
    out, _ = fast(leaf(T, B, I, dtype=torch.float32))
    assert type(out.grad_fn).__name__ == "_LSTMFunctionBackward"
    with torch.no_grad():
        fast.weight_hr_l0.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize("kw", [pytest.param(dict(), id="1layer"),
                                pytest.param(dict(num_layers=2, bidirectional=True,
                                                  batch_first=True), id="bi2-bf"),
                                pytest.param(dict(packed=True, bidirectional=True),
                                             id="packed-bi")])
def test_gradcheck_float64(kw):
    kw = dict(kw)
    packed = kw.pop("packed", False)
    gradcheck_module(pair(**kw)[1], packed, [P, H])


def test_double_backward_matches_torch():
    """create_graph=True: the backward is the torch-op recurrence with the projection, so the
    second derivatives equal nn.LSTM(proj_size)'s."""
    ref, fast = pair(num_layers=2, bidirectional=True)
    x = leaf(T, B, I, dtype=torch.float64)
    hx = states(2, 2, B, torch.float64)
    res = []
    for m in (ref, fast):
        out, (h, c) = m(x, tuple(hx))
        g = torch.autograd.grad(out.square().sum() + h.sin().sum() + c.square().sum(),
                                [x] + hx, create_graph=True)
        res.append(torch.autograd.grad(sum(t.square().sum() for t in g),
                                       [x] + hx + list(m.parameters())))
    for a, b in zip(*res):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_convert_model_with_proj_size_runs_the_kernels(calls):
    torch.manual_seed(0)
    model = nn.Sequential()
    model.rnn = nn.LSTM(I, H, num_layers=2, proj_size=P, batch_first=True)
    x = torch.randn(B, T, I)
    expected, _ = model.rnn(x)
    ft.convert(model)
    assert type(model.rnn) is ft.LSTM and model.rnn.fastlstm_unsupported(x) is None
    got, _ = model.rnn(x)
    torch.testing.assert_close(got, expected, **TOL[torch.float32])
    got.sum().backward()
    assert calls == {"forward": 2, "backward": 2}
    assert model.rnn.weight_hr_l1.grad is not None
