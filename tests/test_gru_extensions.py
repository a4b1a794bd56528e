"""The extended GRU: layer normalisation (``ln_gain_ih``, ``ln_gain_hh``) and a recurrent
dropout mask (``recurrent_mask``), in the C kernels (``fastlstm.gru``) and the reference."""

from __future__ import annotations

import ctypes
from itertools import product

import numpy as np
import pytest

import fastlstm
from fastlstm import _checks
from fastlstm import rnn as rnn_module
from fastlstm import reference as ref
from testkit import (DTYPES, FD_EPS, GRU_GRAD_NAMES, THREADS, TOL, _assert_within,
                      assert_close, assert_close_fd, assert_results_close, assert_results_equal,
                      make_gru_problem, make_upstream)

OUT_NAMES = ("output", "h_n")
LN_GRAD_NAMES = GRU_GRAD_NAMES + ("ln_gain_ih", "ln_gain_hh")
F64 = np.float64

# (layer norm, mask, linear_before_reset): every allowed combination that is not the plain GRU
COMBOS = [pytest.param(ln, mask, lbr, id=f"{'ln' if ln else 'noln'}-"
                       f"{'mask' if mask else 'nomask'}-{'lbr' if lbr else 'orig'}")
          for ln, mask, lbr in [(False, True, True), (True, False, True), (True, True, True),
                                (False, True, False)]]


def extend(p: dict, layer_norm: bool, mask: bool, seed: int = 5, p_drop: float = 0.3) -> dict:
    """p with random gains around 1 and a scaled 0 / 1/(1-p) mask, in p's dtype."""
    rng = np.random.default_rng(seed)
    dt = p["x"].dtype
    B = p["x"].shape[0] if p["batch_first"] else p["x"].shape[1]
    H = p["weight_hh"].shape[1]
    q = dict(p)
    if layer_norm:
        q["ln_gain_ih"] = rng.uniform(0.5, 1.5, 3 * H).astype(dt)
        q["ln_gain_hh"] = rng.uniform(0.5, 1.5, 3 * H).astype(dt)
    if mask:
        q["recurrent_mask"] = ((rng.random((B, H)) >= p_drop) / (1 - p_drop)).astype(dt)
    return q


def problem(T, B, I, H, dtype, layer_norm, mask, lbr, seed=0, p_drop=0.3, **kw) -> dict:
    p = make_gru_problem(T, B, I, H, dtype, seed=seed, linear_before_reset=lbr, **kw)
    return extend(p, layer_norm, mask, seed=seed + 100, p_drop=p_drop)


def grad_names(p: dict) -> tuple:
    return LN_GRAD_NAMES if "ln_gain_ih" in p else GRU_GRAD_NAMES


# float32 gradients: the table's atol times 5. The layer norm's 1/std (about 3 here) and the
# mask's 1/(1-p) each scale the float32 rounding of every step on its way back; measured worst
# 1.8e-6 * max|expected| over the sweep below (float64 stays at the table's TOL).
TOL_F32_GRADS = dict(rtol=TOL[np.float32]["rtol"], atol=5 * TOL[np.float32]["atol"])


def assert_grads_close(actual, expected, names, dtype) -> None:
    """assert_results_close, with TOL_F32_GRADS for float32."""
    if dtype != np.float32:
        assert_results_close(actual, expected, names, dtype, "d")
        return
    for name in names:
        a = getattr(actual, name)
        assert a.dtype == np.float32, f"d{name}: dtype {a.dtype}"
        _assert_within(a, getattr(expected, name), TOL_F32_GRADS["rtol"],
                       TOL_F32_GRADS["atol"], "d" + name, "float32")


# ----------------------------------------------------------------------------------------------
# Kernel against the reference
# ----------------------------------------------------------------------------------------------

SWEEP = [pytest.param(B, lengths, bf, id=f"B{B}-{'lengths' if lengths else 'full'}-"
                      f"{'bf' if bf else 'tm'}")
         for B, lengths, bf in product((1, 3, 9, 33), (False, True), (False, True))]


