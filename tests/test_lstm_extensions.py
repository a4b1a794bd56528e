"""The extended LSTM (projection, layer norm, recurrent mask): the C kernels against the NumPy
reference, both against finite differences and against torch.nn.LSTM(proj_size=P), thread
determinism, the invariances layer norm and the mask promise, and bad arguments."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from itertools import product

import numpy as np
import pytest

import fastlstm
from testkit import (FD_EPS, LSTM_GRAD_NAMES, assert_close, assert_close_fd,
                      assert_results_equal, random_lengths)
from fastlstm import reference as ref

OUT_NAMES = ("output", "h_n", "c_n")
EXT_GRAD_NAMES = ("weight_hr", "ln_gain_ih", "ln_gain_hh", "ln_gain_c", "ln_bias_c")
LN_NAMES = ("ln_gain_ih", "ln_gain_hh", "ln_gain_c", "ln_bias_c")
# (projection, layer norm, mask): all eight, the last the plain LSTM
COMBOS = [pytest.param(c, id="-".join(n for n, on in zip(("proj", "ln", "mask"), c) if on)
                       or "plain") for c in product((True, False), repeat=3)]
# float32 runs the layer norms' sums over 4H values and a longer chain (the projection) than
# the plain kernel: looser than testkit.TOL's float32 entry
TOL32 = dict(rtol=1e-4, atol=1e-5)


def make_problem(T: int, B: int, I: int, H: int, P: int, layer_norm: bool, mask: bool,
                 dtype=np.float64, seed: int = 0, lengths: bool = False,
                 batch_first: bool = False, weight_scale: float = 1.0) -> dict:
    """Random keyword arguments for ``lstm(**p)`` with the given extensions (P = 0: none)."""
    rng = np.random.default_rng(seed)
    R = P or H
    k = weight_scale / np.sqrt(H)

    def u(lo, hi, *shape):
        return rng.uniform(lo, hi, size=shape).astype(dtype)

    p = dict(x=u(-1, 1, *((B, T, I) if batch_first else (T, B, I))),
             weight_ih=u(-k, k, 4 * H, I), weight_hh=u(-k, k, 4 * H, R),
             bias_ih=u(-k, k, 4 * H), bias_hh=u(-k, k, 4 * H),
             h0=u(-0.5, 0.5, B, R), c0=u(-0.5, 0.5, B, H), batch_first=batch_first,
             lengths=random_lengths(rng, T, B) if lengths else None)
    if P:
        p["weight_hr"] = u(-k, k, P, H)
    if layer_norm:   # gains away from 1 and a bias away from 0, so a missing term shows
        p.update(ln_gain_ih=u(0.5, 1.5, 4 * H), ln_gain_hh=u(0.5, 1.5, 4 * H),
                 ln_gain_c=u(0.5, 1.5, H), ln_bias_c=u(-0.3, 0.3, H))
    if mask:         # dropout with p = 0.3, scaled
        p["recurrent_mask"] = ((rng.random((B, R)) > 0.3) / 0.7).astype(dtype)
    return p


def make_upstream(p: dict, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    x, H = p["x"], p["weight_ih"].shape[0] // 4
    R = p["weight_hh"].shape[1]
    B = x.shape[0] if p["batch_first"] else x.shape[1]
    return dict(grad_output=rng.standard_normal(x.shape[:2] + (R,)).astype(x.dtype),
                grad_h_n=rng.standard_normal((B, R)).astype(x.dtype),
                grad_c_n=rng.standard_normal((B, H)).astype(x.dtype))


def grad_names(p: dict) -> tuple:
    """The gradients a problem has (the extensions' only when given)."""
    return LSTM_GRAD_NAMES + tuple(n for n in EXT_GRAD_NAMES if p.get(n) is not None)


def check_close(actual, expected, dtype, name):
    if dtype == np.float64:
        assert_close(actual, expected, dtype, name)
    else:
        assert actual.dtype == np.float32, name
        np.testing.assert_allclose(actual, expected, err_msg=name, rtol=TOL32["rtol"],
                                   atol=TOL32["atol"] * max(1.0, np.abs(expected).max()))


# ----------------------------------------------------------------------------------------------
# Kernel vs reference
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", (np.float64, np.float32))
@pytest.mark.parametrize("B", (1, 3, 9, 33))
@pytest.mark.parametrize("lengths,batch_first", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("combo", COMBOS)
def test_kernel_matches_reference(combo, lengths, batch_first, B, dtype, num_threads):
    proj, ln, mask = combo
    num_threads(1 + B % 3)
    p = make_problem(5, B, 7, 9, 5 if proj else 0, ln, mask, dtype, seed=B, lengths=lengths,
                     batch_first=batch_first)
    up = make_upstream(p, seed=B + 1)
    out, expected = fastlstm.lstm(**p), ref.lstm(**p)
    for name in OUT_NAMES:
        check_close(getattr(out, name), getattr(expected, name), dtype, name)
    g, ge = out.backward(**up), expected.backward(**up)
    for name in grad_names(p):
        check_close(getattr(g, name), getattr(ge, name), dtype, "d" + name)
    for name in EXT_GRAD_NAMES:   # a feature that is off has no gradient
        assert (getattr(g, name) is None) == (p.get(name) is None), name


@pytest.mark.parametrize("combo", COMBOS[:-1])
def test_shapes_follow_pytorch_proj_size(combo):
    proj, ln, mask = combo
    T, B, I, H, P = 4, 3, 5, 7, 2
    p = make_problem(T, B, I, H, P if proj else 0, ln, mask, batch_first=True)
    out = fastlstm.lstm(**p)
    R = P if proj else H
    assert out.output.shape == (B, T, R) and out.h_n.shape == (B, R)
    assert out.c_n.shape == (B, H)
    g = out.backward(**make_upstream(p))
    assert g.weight_hh.shape == (4 * H, R) and g.h0.shape == (B, R) and g.c0.shape == (B, H)
    if proj:
        assert g.weight_hr.shape == (P, H)


def test_no_extension_is_the_plain_kernel_bit_for_bit():
    p = make_problem(5, 6, 7, 9, 0, False, False, lengths=True)
    up = make_upstream(p)
    plain = fastlstm.lstm(**p)
    explicit = fastlstm.lstm(**p, weight_hr=None, ln_gain_ih=None, ln_gain_hh=None,
                             ln_gain_c=None, ln_bias_c=None, recurrent_mask=None)
    assert type(plain) is type(explicit) is fastlstm.rnn.LSTMResult
    assert_results_equal(plain, explicit, OUT_NAMES)
    g = explicit.backward(**up)
    assert_results_equal(plain.backward(**up), g, LSTM_GRAD_NAMES)
    assert all(getattr(g, n) is None for n in EXT_GRAD_NAMES)


# ----------------------------------------------------------------------------------------------
# Finite differences (float64), on the reference and on the kernel
# ----------------------------------------------------------------------------------------------

PARAMS = ("x", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "h0", "c0") + EXT_GRAD_NAMES


def loss(impl, p: dict, up: dict) -> float:
    out = impl.lstm(**p)
    return float(np.sum(out.output * up["grad_output"]) + np.sum(out.h_n * up["grad_h_n"])
                 + np.sum(out.c_n * up["grad_c_n"]))


@pytest.mark.parametrize("impl", [pytest.param(ref, id="reference"),
                                  pytest.param(fastlstm, id="kernel")])
@pytest.mark.parametrize("combo", COMBOS[:-1])
def test_gradients_match_finite_differences(impl, combo):
    proj, ln, mask = combo
    p = make_problem(4, 3, 4, 5, 3 if proj else 0, ln, mask, seed=7, lengths=True)
    up = make_upstream(p, seed=8)
    g = impl.lstm(**p).backward(**up)
    rng = np.random.default_rng(9)
    for name in PARAMS:
        if p.get(name) is None:
            continue
        base = p[name]
        # every entry for the small parameters; 12 random entries of the larger ones
        flat = np.arange(base.size) if base.size <= 24 else rng.choice(base.size, 12, False)
        numeric = np.empty(flat.size)
        for k, idx in enumerate(flat):
            vals = []
            for sign in (1, -1):
                q = dict(p)
                q[name] = base.copy()
                q[name].flat[idx] += sign * FD_EPS
                vals.append(loss(impl, q, up))
            numeric[k] = (vals[0] - vals[1]) / (2 * FD_EPS)
        assert_close_fd(np.asarray(getattr(g, name)).flat[flat], numeric, name)


# ----------------------------------------------------------------------------------------------
# Determinism, invariances
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", (np.float64, np.float32))
@pytest.mark.parametrize("B", (1, 9, 40))
@pytest.mark.parametrize("combo", [(True, True, True), (False, True, False), (True, False, True)])
def test_bitwise_identical_for_any_thread_count(combo, B, dtype, num_threads):
    proj, ln, mask = combo
    p = make_problem(6, B, 11, 33, 17 if proj else 0, ln, mask, dtype, seed=3, lengths=True,
                     batch_first=B == 9)
    up = make_upstream(p, seed=4)
    results = []
    for n in (1, 2, 3):
        num_threads(n)
        out = fastlstm.lstm(**p)
        results.append((out, out.backward(**up)))
    for out, g in results[1:]:
        assert_results_equal(results[0][0], out, OUT_NAMES)
        assert_results_equal(results[0][1], g, grad_names(p))


@pytest.mark.parametrize("scaled", ("weight_ih", "weight_hh"))
@pytest.mark.parametrize("proj", (False, True))
def test_layer_norm_output_is_invariant_to_scaling_the_weights(proj, scaled):
    # weights ~30x PyTorch's scale: var(a) ~ 100 >> eps, so the scale changes the output by
    # ~eps/var only
    p = make_problem(5, 4, 6, 8, 3 if proj else 0, True, False, seed=11, weight_scale=30.0)
    out = fastlstm.lstm(**p)
    q = dict(p, **{scaled: p[scaled] * 3.0})
    out3 = fastlstm.lstm(**q)
    for name in OUT_NAMES:
        a, b = getattr(out, name), getattr(out3, name)
        assert np.max(np.abs(a - b)) <= 1e-6 * np.max(np.abs(a)), name


@pytest.mark.parametrize("dtype", (np.float64, np.float32))
@pytest.mark.parametrize("combo", [(False, False), (True, True), (True, False)])
def test_mask_of_ones_is_no_mask(combo, dtype):
    proj, ln = combo
    p = make_problem(5, 6, 7, 9, 4 if proj else 0, ln, True, dtype, seed=12, lengths=True)
    up = make_upstream(p, seed=13)
    ones = dict(p, recurrent_mask=np.ones_like(p["recurrent_mask"]))
    none = {k: v for k, v in p.items() if k != "recurrent_mask"}
    a, b = fastlstm.lstm(**ones), (fastlstm.lstm if (proj or ln) else ref.lstm)(**none)
    for name in OUT_NAMES:
        check_close(getattr(a, name), getattr(b, name), dtype, name)
    ga, gb = a.backward(**up), b.backward(**up)
    for name in grad_names(none):
        check_close(getattr(ga, name), getattr(gb, name), dtype, "d" + name)


@pytest.mark.parametrize("combo", [(False, False), (True, True)])
def test_zero_mask_makes_the_output_independent_of_h0(combo):
    proj, ln = combo
    p = make_problem(4, 5, 6, 7, 3 if proj else 0, ln, True, seed=14)
    p["recurrent_mask"] = np.zeros_like(p["recurrent_mask"])
    a = fastlstm.lstm(**p)
    b = fastlstm.lstm(**dict(p, h0=p["h0"] * -3.0 + 1.0))
    np.testing.assert_array_equal(a.output, b.output)
    np.testing.assert_array_equal(a.c_n, b.c_n)
    g = a.backward(**make_upstream(p))
    assert not np.any(g.h0) and not np.any(g.weight_hh)


# ----------------------------------------------------------------------------------------------
# torch.nn.LSTM(proj_size=P)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", [pytest.param(ref, id="reference"),
                                  pytest.param(fastlstm, id="kernel")])
