"""fastlstm.torch: the drop-in nn.LSTM / nn.GRU against torch's own modules (same weights).

Outputs, final states and the gradients of the input, the initial states and every parameter,
for stacked, bidirectional, batch_first, packed (unsorted lengths), bias=False, unbatched,
float32 and float64; dropout between layers against nn.LSTM with the same seed; gradcheck in
float64; the fallbacks to torch's implementation; convert(); threads.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, PackedSequence  # noqa: E402

import fastlstm.torch as ft  # noqa: E402
from testkit import child_env  # noqa: E402

T, B, I, H = 5, 3, 4, 6
CELLS = {"lstm": (nn.LSTM, ft.LSTM), "gru": (nn.GRU, ft.GRU)}
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-11, atol=1e-12)}


def pair(cell: str, dtype=torch.float32, **kw):
    """A torch module and a fastlstm one holding the same weights."""
    torch_cls, fast_cls = CELLS[cell]
    torch.manual_seed(0)
    ref = torch_cls(I, H, **kw).to(dtype)
    fast = fast_cls(I, H, **kw).to(dtype)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def leaf(*shape, dtype):
    return torch.randn(*shape, dtype=dtype).requires_grad_(True)


def run(module, x, hx, cell):
    """Forward and backward of a loss touching every output; returns outputs and gradients."""
    for t in list(hx or ()) + list(module.parameters()):
        t.grad = None
    if isinstance(x, torch.Tensor):
        x.grad = None
    out, h = module(x, None if hx is None else (tuple(hx) if cell == "lstm" else hx[0]))
    states = list(h) if cell == "lstm" else [h]
    data = out.data if isinstance(out, PackedSequence) else out
    w = torch.linspace(-1, 1, data.numel(), dtype=data.dtype).reshape(data.shape)
    loss = (data * w).sum() + sum((s.square() * (k + 1)).sum() for k, s in enumerate(states))
    loss.backward()
    got = {"output": data.detach()}
    got.update({f"state{k}": s.detach() for k, s in enumerate(states)})
    got["grad_x"] = x.grad if not isinstance(x, PackedSequence) else None
    for k, s in enumerate(hx or ()):
        got[f"grad_state{k}"] = s.grad
    for name, p in module.named_parameters():
        got["grad_" + name] = p.grad
    if isinstance(out, PackedSequence):
        got["batch_sizes"] = out.batch_sizes
        got["sorted_indices"] = out.sorted_indices
        got["unsorted_indices"] = out.unsorted_indices
    return got


def assert_same(a: dict, b: dict, dtype):
    assert a.keys() == b.keys()
    for k in a:
        if a[k] is None:
            assert b[k] is None, k
            continue
        assert b[k] is not None, k
        if a[k].dtype in (torch.int64,):
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(b[k], a[k], **TOL[dtype], msg=lambda m: f"{k}: {m}")


CONFIGS = [
    pytest.param(dict(), id="1layer"),
    pytest.param(dict(num_layers=2), id="stacked2"),
    pytest.param(dict(num_layers=3, batch_first=True), id="stacked3-batch_first"),
    pytest.param(dict(bidirectional=True), id="bidirectional"),
    pytest.param(dict(num_layers=2, bidirectional=True, batch_first=True), id="bi-stacked-bf"),
    pytest.param(dict(num_layers=2, bias=False), id="no-bias"),
    pytest.param(dict(num_layers=2, dropout=0.5), id="dropout-eval"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kw", CONFIGS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("with_states", [False, True], ids=["no-h0", "h0"])
def test_parity_padded(cell, kw, dtype, with_states):
    ref, fast = pair(cell, dtype, **kw)
    if kw.get("dropout"):
        ref.eval(), fast.eval()
    assert fast.fastlstm_unsupported(torch.zeros(1, 1, I, dtype=dtype)) is None
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1)
    torch.manual_seed(1)
    x = leaf(*((B, T, I) if kw.get("batch_first") else (T, B, I)), dtype=dtype)
    n_states = 2 if cell == "lstm" else 1
    hx = [leaf(L * D, B, H, dtype=dtype) for _ in range(n_states)] if with_states else None
    assert_same(run(ref, x, hx, cell), run(fast, x, hx, cell), dtype)


PACKED_CONFIGS = [pytest.param(dict(), id="1layer"),
                  pytest.param(dict(num_layers=2, bidirectional=True), id="bi-stacked"),
                  pytest.param(dict(num_layers=3, batch_first=True), id="stacked3-bf")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kw", PACKED_CONFIGS)
@pytest.mark.parametrize("cell", CELLS)
def test_parity_packed_unsorted(cell, kw, dtype):
    """PackedSequence with unsorted lengths (enforce_sorted=False): packed output with the same
    batch_sizes and indices, states in the caller's batch order, every gradient."""
    ref, fast = pair(cell, dtype, **kw)
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1)
    bf = kw.get("batch_first", False)
    torch.manual_seed(2)
    lengths = torch.tensor([3, 5, 1, 4])
    Bp = len(lengths)
    xs = leaf(*((Bp, T, I) if bf else (T, Bp, I)), dtype=dtype)
    hx = [leaf(L * D, Bp, H, dtype=dtype) for _ in range(2 if cell == "lstm" else 1)]
    assert_same(*run_packed((ref, fast), xs, lengths, bf, hx, cell), dtype)