@pytest.mark.parametrize("B,with_lengths,batch_first", SWEEP)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer_norm,mask,lbr", COMBOS)
def test_kernel_matches_reference(layer_norm, mask, lbr, dtype, B, with_lengths, batch_first,
                                  num_threads):
    seed = B + 10 * with_lengths + 20 * batch_first
    num_threads(THREADS[seed % len(THREADS)])
    p = problem(4, B, 5, 7, dtype, layer_norm, mask, lbr, seed=seed,
                with_lengths=with_lengths, batch_first=batch_first)
    up = make_upstream(p, seed=seed + 1)
    out, expected = fastlstm.gru(**p), ref.gru(**p)
    assert_results_close(out, expected, OUT_NAMES, dtype)
    grads, expected_grads = out.backward(**up), expected.backward(**up)
    assert_grads_close(grads, expected_grads, grad_names(p), dtype)
    if not layer_norm:
        assert grads.ln_gain_ih is None and grads.ln_gain_hh is None


@pytest.mark.parametrize("shape", [(6, 13, 28, 33), (1, 1, 1, 1), (3, 2, 1, 2)],
                         ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer_norm,mask,lbr", COMBOS)
def test_kernel_matches_reference_other_shapes(layer_norm, mask, lbr, dtype, shape, num_threads):
    """H = 33 and I = 28: more than one GEMM panel, vector bodies plus scalar tails; and the
    smallest sizes (H = 1: a layer norm over 3 values)."""
    num_threads(2)
    T, B, I, H = shape
    p = problem(T, B, I, H, dtype, layer_norm, mask, lbr, seed=3, with_lengths=B > 1)
    up = make_upstream(p, seed=4)
    out, expected = fastlstm.gru(**p), ref.gru(**p)
    assert_results_close(out, expected, OUT_NAMES, dtype)
    assert_grads_close(out.backward(**up), expected.backward(**up), grad_names(p), dtype)


@pytest.mark.parametrize("layer_norm,mask,lbr", COMBOS)
def test_inference_equals_training_forward(layer_norm, mask, lbr):
    for dtype in DTYPES:
        p = problem(5, 9, 6, 11, dtype, layer_norm, mask, lbr, seed=8, with_lengths=True)
        a, b = fastlstm.gru(**p), fastlstm.gru(**p, training=False)
        assert_results_equal(a, b, OUT_NAMES)


@pytest.mark.parametrize("layer_norm,mask,lbr", COMBOS)
def test_backward_twice_is_identical(layer_norm, mask, lbr):
    p = problem(4, 5, 3, 6, F64, layer_norm, mask, lbr, seed=9)
    out, up = fastlstm.gru(**p), make_upstream(p, seed=10)
    assert_results_equal(out.backward(**up), out.backward(**up), grad_names(p))


# ----------------------------------------------------------------------------------------------
# Finite differences (float64), on the reference and on the kernel
# ----------------------------------------------------------------------------------------------

def fd_check(run, p: dict, up: dict) -> None:
    """Every gradient of ``run(p)`` (reference or kernel) against central differences of the
    loss sum(output * grad_output) + sum(h_n * grad_h_n)."""
    def loss(q):
        out = run(q)
        return float(np.sum(out.output * up["grad_output"]) + np.sum(out.h_n * up["grad_h_n"]))

    grads = run(p).backward(**up)
    for name in grad_names(p):
        base = p[name]
        numeric = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            q = dict(p)
            q[name] = base.copy()
            q[name][idx] += FD_EPS
            plus = loss(q)
            q[name][idx] -= 2 * FD_EPS
            numeric[idx] = (plus - loss(q)) / (2 * FD_EPS)
        assert np.any(numeric != 0), f"{name}: gradient is all zero"
        assert_close_fd(getattr(grads, name), numeric, name)


FD_CASES = [pytest.param(dict(lengths=None, batch_first=False), id="full"),
            pytest.param(dict(lengths=[3, 1], batch_first=True), id="lengths-bf")]


@pytest.mark.parametrize("impl", ["reference", "kernel"])
@pytest.mark.parametrize("cfg", FD_CASES)
@pytest.mark.parametrize("layer_norm,mask,lbr", COMBOS)
def test_gradients_match_finite_differences(layer_norm, mask, lbr, cfg, impl):
    p = problem(3, 2, 3, 4, F64, layer_norm, mask, lbr, seed=11, batch_first=cfg["batch_first"],
                p_drop=0.25)
    if cfg["lengths"] is not None:
        p["lengths"] = np.array(cfg["lengths"])
    run = ref.gru if impl == "reference" else fastlstm.gru
    fd_check(lambda q: run(**q), p, make_upstream(p, seed=12))


# ----------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer_norm,mask,lbr", COMBOS)
def test_bitwise_identical_for_any_thread_count(layer_norm, mask, lbr, dtype, num_threads):
    p = problem(5, 33, 9, 19, dtype, layer_norm, mask, lbr, seed=13, with_lengths=True)
    up = make_upstream(p, seed=14)
    results = []
    for n in THREADS:
        num_threads(n)
        out = fastlstm.gru(**p)
        results.append((out, out.backward(**up)))
    for out, grads in results[1:]:
        assert_results_equal(out, results[0][0], OUT_NAMES)
        assert_results_equal(grads, results[0][1], grad_names(p), "d")


# ----------------------------------------------------------------------------------------------
# Properties of the two features
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("which", ["weight_ih", "weight_hh"])
def test_layer_norm_is_invariant_to_weight_scale(which, mask):
    """LN(c v) = LN(v) for c > 0, up to eps: (var + eps/c^2 vs var + eps) changes the output
    by about eps / (2 var), so the weights are scaled up to make var >> eps."""
    p = problem(4, 3, 5, 7, F64, True, mask, True, seed=15, weight_scale=30.0)
    base = fastlstm.gru(**p)
    q = dict(p, **{which: p[which] * 3.5})
    scaled = fastlstm.gru(**q)
    for name in OUT_NAMES:
        np.testing.assert_allclose(getattr(scaled, name), getattr(base, name), rtol=1e-6,
                                   atol=1e-7, err_msg=name)
    plain = {k: v for k, v in p.items() if not k.startswith("ln_gain")}
    moved = fastlstm.gru(**dict(plain, **{which: q[which]})).output - fastlstm.gru(**plain).output
    assert np.max(np.abs(moved)) > 1e-3  # without layer norm the scale does matter


@pytest.mark.parametrize("lbr", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_mask_of_ones_equals_no_mask(lbr, batch_first):
    p = make_gru_problem(4, 6, 5, 9, F64, seed=16, with_lengths=True, batch_first=batch_first,
                         linear_before_reset=lbr)
    up = make_upstream(p, seed=17)
    plain = fastlstm.gru(**p)
    ones = fastlstm.gru(**p, recurrent_mask=np.ones((6, 9)))
    assert_results_close(ones, plain, OUT_NAMES, F64)
    assert_results_close(ones.backward(**up), plain.backward(**up), GRU_GRAD_NAMES, F64, "d")


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


@pytest.mark.parametrize("layer_norm", [False, True])
def test_zero_mask_leaves_only_the_hidden_bias(layer_norm):
    """m = 0, linear_before_reset: the hidden side is b_hh alone (LN of a zero row is zero),
    so each step is r, z = sigmoid(a_x + b_h), n = tanh(a_x_n + r b_hn) -- written out here."""
    T, B, I, H = 4, 3, 5, 6
    p = problem(T, B, I, H, F64, layer_norm, False, True, seed=18)
    p["recurrent_mask"] = np.zeros((B, H))
    out = fastlstm.gru(**p)
    h = p["h0"].copy()
    b_hr, b_hz, b_hn = np.split(p["bias_hh"], 3)
    for t in range(T):
        v = p["x"][t] @ p["weight_ih"].T
        if layer_norm:
            mu, var = v.mean(1, keepdims=True), v.var(1, keepdims=True)
            v = p["ln_gain_ih"] * (v - mu) / np.sqrt(var + 1e-5)
        a_r, a_z, a_n = np.split(v + p["bias_ih"], 3, axis=1)
        r, z = _sigmoid(a_r + b_hr), _sigmoid(a_z + b_hz)
        n = np.tanh(a_n + r * b_hn)
        h = (1 - z) * n + z * h
        assert_close(out.output[t], h, F64, f"output[{t}]")
    assert_close(out.h_n, h, F64, "h_n")


@pytest.mark.parametrize("layer_norm,lbr", [(False, True), (True, True), (False, False)])
def test_mask_equals_weight_hh_with_masked_columns(layer_norm, lbr):
    """Keras' view of a recurrent mask (B = 1): W_hh (m * h) = (W_hh diag(m)) h, so the
    masked kernel is the unmasked reference with W_hh's columns scaled by m, and its dW_hh is
    that run's dW_hh times m (the chain rule through the scaled columns)."""
    p = problem(5, 1, 4, 6, F64, layer_norm, True, lbr, seed=19)
    m = p.pop("recurrent_mask")
    up = make_upstream(p, seed=20)
    masked = fastlstm.gru(**p, recurrent_mask=m)
    keras = ref.gru(**dict(p, weight_hh=p["weight_hh"] * m[0]))
    assert_results_close(masked, keras, OUT_NAMES, F64)
    g, gk = masked.backward(**up), keras.backward(**up)
    names = tuple(n for n in grad_names(p) if n != "weight_hh")
    assert_results_close(g, gk, names, F64, "d")
    assert_close(g.weight_hh, gk.weight_hh * m[0], F64, "dweight_hh")


def test_neither_feature_is_the_plain_kernel():
    p = make_gru_problem(4, 5, 3, 6, F64, seed=21)
    up = make_upstream(p, seed=22)
    a = fastlstm.gru(**p)
    b = fastlstm.gru(**p, ln_gain_ih=None, ln_gain_hh=None, recurrent_mask=None)
    assert a._ext is None and b._ext is None
    assert_results_equal(a, b, OUT_NAMES)
    g = b.backward(**up)
    assert g.ln_gain_ih is None and g.ln_gain_hh is None
    assert_results_equal(a.backward(**up), g, GRU_GRAD_NAMES)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer_norm,mask,lbr", COMBOS)
def test_empty_batch(layer_norm, mask, lbr, dtype):
    p = problem(3, 0, 4, 5, dtype, layer_norm, mask, lbr, seed=23)
    out = fastlstm.gru(**p)
    assert out.output.shape == (3, 0, 5) and out.h_n.shape == (0, 5)
    g = out.backward()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") + (
            ("ln_gain_ih", "ln_gain_hh") if layer_norm else ()):
        assert not np.any(getattr(g, name)), name


def test_memory_guard_counts_the_extension_buffers(monkeypatch):
    """The guard's estimate grows by the extension's buffers: per (step, sequence) H for the
    masked h and 13 H for the layer norm's saved rows and gradients."""
    seen = []
    monkeypatch.setattr(_checks, "memory", lambda nbytes, what: seen.append(nbytes))
    p = make_gru_problem(10, 4, 3, 8, F64, seed=24)
    fastlstm.gru(**p)
    fastlstm.gru(**extend(p, True, True))
    assert seen[1] - seen[0] == pytest.approx(10 * 4 * 14 * 8 * 8)
    assert rnn_module.chk.memory is not None


# ----------------------------------------------------------------------------------------------
# Bad arguments: each error names the argument
# ----------------------------------------------------------------------------------------------

BAD = [
    pytest.param("ln_gain_ih", lambda a: a[:-1], ValueError, "ln_gain_ih must have shape",
                 id="gain_ih-short"),
    pytest.param("ln_gain_hh", lambda a: a.reshape(3, -1), ValueError,
                 "ln_gain_hh must have shape", id="gain_hh-2d"),
    pytest.param("ln_gain_ih", lambda a: a.astype(np.float32), TypeError,
                 "ln_gain_ih has dtype float32", id="gain_ih-dtype"),
    pytest.param("ln_gain_hh", lambda a: a.astype(np.int64), TypeError,
                 "ln_gain_hh must have dtype", id="gain_hh-int"),
    pytest.param("recurrent_mask", lambda a: a.T, ValueError, "recurrent_mask must have shape",
                 id="mask-transposed"),
    pytest.param("recurrent_mask", lambda a: a[0], ValueError, "recurrent_mask must have shape",
                 id="mask-1d"),
    pytest.param("recurrent_mask", lambda a: a.astype(np.float32), TypeError,
                 "recurrent_mask has dtype float32", id="mask-dtype"),
    pytest.param("recurrent_mask", lambda a: a > 0, TypeError,
                 "recurrent_mask must have dtype", id="mask-bool"),
]


@pytest.mark.parametrize("name,change,exc,message", BAD)
def test_bad_new_arguments_name_the_argument(name, change, exc, message):
    p = problem(3, 4, 5, 6, F64, True, True, True, seed=25)
    p[name] = change(p[name])
    with pytest.raises(exc, match=message):
        fastlstm.gru(**p)


@pytest.mark.parametrize("run", [fastlstm.gru, ref.gru], ids=["kernel", "reference"])
def test_layer_norm_needs_linear_before_reset(run):
    p = problem(3, 4, 5, 6, F64, True, False, False, seed=26)
    with pytest.raises(ValueError, match="linear_before_reset=True"):
        run(**p)


@pytest.mark.parametrize("run", [fastlstm.gru, ref.gru], ids=["kernel", "reference"])
@pytest.mark.parametrize("missing", ["ln_gain_ih", "ln_gain_hh"])
def test_one_gain_alone_names_the_missing_one(run, missing):
    p = problem(3, 4, 5, 6, F64, True, False, True, seed=27)
    del p[missing]
    with pytest.raises(ValueError, match=f"{missing} is missing"):
        run(**p)


@pytest.mark.parametrize("name", ["ln_gain_ih", "recurrent_mask"])
def test_reference_rejects_wrong_shapes(name):
    p = problem(3, 4, 5, 6, F64, True, True, True, seed=28)
    p[name] = p[name][..., :-1]
    with pytest.raises(ValueError, match=name):
        ref.gru(**p)


def test_c_size_query_refuses_layer_norm_without_linear_before_reset():
    from fastlstm import _core
    with pytest.raises(_core.KernelError):
        _core.grux_reserve_size(3, 4, 5, 6, 8, False, True, False)


# ----------------------------------------------------------------------------------------------
# Layouts, padding, and the C API's rules
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer_norm,mask,lbr", COMBOS)
def test_padding_past_the_end_is_never_read(layer_norm, mask, lbr):
    """x past a sequence's end may be padding, NaN included (what a packed batch holds)."""
    p = problem(5, 4, 3, 6, F64, layer_norm, mask, lbr, seed=29)
    p["lengths"] = np.array([5, 2, 1, 4])
    up = make_upstream(p, seed=30)
    padded = dict(p, x=p["x"].copy())
    for b, n in enumerate(p["lengths"]):
        padded["x"][n:, b] = np.nan
    a, b_ = fastlstm.gru(**p), fastlstm.gru(**padded)
    assert_results_equal(b_, a, OUT_NAMES)
    assert_results_equal(b_.backward(**up), a.backward(**up), grad_names(p))


def test_any_layout_of_the_new_arguments_gives_the_same_bits():
    p = problem(4, 5, 3, 6, F64, True, True, True, seed=31)
    up = make_upstream(p, seed=32)
    q = dict(p, recurrent_mask=np.asfortranarray(p["recurrent_mask"]),
             ln_gain_ih=np.repeat(p["ln_gain_ih"], 2)[::2])
    q["ln_gain_hh"] = p["ln_gain_hh"].copy()
    q["ln_gain_hh"].setflags(write=False)
    a, b = fastlstm.gru(**p), fastlstm.gru(**q)
    assert_results_equal(b, a, OUT_NAMES)
    assert_results_equal(b.backward(**up), a.backward(**up), LN_GRAD_NAMES)


def test_backward_sees_the_mask_and_gains_of_the_forward():
    """The forward keeps private copies: changing the caller's arrays in between (an
    optimizer step, a new dropout mask) does not change the gradients."""
    p = problem(4, 5, 3, 6, F64, True, True, True, seed=33)
    up = make_upstream(p, seed=34)
    q = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in p.items()}
    out = fastlstm.gru(**q)
    q["recurrent_mask"][:] = 0
    q["ln_gain_hh"][:] = 7
    assert_results_equal(out.backward(**up), fastlstm.gru(**p).backward(**up), LN_GRAD_NAMES)