@pytest.mark.parametrize("lengths,batch_first", [(False, False), (True, True)])
def test_projection_matches_torch(impl, lengths, batch_first):
    torch = pytest.importorskip("torch")
    T, B, I, H, P = 6, 5, 7, 9, 4
    p = make_problem(T, B, I, H, P, False, False, seed=21, lengths=lengths,
                     batch_first=batch_first)
    up = make_upstream(p, seed=22)
    module = torch.nn.LSTM(I, H, proj_size=P, batch_first=batch_first, dtype=torch.float64)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
            getattr(module, name + "_l0").copy_(torch.from_numpy(p[name]))
    leaf = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    x, h0, c0 = leaf(p["x"]), leaf(p["h0"]), leaf(p["c0"])
    if lengths:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.as_tensor(p["lengths"]), batch_first=batch_first, enforce_sorted=False)
        y, (h_n, c_n) = module(packed, (h0[None], c0[None]))
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=batch_first, total_length=T)
    else:
        y, (h_n, c_n) = module(x, (h0[None], c0[None]))
    t_loss = (torch.sum(y * torch.from_numpy(up["grad_output"]))
              + torch.sum(h_n[0] * torch.from_numpy(up["grad_h_n"]))
              + torch.sum(c_n[0] * torch.from_numpy(up["grad_c_n"])))
    t_loss.backward()
    out = impl.lstm(**p)
    g = out.backward(**up)
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.output, y.detach().numpy(), **tol)
    np.testing.assert_allclose(out.h_n, h_n[0].detach().numpy(), **tol)
    np.testing.assert_allclose(out.c_n, c_n[0].detach().numpy(), **tol)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
        np.testing.assert_allclose(getattr(g, name), getattr(module, name + "_l0").grad.numpy(),
                                   err_msg=name, **tol)
    for name, t in (("x", x), ("h0", h0), ("c0", c0)):
        np.testing.assert_allclose(getattr(g, name), t.grad.numpy(), err_msg=name, **tol)