def run_packed(modules, xs, lengths, batch_first, hx, cell):
    """:func:`run` of each module on ``xs`` packed with unsorted ``lengths``; grad_x is the
    gradient of the padded ``xs``."""
    results = []
    for m in modules:
        xs.grad = None
        packed = pack_padded_sequence(xs, lengths, batch_first=batch_first,
                                      enforce_sorted=False)
        got = run(m, packed, hx, cell)
        got["grad_x"] = xs.grad.clone()
        results.append(got)
    return results


@pytest.mark.parametrize("cell", CELLS)
def test_parity_pack_sequence_sorted(cell):
    """pack_sequence with enforce_sorted=True (no sorted_indices) and no initial state."""
    from torch.nn.utils.rnn import pack_sequence
    ref, fast = pair(cell, torch.float64, bidirectional=True)
    seqs = [leaf(n, I, dtype=torch.float64) for n in (5, 3, 3, 1)]
    results = []
    for m in (ref, fast):
        for q in seqs:
            q.grad = None
        got = run(m, pack_sequence(seqs, enforce_sorted=True), None, cell)
        got["grad_x"] = torch.cat([q.grad for q in seqs])
        results.append(got)
    assert results[1]["sorted_indices"] is None
    assert_same(*[{k: v for k, v in r.items() if k not in ("sorted_indices",
                                                          "unsorted_indices")}
                  for r in results], torch.float64)


@pytest.mark.parametrize("cell", CELLS)
def test_parity_unbatched_input(cell):
    ref, fast = pair(cell, torch.float64, num_layers=2)
    x = leaf(T, I, dtype=torch.float64)
    hx = [leaf(2, H, dtype=torch.float64) for _ in range(2 if cell == "lstm" else 1)]
    assert_same(run(ref, x, hx, cell), run(fast, x, hx, cell), torch.float64)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tbf", "bf"])
def test_dropout_in_training_draws_torchs_masks(cell, packed, batch_first):
    """Dropout between layers uses torch's RNG exactly as nn.LSTM does: the same seed gives
    the same masks, so the same outputs and gradients."""
    ref, fast = pair(cell, torch.float64, num_layers=3, dropout=0.5, bidirectional=True,
                     batch_first=batch_first)
    check_dropout_masks(ref, fast, packed, cell)


def check_dropout_masks(ref, fast, packed: bool, cell: str):
    """ref and fast (float64, dropout between layers, training) give the same outputs and
    gradients from the same seed, and fast another output from another seed."""
    batch_first = fast.batch_first
    x = leaf(*((B, T, I) if batch_first else (T, B, I)), dtype=torch.float64)
    results = []
    for m in (ref, fast):
        x.grad = None
        xin = pack_padded_sequence(x, torch.tensor([2, 5, 3]), batch_first=batch_first,
                                   enforce_sorted=False) if packed else x
        torch.manual_seed(123)
        got = run(m, xin, None, cell)
        if packed:
            got["grad_x"] = x.grad.clone()
        results.append(got)
    assert_same(*results, torch.float64)
    # and the masks are really drawn: another seed gives another output
    if packed:
        xin = pack_padded_sequence(x, torch.tensor([2, 5, 3]), batch_first=batch_first,
                                   enforce_sorted=False)
    torch.manual_seed(124)
    other = run(fast, xin, None, cell)["output"]
    assert not torch.allclose(other, results[1]["output"])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("kw", [pytest.param(dict(num_layers=2, bidirectional=True), id="bi2"),
                                pytest.param(dict(batch_first=True), id="bf"),
                                pytest.param(dict(packed=True, bidirectional=True),
                                             id="packed-bi")])