class _Dims(ctypes.Structure):
    """fl_dims (fastlstm.h)."""
    _fields_ = [("seq_len", ctypes.c_int64), ("batch", ctypes.c_int64),
                ("input_size", ctypes.c_int64), ("hidden_size", ctypes.c_int64),
                ("batch_first", ctypes.c_int), ("n_threads", ctypes.c_int)]


def test_c_api_null_rules():
    """fl_grux_*: the gains (and their gradients) are given iff layer_norm, layer norm needs
    linear_before_reset, the mask may be NULL: anything else is FL_EINVAL (1), not a crash."""
    from fastlstm import _core
    lib = ctypes.CDLL(_core.__file__)
    T, B, I, H = 3, 2, 4, 5
    d = _Dims(T, B, I, H, 0, 1)
    p = problem(T, B, I, H, F64, True, True, True, seed=35)
    ptr = lambda a: None if a is None else a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    size = ctypes.c_size_t(0)
    for lbr, ln, ok in ((1, 1, 0), (0, 0, 0), (1, 0, 0), (0, 1, 1)):
        assert lib.fl_grux_reserve_bytes(ctypes.byref(d), 8, lbr, ln, 1, ctypes.byref(size)) == ok
    assert lib.fl_grux_reserve_bytes(ctypes.byref(d), 8, 1, 1, 1, None) == 1
    lib.fl_grux_reserve_bytes(ctypes.byref(d), 8, 1, 1, 1, ctypes.byref(size))
    reserve = np.empty(size.value // 8)
    y, h_n = np.empty((T, B, H)), np.empty((B, H))
    x, wi, wh, bi, bh = (p[k] for k in ("x", "weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    gi, gh, m = p["ln_gain_ih"], p["ln_gain_hh"], p["recurrent_mask"]

    def forward(lbr, ln, g_ih, g_hh, mask):
        return lib.fl_grux_forward_f64(ctypes.byref(d), lbr, ln, ptr(x), ptr(wi), ptr(wh),
                                       ptr(bi), ptr(bh), ptr(g_ih), ptr(g_hh), ptr(mask), None,
                                       None, ptr(y), ptr(h_n), ptr(reserve), None,
                                       ctypes.c_size_t(0))

    assert forward(1, 1, gi, None, m) == 1
    assert forward(1, 0, gi, gh, m) == 1
    assert forward(0, 1, gi, gh, m) == 1
    assert forward(1, 1, gi, gh, m) == 0
    np.testing.assert_array_equal(y, fastlstm.gru(**dict(p, h0=None)).output)
    grads = [np.empty_like(a) for a in (x, wi, wh, bi, bh, gi, gh, h_n)]

    def backward(dg_ih, dg_hh):
        dx, dwi, dwh, dbi, dbh, _, _, dh0 = grads
        return lib.fl_grux_backward_f64(ctypes.byref(d), 1, 1, ptr(x), ptr(wi), ptr(wh),
                                        ptr(gi), ptr(gh), ptr(m), None, ptr(reserve), None,
                                        None, ptr(dx), ptr(dwi), ptr(dwh), ptr(dbi), ptr(dbh),
                                        ptr(dg_ih), ptr(dg_hh), ptr(dh0), None,
                                        ctypes.c_size_t(0))

    assert backward(grads[5], None) == 1
    assert backward(grads[5], grads[6]) == 0


# ----------------------------------------------------------------------------------------------
# An independent peer: the same GRU written with torch's layer_norm and autograd
# ----------------------------------------------------------------------------------------------

def _torch_gru(t, a: dict, lbr: bool):
    """The extended GRU as one usually writes it in torch (float64, autograd): F.layer_norm
    with the gain as weight and the GRU bias as its bias."""
    F = t.nn.functional
    H = a["weight_hh"].shape[1]
    ln = "ln_gain_ih" in a
    m = a.get("recurrent_mask", t.ones_like(a["h0"]))
    vx = a["x"] @ a["weight_ih"].T
    gx = F.layer_norm(vx, (3 * H,), a["ln_gain_ih"], a["bias_ih"], 1e-5) if ln \
        else vx + a["bias_ih"]
    h, outs = a["h0"], []
    for step in range(a["x"].shape[0]):
        hm = m * h
        xr, xz, xn = gx[step].chunk(3, 1)
        if ln:
            gh = F.layer_norm(hm @ a["weight_hh"].T, (3 * H,), a["ln_gain_hh"], a["bias_hh"], 1e-5)
        else:
            gh = hm @ a["weight_hh"].T + a["bias_hh"]
        hr, hz, hn = gh.chunk(3, 1)
        r, z = t.sigmoid(xr + hr), t.sigmoid(xz + hz)
        if lbr:
            n = t.tanh(xn + r * hn)
        else:
            w_hn, b_hn = a["weight_hh"][2 * H:], a["bias_hh"][2 * H:]
            n = t.tanh(xn + (r * hm) @ w_hn.T + b_hn)
        h = (1 - z) * n + z * h
        outs.append(h)
    return t.stack(outs), h


@pytest.mark.parametrize("layer_norm,mask,lbr", COMBOS)
def test_matches_torch_autograd(layer_norm, mask, lbr):
    t = pytest.importorskip("torch")
    p = problem(5, 4, 3, 6, F64, layer_norm, mask, lbr, seed=36)
    up = make_upstream(p, seed=37)
    names = grad_names(p)
    a = {k: t.tensor(v, requires_grad=k in names) for k, v in p.items()
         if isinstance(v, np.ndarray)}
    y, h_n = _torch_gru(t, a, lbr)
    loss = (y * t.tensor(up["grad_output"])).sum() + (h_n * t.tensor(up["grad_h_n"])).sum()
    loss.backward()
    out = fastlstm.gru(**p)
    assert_close(out.output, y.detach().numpy(), F64, "output")
    assert_close(out.h_n, h_n.detach().numpy(), F64, "h_n")
    grads = out.backward(**up)
    for name in names:
        assert_close(getattr(grads, name), a[name].grad.numpy(), F64, "d" + name)