# ----------------------------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------------------------

def full_problem(dtype=np.float64) -> dict:
    return make_problem(3, 4, 5, 6, 2, True, True, dtype, seed=31)


@pytest.mark.parametrize("impl", [pytest.param(ref, id="reference"),
                                  pytest.param(fastlstm, id="kernel")])
@pytest.mark.parametrize("name", ("weight_hr", "recurrent_mask") + LN_NAMES)
@pytest.mark.parametrize("change", ("rank", "rows", "cols"))
def test_wrong_shape_names_the_argument(impl, name, change):
    p = full_problem()
    a = p[name]
    if change == "rank":
        bad = a[None]
    elif change == "rows":
        bad = np.concatenate([a, a[:1]])
    else:
        bad = np.concatenate([a, a[..., :1]], axis=-1)
    with pytest.raises(ValueError, match=re.escape(name)):
        impl.lstm(**dict(p, **{name: bad}))


@pytest.mark.parametrize("name", ("weight_hr", "recurrent_mask") + LN_NAMES)
@pytest.mark.parametrize("bad_dtype", (np.float32, np.int64, np.complex128))
def test_wrong_dtype_names_the_argument(name, bad_dtype):
    p = full_problem()
    with pytest.raises(TypeError, match=re.escape(name)):
        fastlstm.lstm(**dict(p, **{name: p[name].astype(bad_dtype)}))