def test_gradcheck_float64(cell, kw):
    """torch.autograd.gradcheck through the module, with the parameters as inputs."""
    kw = dict(kw)
    packed = kw.pop("packed", False)
    _, fast = pair(cell, torch.float64, **kw)
    gradcheck_module(fast, packed, [H] * (2 if cell == "lstm" else 1))


def gradcheck_module(fast, packed: bool, widths):
    """gradcheck of a float64 drop-in on a small input (packed with lengths 2, 3 or padded)
    with the initial states (last dimensions ``widths``: [h, c] or [h]) and every parameter
    as inputs."""
    lstm = len(widths) == 2
    D = 2 if fast.bidirectional else 1
    L = fast.num_layers
    names = [n for n, _ in fast.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in fast.parameters()]
    Tg, Bg = 3, 2
    x = leaf(*((Bg, Tg, I) if fast.batch_first else (Tg, Bg, I)), dtype=torch.float64)
    states = [leaf(L * D, Bg, w, dtype=torch.float64) for w in widths]
    lengths = torch.tensor([2, 3])

    def f(x, *rest):
        st, ps = rest[:len(states)], rest[len(states):]
        inp = pack_padded_sequence(x, lengths, batch_first=fast.batch_first,
                                   enforce_sorted=False) if packed else x
        hx = tuple(st) if lstm else st[0]
        out, h = torch.func.functional_call(fast, dict(zip(names, ps)), (inp, hx))
        data = out.data if packed else out
        return (data,) + (tuple(h) if lstm else (h,))

    assert fast.fastlstm_unsupported(x) is None
    # full Jacobians for the single layer; random projections (fast_mode) for the bigger ones
    assert torch.autograd.gradcheck(f, (x, *states, *params), eps=1e-6, atol=1e-6,
                                   fast_mode=bool(packed or L > 1))


@pytest.mark.parametrize("cell", CELLS)
def test_double_backward_falls_back_to_torch_ops(cell):
    """create_graph=True: the backward is recomputed with torch operations, so second
    derivatives exist and equal nn.LSTM's."""
    ref, fast = pair(cell, torch.float64, num_layers=2, bidirectional=True)
    x = leaf(T, B, I, dtype=torch.float64)
    res = []
    for m in (ref, fast):
        out, _ = m(x)
        g, = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        res.append(torch.autograd.grad(g.square().sum(), [x] + list(m.parameters())))
    for a, b in zip(*res):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("case", ["float16", "bfloat16", "meta", "empty"])
def test_fallback_to_torch(cell, case):
    """What the kernels do not cover runs torch's implementation: same results, no error;
    fastlstm_unsupported() says why. (proj_size runs the kernels: tests/test_torch_proj.py.)"""
    ref, fast = pair(cell)
    x = torch.randn(T, B, I)
    if case in ("float16", "bfloat16"):
        dt = getattr(torch, case)
        ref, fast, x = ref.to(dt), fast.to(dt), x.to(dt)
    if case == "meta":
        ref, fast, x = ref.to("meta"), fast.to("meta"), x.to("meta")
    if case == "empty":
        x = torch.randn(T, 0, I)
    reason = fast.fastlstm_unsupported(x)
    assert reason is not None
    assert {"float16": "dtype", "bfloat16": "dtype", "meta": "device",
            "empty": "empty"}[case] in reason
    a, b = ref(x), fast(x)
    if case == "meta":
        assert b[0].shape == a[0].shape and b[0].device.type == "meta"
    else:
        assert a[0].shape == b[0].shape and torch.equal(a[0], b[0])


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_fallback_under_tracing_exports_torchs_op():
    _, fast = pair("lstm")
    traced = torch.jit.trace(fast, torch.randn(T, B, I))
    assert "aten::lstm" in str(traced.graph)


def test_kernel_path_is_taken_and_saves_inputs_without_copies():
    """The forward saves the caller's tensors (no copy): modifying a weight in place between
    forward and backward is refused by autograd's version counter, as for nn.LSTM."""
    _, fast = pair("lstm")
    x = leaf(T, B, I, dtype=torch.float32)
    out, _ = fast(x)
    assert type(out.grad_fn).__name__ == "_LSTMFunctionBackward"
    with torch.no_grad():
        fast.weight_hh_l0.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize("cell", CELLS)