@pytest.mark.parametrize("impl", [pytest.param(ref, id="reference"),
                                  pytest.param(fastlstm, id="kernel")])
@pytest.mark.parametrize("given", [(0,), (0, 1, 2), (3,), (1, 3)])
def test_layer_norm_needs_all_four_or_none(impl, given):
    p = full_problem()
    missing = [n for k, n in enumerate(LN_NAMES) if k not in given]
    for n in missing:
        p[n] = None
    with pytest.raises(ValueError, match="layer norm needs all") as info:
        impl.lstm(**p)
    for n in missing:
        assert n in str(info.value)


@pytest.mark.parametrize("name,shape", [("weight_hh", (24, 6)), ("h0", (4, 6)),
                                        ("c0", (4, 2)), ("weight_ih", (23, 5))])
def test_projection_shapes_of_the_plain_arguments(name, shape):
    p = full_problem()   # H = 6, P = 2: weight_hh must be (24, 2), h0 (4, 2), c0 (4, 6)
    with pytest.raises(ValueError, match=re.escape(name)):
        fastlstm.lstm(**dict(p, **{name: np.zeros(shape)}))


@pytest.mark.parametrize("dtype", (np.float64, np.float32))
def test_backward_after_inference_raises(dtype):
    p = full_problem(dtype)
    out = fastlstm.lstm(**p, training=False)
    np.testing.assert_array_equal(out.output, fastlstm.lstm(**p).output)
    with pytest.raises(RuntimeError, match="training=True"):
        out.backward()


@pytest.mark.parametrize("name", ("grad_output", "grad_h_n", "grad_c_n"))
def test_backward_rejects_upstream_of_the_wrong_width(name):
    p = full_problem()
    up = make_upstream(p)
    bad = np.concatenate([up[name], up[name][..., :1]], axis=-1)
    with pytest.raises(ValueError, match=name):
        fastlstm.lstm(**p).backward(**dict(up, **{name: bad}))


@pytest.mark.parametrize("batch_first", (False, True))
def test_empty_batch(batch_first):
    p = make_problem(3, 0, 5, 6, 2, True, True, batch_first=batch_first)
    out = fastlstm.lstm(**p)
    assert out.output.shape == ((0, 3, 2) if batch_first else (3, 0, 2))
    g = out.backward()
    for name in ("weight_ih", "weight_hh", "bias_ih", "weight_hr") + LN_NAMES:
        assert not np.any(getattr(g, name)), name