def test_no_grad_runs_inference_kernels(cell):
    ref, fast = pair(cell, num_layers=2)
    x = torch.randn(T, B, I)
    with torch.no_grad():
        a, b = ref(x), fast(x)
    assert b[0].grad_fn is None
    torch.testing.assert_close(b[0], a[0], **TOL[torch.float32])


def test_state_dict_round_trip_and_to_dtype():
    ref, fast = pair("lstm", num_layers=2, bidirectional=True)
    assert list(fast.state_dict()) == list(ref.state_dict())
    back = nn.LSTM(I, H, num_layers=2, bidirectional=True)
    back.load_state_dict(fast.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    fast64 = fast.to(torch.float64)
    assert fast64.weight_ih_l0.dtype == torch.float64
    x = torch.randn(T, B, I, dtype=torch.float64)
    assert fast64.fastlstm_unsupported(x) is None
    torch.testing.assert_close(fast64(x)[0], ref.double()(x)[0], **TOL[torch.float64])


class Custom(nn.LSTM):
    pass


def test_convert_nested_modules_in_place():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(I, H, num_layers=2, batch_first=True)
            self.blocks = nn.ModuleList([nn.Sequential(nn.GRU(H, H, bidirectional=True))])
            self.side = Custom(I, H)  # a user's subclass: its forward may differ, left alone

        def forward(self, x):
            y, _ = self.rnn(x)
            y, _ = self.blocks[0][0](y)
            return y

    torch.manual_seed(0)
    model = nn.Sequential(Encoder(), nn.Linear(2 * H, 3))
    before = {id(p) for p in model.parameters()}
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x = torch.randn(B, T, I)
    expected = model(x)
    assert ft.convert(model) is model
    assert type(model[0].rnn) is ft.LSTM and type(model[0].blocks[0][0]) is ft.GRU
    assert type(model[0].side) is Custom
    assert {id(p) for p in model.parameters()} == before
    got = model(x)
    torch.testing.assert_close(got, expected, **TOL[torch.float32])
    assert "_GRUFunctionBackward" in str(got.grad_fn.next_functions) or got.requires_grad
    got.sum().backward()
    opt.step()  # the optimizer built before convert() updates the same parameters
    assert model[0].rnn.fastlstm_unsupported(x) is None
    assert ft.convert(nn.GRU(I, H)).__class__ is ft.GRU  # the root itself


@pytest.mark.parametrize("cell", CELLS)
def test_training_loss_curve_matches(cell):
    """A few Adam steps of RNN + Linear: the same losses as with torch's module."""
    losses = []
    for cls in CELLS[cell]:
        torch.manual_seed(0)
        rnn, lin = cls(I, H, batch_first=True), nn.Linear(H, 3)
        opt = torch.optim.Adam(list(rnn.parameters()) + list(lin.parameters()), 1e-2)
        gen = torch.Generator().manual_seed(5)
        run_losses = []
        for _ in range(8):
            x, y = torch.randn(8, T, I, generator=gen), torch.randint(0, 3, (8,), generator=gen)
            opt.zero_grad()
            out, _ = rnn(x)
            loss = nn.functional.cross_entropy(lin(out[:, -1]), y)
            loss.backward()
            opt.step()
            run_losses.append(loss.item())
        losses.append(run_losses)
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def _omp_max_threads():
    lib = ctypes.CDLL(ctypes.util.find_library("gomp") or "libgomp.so.1")
    return lib.omp_get_max_threads()


@pytest.mark.parametrize("cell", CELLS)
def test_threads_follow_torch_and_change_no_global_setting(cell):
    ref, fast = pair(cell, torch.float64, num_layers=2)
    x = leaf(T, B, I, dtype=torch.float64)
    before = torch.get_num_threads(), _omp_max_threads()
    a = run(fast, x, None, cell)
    assert fast._threads() == torch.get_num_threads()
    fast.num_threads = 1
    assert fast._threads() == 1
    b = run(fast, x, None, cell)
    for k in a:  # bitwise: the kernels' results do not depend on the thread count
        assert a[k] is None or torch.equal(a[k], b[k]), k
    assert (torch.get_num_threads(), _omp_max_threads()) == before
    assert ft.LSTM(I, H, num_threads=2).num_threads == 2


def test_importing_fastlstm_does_not_import_torch(tmp_path):
    code = ("import fastlstm, fastlstm.layers, fastlstm.model, sys; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    run_ = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=child_env())
    assert run_.returncode == 0, run_.stderr