def test_huge_problem_is_refused_by_the_memory_guard():
    p = make_problem(2, 2, 3, 4, 2, True, True)
    x = np.broadcast_to(np.zeros((), np.float64), (2**24, 2**14, 3))
    with pytest.raises((MemoryError, ValueError), match="sequence"):
        fastlstm.lstm(**dict(p, x=x, h0=None, c0=None,
                             recurrent_mask=np.ones((2**14, 2))))


# ----------------------------------------------------------------------------------------------
# The C API's NULL rules (a plain C program against the installed header and library)
# ----------------------------------------------------------------------------------------------

C_NULL_RULES = r"""
#include <stdio.h>
#include "fastlstm.h"
#define CHECK(expr, want) do { fl_status s_ = (expr); if (s_ != (want)) { \
    printf("line %d: %s gave %d\n", __LINE__, #expr, (int)s_); return 1; } } while (0)
int main(void) {
    enum { T = 2, B = 3, I = 2, H = 3, P = 2, G = 4 * H };
    static double x[T * B * I], w_ih[G * I], w_hh[G * H], b[G], w_hr[P * H], g4[G], gh[H];
    static double y[T * B * H], h_n[B * H], c_n[B * H], reserve[4096];
    fl_dims d = {T, B, I, H, 0, 2};
    fl_lstm_ext plain = {0, 0}, proj = {P, 0}, ln = {0, 1}, bad = {-1, 0};
    size_t n = 0;
    CHECK(fl_lstmx_reserve_bytes(&d, &ln, 8, &n), FL_OK);
    if (n == 0 || n > sizeof reserve) { printf("reserve %zu\n", n); return 1; }
    CHECK(fl_lstmx_reserve_bytes(&d, NULL, 8, &n), FL_EINVAL);
    CHECK(fl_lstmx_reserve_bytes(&d, &bad, 8, &n), FL_EINVAL);
    CHECK(fl_lstmx_forward_scratch_bytes(&d, &proj, 3, 1, &n), FL_EINVAL);
    CHECK(fl_lstmx_backward_scratch_bytes(&d, &proj, 4, NULL), FL_EINVAL);
    /* w_hr: NULL iff proj_size == 0; layer-norm parameters: all or none */
    CHECK(fl_lstmx_forward_f64(&d, &plain, x, w_ih, w_hh, b, b, w_hr, NULL, NULL, NULL, NULL,
                               NULL, NULL, NULL, NULL, y, h_n, c_n, NULL, NULL, 0), FL_EINVAL);
    CHECK(fl_lstmx_forward_f64(&d, &proj, x, w_ih, w_hh, b, b, NULL, NULL, NULL, NULL, NULL,
                               NULL, NULL, NULL, NULL, y, h_n, c_n, NULL, NULL, 0), FL_EINVAL);
    CHECK(fl_lstmx_forward_f64(&d, &ln, x, w_ih, w_hh, b, b, NULL, g4, g4, gh, NULL, NULL,
                               NULL, NULL, NULL, y, h_n, c_n, NULL, NULL, 0), FL_EINVAL);
    CHECK(fl_lstmx_forward_f64(&d, &plain, x, w_ih, w_hh, b, b, NULL, g4, NULL, NULL, NULL,
                               NULL, NULL, NULL, NULL, y, h_n, c_n, NULL, NULL, 0), FL_EINVAL);
    CHECK(fl_lstmx_forward_f64(&d, &ln, x, w_ih, w_hh, b, b, NULL, g4, g4, gh, gh, NULL, NULL,
                               NULL, NULL, y, h_n, c_n, reserve, NULL, 0), FL_OK);
    /* a scratch space given too small */
    CHECK(fl_lstmx_forward_f64(&d, &ln, x, w_ih, w_hh, b, b, NULL, g4, g4, gh, gh, NULL, NULL,
                               NULL, NULL, y, h_n, c_n, reserve, reserve, 8), FL_ENOMEM);
    printf("ok\n");
    return 0;
}
"""


def test_c_api_null_rules_and_statuses(tmp_path):
    cc = shlex.split(os.environ.get("CC", "cc"))
    if shutil.which(cc[0]) is None:
        pytest.skip(f"no C compiler ({cc[0]})")
    src, exe = tmp_path / "null_rules.c", tmp_path / "null_rules"
    src.write_text(C_NULL_RULES)
    omp = ["-fopenmp"] if fastlstm.openmp_enabled() else []
    cmd = [*cc, str(src), f"-I{fastlstm.get_include()}", f"-L{fastlstm.get_library_dir()}",
           "-lfastlstm", *omp, "-lm", *shlex.split(os.environ.get("LDFLAGS", "")), "-o",
           str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "ok" in run.stdout, run.stdout + run.stderr
