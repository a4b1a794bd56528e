"""Bad input, edge sizes and memory layouts for the public functions.

Every rejected call must raise the documented exception type with a message that names the
offending argument (checked with ``pytest.raises(..., match=...)``); it must never crash, hang
or start a multi-GB allocation. Accepted inputs of any layout (strided, transposed, Fortran,
reversed, unaligned, read-only, broadcast) must give bitwise the same results as contiguous
ones, leave the caller's arrays untouched and return arrays that alias none of them.
"""

from __future__ import annotations

import os
import re
import time
import tracemalloc

import numpy as np
import pytest

import fastlstm
from testkit import (DTYPES, GRU_GRAD_NAMES, LSTM_GRAD_NAMES, assert_close,
                      assert_results_equal,
                      copy_problem, make_cell_problem, make_gru_problem, make_lstm_problem,
                      make_upstream, readonly)
from fastlstm import reference as ref

T, B, I, H = 3, 4, 5, 6          # T != B so that a time-major / batch-first mix-up is visible
KINDS = ("lstm", "gru", "gru_orig")   # gru_orig: linear_before_reset=False
CELLS = ("lstm_cell", "lstm_cell_backward", "gru_cell", "gru_cell_backward")
LSTM_CELL_GRADS = ("x", "h", "c", "weight_ih", "weight_hh", "bias_ih", "bias_hh")
GRU_CELL_GRADS = ("x", "h", "weight_ih", "weight_hh", "bias_ih", "bias_hh")

# Dtypes that are not float32/float64 (longdouble only where it is a distinct type).
BAD_DTYPES = [np.int64, np.int32, np.uint8, np.bool_, np.float16, np.complex64, np.complex128,
              object, "U8"]
if np.dtype(np.longdouble).itemsize > 8:
    BAD_DTYPES.append(np.longdouble)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def lit(text: str) -> str:
    """A ``match=`` pattern for a literal fragment of the message."""
    return re.escape(text)


def gates(kind: str) -> int:
    return 4 if kind.startswith("lstm") else 3


def seq_problem(kind: str, dtype=np.float64, seed: int = 1, shape=(T, B, I, H), **kw) -> dict:
    if kind == "lstm":
        return make_lstm_problem(*shape, dtype, seed=seed, **kw)
    return make_gru_problem(*shape, dtype, seed=seed, linear_before_reset=(kind == "gru"), **kw)


def run_seq(kind: str, p: dict, **kw):
    return (fastlstm.lstm if kind == "lstm" else fastlstm.gru)(**p, **kw)


def seq_inputs(kind: str) -> tuple:
    states = ("h0", "c0") if kind == "lstm" else ("h0",)
    return ("x", "weight_ih", "weight_hh", "bias_ih", "bias_hh") + states


def seq_grads(kind: str) -> tuple:
    return LSTM_GRAD_NAMES if kind == "lstm" else GRU_GRAD_NAMES


def seq_outputs(kind: str) -> tuple:
    return ("output", "h_n", "c_n") if kind == "lstm" else ("output", "h_n")


def upstream(kind: str, p: dict, seed: int = 2) -> dict:
    return make_upstream(p, seed=seed, lstm=(kind == "lstm"))


def cell_kind(fn_name: str) -> str:
    return "lstm" if fn_name.startswith("lstm") else "gru"


def cell_problem(fn_name: str, dtype=np.float64, b: int = B, seed: int = 3) -> dict:
    return make_cell_problem(cell_kind(fn_name), b, I, H, dtype=dtype, seed=seed)


def cell_upstream(fn_name: str, p: dict, seed: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    names = ("grad_h", "grad_c") if cell_kind(fn_name) == "lstm" else ("grad_h",)
    return {n: rng.standard_normal(p["h"].shape).astype(p["x"].dtype) for n in names}


def call_cell(fn_name: str, p: dict, up=None, lbr: bool = True):
    fn = getattr(fastlstm, fn_name)
    kw = dict(p)
    if fn_name.endswith("backward"):
        kw.update(up or {})
    if fn_name.startswith("gru"):
        kw["linear_before_reset"] = lbr
    return fn(**kw)


CELL_VARIANTS = [pytest.param(fn, lbr, id=f"{fn}-{'lbr' if lbr else 'orig'}")
                 for fn in CELLS for lbr in ((True,) if fn.startswith("lstm") else (True, False))]


def cell_outputs(fn_name: str, result) -> dict:
    """Name -> array of everything a cell call returned."""
    if fn_name == "lstm_cell":
        return {"h1": result[0], "c1": result[1]}
    if fn_name == "gru_cell":
        return {"h1": result}
    names = LSTM_CELL_GRADS if cell_kind(fn_name) == "lstm" else GRU_CELL_GRADS
    return {n: getattr(result, n) for n in names}


def poison_allocator(arrays) -> None:
    """Allocate and free NaN-filled blocks of the sizes the results will have, so that a result
    the kernel forgets to write most likely holds NaN (NumPy reuses freed small blocks) rather
    than a lucky zero."""
    blocks = [np.full(np.shape(a), np.nan) for a in arrays for _ in range(3)]
    blocks += [np.full(np.shape(a), np.nan, np.float32) for a in arrays for _ in range(3)]
    del blocks


def bitwise_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.fixture
def default_threads():
    """Restore fastlstm's default thread count (None) after the test."""
    yield
    fastlstm.set_num_threads(None)


# ----------------------------------------------------------------------------------------------
# Sequence functions: dtype, rank, shape, None
# ----------------------------------------------------------------------------------------------

def seq_arg_cases():
    cases = []
    for kind in KINDS:
        for name in seq_inputs(kind):
            cases.append(pytest.param(kind, name, id=f"{kind}-{name}"))
    return cases


@pytest.mark.parametrize("bad_dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind, name", seq_arg_cases())
def test_seq_rejects_non_float_dtype(kind, name, bad_dtype):
    p = seq_problem(kind)
    p[name] = p[name].astype(bad_dtype)
    with pytest.raises(TypeError, match=lit(f"{name} must have dtype float32 or float64, "
                                            f"got {np.dtype(bad_dtype)}")):
        run_seq(kind, p)


@pytest.mark.parametrize("kind, name", [c for c in seq_arg_cases() if c.values[1] != "x"])
@pytest.mark.parametrize("x_dtype, other", [(np.float64, np.float32), (np.float32, np.float64)])
def test_seq_rejects_one_argument_of_the_other_float_dtype(kind, name, x_dtype, other):
    p = seq_problem(kind, x_dtype)
    p[name] = p[name].astype(other)
    with pytest.raises(TypeError, match=lit(f"{name} has dtype {np.dtype(other)} but x has "
                                            f"dtype {np.dtype(x_dtype)}")):
        run_seq(kind, p)


@pytest.mark.parametrize("kind", KINDS)
def test_seq_rejects_float32_x_with_float64_weights(kind):
    p = seq_problem(kind, np.float64)
    p["x"] = p["x"].astype(np.float32)
    # The first array compared with x is named together with x.
    with pytest.raises(TypeError, match=r"weight_hh has dtype float64 but x has dtype float32: "
                                        r"all arrays must have the same dtype"):
        run_seq(kind, p)


@pytest.mark.parametrize("kind, name", seq_arg_cases())
@pytest.mark.parametrize("change", ["add_axis", "drop_axis", "scalar"])
def test_seq_rejects_wrong_rank(kind, name, change):
    p = seq_problem(kind)
    a = p[name]
    p[name] = {"add_axis": a[None], "drop_axis": a.reshape(-1) if a.ndim > 1 else a[0],
               "scalar": np.asarray(a.flat[0])}[change]
    with pytest.raises(ValueError, match=lit(f"{name} must have ")):
        run_seq(kind, p)


def wrong_shapes(kind: str):
    """(argument, wrong value's shape, pattern) for arrays of the right rank."""
    G = gates(kind) * H
    cases = [("weight_ih", (G, I + 1), f"weight_ih must have shape ({G}, {I}), got ({G}, {I + 1})"),
             ("weight_ih", (G + 1, I), f"weight_ih must have shape ({G}, {I}), got ({G + 1}, {I})"),
             ("weight_ih", (I, G), f"weight_ih must have shape ({G}, {I}), got ({I}, {G})"),
             ("weight_hh", (G, H + 1), "weight_hh must have shape"),
             ("weight_hh", (G + 1, H), "weight_hh must have shape"),
             ("weight_hh", (H, G), "weight_hh must have shape"),
             ("bias_ih", (G + 1,), f"bias_ih must have shape ({G},), got ({G + 1},)"),
             ("bias_ih", (G - 1,), f"bias_ih must have shape ({G},), got ({G - 1},)"),
             ("bias_hh", (G + 1,), f"bias_hh must have shape ({G},), got ({G + 1},)"),
             ("bias_hh", (H,), f"bias_hh must have shape ({G},), got ({H},)")]
    for s in (("h0", "c0") if kind == "lstm" else ("h0",)):
        cases += [(s, (B + 1, H), f"{s} must have shape ({B}, {H}), got ({B + 1}, {H})"),
                  (s, (B, H + 1), f"{s} must have shape ({B}, {H}), got ({B}, {H + 1})"),
                  (s, (H, B), f"{s} must have shape ({B}, {H}), got ({H}, {B})")]
    return cases


@pytest.mark.parametrize("kind, name, shape, message",
                         [pytest.param(k, *c, id=f"{k}-{c[0]}-{c[1]}")
                          for k in KINDS for c in wrong_shapes(k)])
def test_seq_rejects_wrong_shape(kind, name, shape, message):
    p = seq_problem(kind)
    p[name] = np.zeros(shape)
    with pytest.raises(ValueError, match=lit(message)):
        run_seq(kind, p)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_seq_x_disagreeing_with_the_other_arguments_names_them(kind, batch_first):
    G = gates(kind) * H
    p = seq_problem(kind, batch_first=batch_first)
    p["x"] = np.concatenate([p["x"], p["x"][..., :1]], axis=2)            # I + 1 features
    with pytest.raises(ValueError, match=lit(f"weight_ih must have shape ({G}, {I + 1}), "
                                             f"got ({G}, {I})")):
        run_seq(kind, p)
    p = seq_problem(kind, batch_first=batch_first)
    p["x"] = p["x"][:-1] if batch_first else p["x"][:, :-1]                # B - 1 sequences
    with pytest.raises(ValueError, match=lit(f"h0 must have shape ({B - 1}, {H}), got ({B}, {H})")):
        run_seq(kind, p)


@pytest.mark.parametrize("kind", KINDS)
def test_seq_time_major_x_with_batch_first_names_x_layout(kind):
    p = seq_problem(kind)
    p["x"] = p["x"][0]                                                    # (B, I): 2-D
    message = f"x must have 3 dimensions (T, B, I), got shape ({B}, {I})"
    with pytest.raises(ValueError, match=lit(message)):
        run_seq(kind, p)
    with pytest.raises(ValueError, match=lit("x must have 3 dimensions (B, T, I)")):
        run_seq(kind, dict(p, batch_first=True))


@pytest.mark.parametrize("kind, name", [c for c in seq_arg_cases()
                                        if c.values[1] not in ("h0", "c0")])
def test_seq_rejects_none_for_required_arrays(kind, name):
    p = seq_problem(kind)
    p[name] = None
    message = f"{name} must be a float32 or float64 array, got None"
    with pytest.raises(TypeError, match=lit(message)):
        run_seq(kind, p)


@pytest.mark.parametrize("kind, name", seq_arg_cases())
@pytest.mark.parametrize("junk, exc, message", [
    ("abc", TypeError, "must have dtype float32 or float64, got <U3"),
    ([[1.0], [1.0, 2.0]], TypeError, "could not be converted to an array"),
    ({"a": 1}, TypeError, "must have dtype float32 or float64, got object"),
], ids=["str", "ragged", "dict"])
def test_seq_rejects_non_arrays(kind, name, junk, exc, message):
    p = seq_problem(kind)
    p[name] = junk
    with pytest.raises(exc, match=lit(f"{name} {message}")):
        run_seq(kind, p)


@pytest.mark.parametrize("kind", KINDS)
def test_seq_rejects_big_endian_naming_the_argument(kind):
    p = seq_problem(kind)
    p["weight_hh"] = p["weight_hh"].astype(">f8")
    with pytest.raises(TypeError, match=r"weight_hh must have dtype float32 or float64, got >f8"):
        run_seq(kind, p)


# ----------------------------------------------------------------------------------------------
# lengths
# ----------------------------------------------------------------------------------------------

LENGTH_VALUE_CASES = [
    ("zero", [0, 1, 2, 3], "0"),
    ("T+1", [3, T + 1, 1, 2], str(T + 1)),
    ("negative", [1, 2, -1, 3], "-1"),
    ("huge_uint64", np.array([1, 2, 2**63 + 5, 3], np.uint64), str(2**63 + 5)),
    ("huge_float", [1.0, 1e30, 2.0, 3.0], "1e+30"),
    ("negative_zero", [-0.0, 1.0, 2.0, 3.0], ""),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case, lengths, bad", LENGTH_VALUE_CASES,
                         ids=[c[0] for c in LENGTH_VALUE_CASES])
def test_lengths_out_of_range(kind, case, lengths, bad):
    with pytest.raises(ValueError, match=lit(f"lengths must be in 1..T = 1..{T}, got {bad}")):
        run_seq(kind, dict(seq_problem(kind), lengths=lengths))


LENGTH_SHAPE_CASES = [("short", [1] * (B - 1)), ("long", [1] * (B + 1)), ("row", [[1] * B]),
                      ("column", [[1]] * B), ("scalar", 2), ("empty", [])]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case, lengths", LENGTH_SHAPE_CASES,
                         ids=[c[0] for c in LENGTH_SHAPE_CASES])
def test_lengths_wrong_shape(kind, case, lengths):
    with pytest.raises(ValueError, match=lit(f"lengths must have shape ({B},) (one per sequence), "
                                             f"got {np.shape(lengths)}")):
        run_seq(kind, dict(seq_problem(kind), lengths=lengths))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lengths, message", [
    ([1.0, np.nan, 2.0, 3.0], "lengths must be finite integers, got a NaN or infinity"),
    ([1.0, np.inf, 2.0, 3.0], "lengths must be finite integers, got a NaN or infinity"),
    ([1.0, -np.inf, 2.0, 3.0], "lengths must be finite integers, got a NaN or infinity"),
    ([1.0, 1.5, 2.0, 3.0], "lengths must be whole numbers"),
    ([1.0, 2.0 + 1e-9, 2.0, 3.0], "lengths must be whole numbers"),
    (np.array([1, 2, 2.5, 3], np.float32), "lengths must be whole numbers"),
], ids=["nan", "inf", "-inf", "1.5", "almost2", "float32_2.5"])
def test_lengths_bad_floats(kind, lengths, message):
    with pytest.raises(ValueError, match=lit(message)):
        run_seq(kind, dict(seq_problem(kind), lengths=lengths))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lengths", [
    np.array([True, True, False, True]), np.array([1, 2, 3, 3], complex),
    np.array([1, 2, 3, 3], object), np.array(["1", "2", "3", "3"]),
], ids=["bool", "complex", "object", "str"])
def test_lengths_non_integer_dtype(kind, lengths):
    with pytest.raises(TypeError, match=lit(f"lengths must be an array of integers, got dtype "
                                            f"{lengths.dtype}")):
        run_seq(kind, dict(seq_problem(kind), lengths=lengths))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("as_type", [np.uint8, np.int8, np.int16, np.uint32, np.uint64,
                                     np.float64, np.float32, list])
def test_lengths_other_integer_and_whole_float_types_accepted(kind, as_type):
    lengths = np.array([T, 1, 2, T])
    p = seq_problem(kind)
    expected = run_seq(kind, dict(p, lengths=lengths))
    given = [int(v) for v in lengths] if as_type is list else lengths.astype(as_type)
    got = run_seq(kind, dict(p, lengths=given))
    assert_results_equal(got, expected, seq_outputs(kind))
    up = upstream(kind, p)
    assert_results_equal(got.backward(**up), expected.backward(**up), seq_grads(kind))


# ----------------------------------------------------------------------------------------------
# backward(...)
# ----------------------------------------------------------------------------------------------

def upstream_names(kind: str) -> tuple:
    names = ("grad_output", "grad_h_n", "grad_c_n")
    return names if kind == "lstm" else names[:2]


def backward_cases():
    return [pytest.param(k, n, id=f"{k}-{n}") for k in KINDS for n in upstream_names(k)]


@pytest.mark.parametrize("bad_dtype", [np.int64, np.bool_, np.complex128, object, np.float16],
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind, name", backward_cases())
def test_backward_rejects_non_float_dtype(kind, name, bad_dtype):
    p = seq_problem(kind)
    up = upstream(kind, p)
    up[name] = up[name].astype(bad_dtype)
    out = run_seq(kind, p)
    with pytest.raises(TypeError, match=lit(f"{name} must have dtype float32 or float64, "
                                            f"got {np.dtype(bad_dtype)}")):
        out.backward(**up)


@pytest.mark.parametrize("kind, name", backward_cases())
@pytest.mark.parametrize("dtype, other", [(np.float64, np.float32), (np.float32, np.float64)])
def test_backward_rejects_the_other_float_dtype(kind, name, dtype, other):
    p = seq_problem(kind, dtype)
    up = upstream(kind, p)
    up[name] = up[name].astype(other)
    out = run_seq(kind, p)
    with pytest.raises(TypeError, match=lit(f"{name} has dtype {np.dtype(other)} but the "
                                            f"forward's x has dtype {np.dtype(dtype)}")):
        out.backward(**up)


@pytest.mark.parametrize("kind, name", backward_cases())
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("change", ["add_axis", "drop_axis", "flat", "short_last", "swap01"])
def test_backward_rejects_wrong_rank_or_shape(kind, name, batch_first, change):
    p = seq_problem(kind, batch_first=batch_first)
    up = upstream(kind, p)
    a = up[name]
    up[name] = {"add_axis": a[None], "drop_axis": a[0], "flat": a.reshape(-1),
                "short_last": a[..., :-1], "swap01": np.ascontiguousarray(np.swapaxes(a, 0, 1))
                }[change]
    expected = a.shape
    out = run_seq(kind, p)
    with pytest.raises(ValueError, match=lit(f"{name} must have shape {expected}, "
                                             f"got {up[name].shape}")):
        out.backward(**up)


@pytest.mark.parametrize("kind", ["gru", "gru_orig"])
def test_gru_backward_has_no_grad_c_n(kind):
    p = seq_problem(kind)
    out = run_seq(kind, p)
    with pytest.raises(TypeError, match="grad_c_n"):
        out.backward(grad_c_n=np.zeros((B, H)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_after_inference_forward_raises(kind, dtype):
    p = seq_problem(kind, dtype, with_lengths=True)
    out = run_seq(kind, p, training=False)
    assert_results_equal(out, run_seq(kind, p), seq_outputs(kind))   # same forward results
    for _ in range(2):                                                # and it stays an error
        with pytest.raises(RuntimeError, match=lit("backward() needs the forward to run with "
                                                   "training=True")):
            out.backward(**upstream(kind, p))


# ----------------------------------------------------------------------------------------------
# Cells
# ----------------------------------------------------------------------------------------------

def cell_arg_cases():
    cases = []
    for fn in CELLS:
        names = (("x", "h", "c") if cell_kind(fn) == "lstm" else ("x", "h")) + (
            "weight_ih", "weight_hh", "bias_ih", "bias_hh")
        cases += [pytest.param(fn, n, id=f"{fn}-{n}") for n in names]
    return cases


@pytest.mark.parametrize("bad_dtype", [np.int64, np.bool_, np.float16, np.complex128, object],
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("fn_name, name", cell_arg_cases())
def test_cell_rejects_non_float_dtype(fn_name, name, bad_dtype):
    p = cell_problem(fn_name)
    p[name] = p[name].astype(bad_dtype)
    with pytest.raises(TypeError, match=lit(f"{name} must have dtype float32 or float64, "
                                            f"got {np.dtype(bad_dtype)}")):
        call_cell(fn_name, p)


@pytest.mark.parametrize("fn_name, name", [c for c in cell_arg_cases() if c.values[1] != "x"])
def test_cell_rejects_mixed_float_dtypes(fn_name, name):
    p = cell_problem(fn_name, np.float32)
    p[name] = p[name].astype(np.float64)
    with pytest.raises(TypeError, match=lit(f"{name} has dtype float64 but x has dtype float32")):
        call_cell(fn_name, p)


@pytest.mark.parametrize("fn_name", CELLS)
def test_cell_rejects_float32_x_with_float64_weights(fn_name):
    p = cell_problem(fn_name, np.float64)
    p["x"] = p["x"].astype(np.float32)
    with pytest.raises(TypeError, match=r"has dtype float64 but x has dtype float32"):
        call_cell(fn_name, p)


@pytest.mark.parametrize("fn_name, name", cell_arg_cases())
@pytest.mark.parametrize("change", ["add_axis", "drop_axis", "short_last", "transpose"])
def test_cell_rejects_wrong_rank_or_shape(fn_name, name, change):
    p = cell_problem(fn_name)
    a = p[name]
    if change == "transpose" and a.ndim < 2:
        change = "short_last"               # a 1-D bias has no transpose
    p[name] = {"add_axis": a[None], "drop_axis": a.reshape(-1) if a.ndim > 1 else a[0],
               "short_last": a[..., :-1], "transpose": np.ascontiguousarray(a.T)}[change]
    if name == "x" and change == "short_last":
        name = "weight_ih"        # x defines I: the disagreeing weight is named
    if name == "x" and change == "transpose":
        name = "weight_ih"
    with pytest.raises(ValueError, match=lit(f"{name} must have ")):
        call_cell(fn_name, p)


@pytest.mark.parametrize("fn_name, name", cell_arg_cases())
def test_cell_rejects_none(fn_name, name):
    p = cell_problem(fn_name)
    p[name] = None
    message = (f"{name} must be a ({B}, {H}) array, got None" if name in ("h", "c")
               else f"{name} must be a float32 or float64 array, got None")
    with pytest.raises(TypeError, match=lit(message)):
        call_cell(fn_name, p)


@pytest.mark.parametrize("fn_name", ["lstm_cell_backward", "gru_cell_backward"])
@pytest.mark.parametrize("change, exc, message", [
    ("int", TypeError, "{n} must have dtype float32 or float64, got int64"),
    ("complex", TypeError, "{n} must have dtype float32 or float64, got complex128"),
    ("float32", TypeError, "{n} has dtype float32 but x has dtype float64"),
    ("short", ValueError, "{n} must have shape (4, 6), got (4, 5)"),
    ("flat", ValueError, "{n} must have shape (4, 6), got (24,)"),
    ("transposed", ValueError, "{n} must have shape (4, 6), got (6, 4)"),
])
def test_cell_backward_rejects_bad_upstream(fn_name, change, exc, message):
    p = cell_problem(fn_name)
    for n, g in cell_upstream(fn_name, p).items():
        bad = {"int": g.astype(np.int64), "complex": g.astype(complex),
               "float32": g.astype(np.float32), "short": g[:, :-1], "flat": g.reshape(-1),
               "transposed": np.ascontiguousarray(g.T)}[change]
        with pytest.raises(exc, match=lit(message.format(n=n))):
            call_cell(fn_name, p, {n: bad})


@pytest.mark.parametrize("fn_name", CELLS)
def test_cell_rejects_sequence_shaped_x(fn_name):
    p = cell_problem(fn_name)
    p["x"] = p["x"][None]
    message = f"x must have 2 dimensions (B, I), got shape (1, {B}, {I})"
    with pytest.raises(ValueError, match=lit(message)):
        call_cell(fn_name, p)


# ----------------------------------------------------------------------------------------------
# Zero sizes
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_empty_batch_gives_empty_outputs_and_zero_weight_gradients(kind, dtype, batch_first,
                                                                   with_lengths):
    """B = 0 is accepted: empty outputs, and weight/bias gradients that are exactly zero (a sum
    over no sequences), never uninitialised memory."""
    p = seq_problem(kind, dtype, shape=(T, 0, I, H), batch_first=batch_first)
    if with_lengths:
        p["lengths"] = np.zeros(0, np.int64)
    G = gates(kind) * H
    poison_allocator([np.empty((G, I)), np.empty((G, H)), np.empty(G)])
    out = run_seq(kind, p)
    seq_shape = (0, T, H) if batch_first else (T, 0, H)
    assert out.output.shape == seq_shape and out.output.dtype == dtype
    for name in seq_outputs(kind)[1:]:
        assert getattr(out, name).shape == (0, H) and getattr(out, name).dtype == dtype
    up = upstream(kind, p)
    for given in ({}, up):
        poison_allocator([np.empty((G, I)), np.empty((G, H)), np.empty(G)])
        g = out.backward(**given)
        assert g.x.shape == p["x"].shape and g.x.dtype == dtype
        for name in seq_grads(kind):
            arr = getattr(g, name)
            assert arr.dtype == dtype, name
            if name in ("h0", "c0"):
                assert arr.shape == (0, H), name
        for name, shape in (("weight_ih", (G, I)), ("weight_hh", (G, H)), ("bias_ih", (G,)),
                            ("bias_hh", (G,))):
            arr = getattr(g, name)
            assert arr.shape == shape, name
            assert np.array_equal(arr, np.zeros(shape)), f"{name} of an empty batch: {arr}"


@pytest.mark.parametrize("fn_name, lbr", CELL_VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_cells(fn_name, dtype, lbr):
    p = cell_problem(fn_name, dtype, b=0)
    G = gates(fn_name) * H
    poison_allocator([np.empty((G, I)), np.empty((G, H)), np.empty(G)])
    res = cell_outputs(fn_name, call_cell(fn_name, p, cell_upstream(fn_name, p), lbr=lbr))
    for name, arr in res.items():
        assert arr.dtype == dtype, name
        if name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            assert arr.shape == p[name].shape and np.array_equal(arr, np.zeros(arr.shape)), name
        else:
            assert arr.shape[0] == 0, name


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_zero_time_steps_is_an_error(kind, batch_first):
    p = seq_problem(kind, shape=(0, B, I, H), batch_first=batch_first)
    x_shape = p["x"].shape
    message = f"x must have at least one time step, got shape {x_shape}"
    with pytest.raises(ValueError, match=lit(message)):
        run_seq(kind, p)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_input_features_is_an_error(kind):
    p = seq_problem(kind, shape=(T, B, 0, H))
    message = f"x must have at least one input feature, got shape ({T}, {B}, 0)"
    with pytest.raises(ValueError, match=lit(message)):
        run_seq(kind, p)


def zero_hidden(p: dict) -> dict:
    """``p`` with H = 0: every weight, bias and state emptied along H."""
    q = dict(p)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        q[name] = np.zeros((0,) + p[name].shape[1:] if name != "weight_hh" else (0, 0))
    for name in ("h0", "c0", "h", "c"):
        if q.get(name) is not None:
            q[name] = np.zeros((q[name].shape[0], 0))
    return q


@pytest.mark.parametrize("kind", KINDS)
def test_zero_hidden_size_is_an_error(kind):
    p = zero_hidden(seq_problem(kind))
    with pytest.raises(ValueError, match=r"weight_hh must have shape \(\d\*H, H\), got \(0, 0\)"):
        run_seq(kind, p)


@pytest.mark.parametrize("fn_name", CELLS)
def test_cells_zero_input_or_hidden_size_is_an_error(fn_name):
    p = cell_problem(fn_name)
    p["x"], p["weight_ih"] = p["x"][:, :0], p["weight_ih"][:, :0]
    message = f"x must have at least one input feature, got shape ({B}, 0)"
    with pytest.raises(ValueError, match=lit(message)):
        call_cell(fn_name, p)
    p = zero_hidden(cell_problem(fn_name))
    with pytest.raises(ValueError, match=r"weight_hh must have shape \(\d\*H, H\), got \(0, 0\)"):
        call_cell(fn_name, p)


# ----------------------------------------------------------------------------------------------
# Huge shapes: refused before any big allocation (broadcast views, nothing is materialised)
# ----------------------------------------------------------------------------------------------

PHYSICAL = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
needs_small_machine = pytest.mark.skipif(PHYSICAL >= 2**44,
                                         reason="the 'huge' shapes would fit in this machine")


def zeros_view(shape, dtype=np.float32) -> np.ndarray:
    """A read-only all-zero array of any shape that allocates one element."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def huge_seq_args(kind, T_, B_, I_, H_, dtype=np.float32, batch_first=False, **extra):
    G = gates(kind) * H_
    kw = dict(x=zeros_view((B_, T_, I_) if batch_first else (T_, B_, I_), dtype),
              weight_ih=zeros_view((G, I_), dtype), weight_hh=zeros_view((G, H_), dtype),
              bias_ih=zeros_view((G,), dtype), bias_hh=zeros_view((G,), dtype),
              batch_first=batch_first)
    kw.update(extra)
    if kind != "lstm":
        kw["linear_before_reset"] = kind == "gru"
    return kw


def assert_refused_cheaply(call, pattern: str) -> None:
    """``call`` raises MemoryError or ValueError matching ``pattern`` within a few seconds,
    after allocating (through NumPy) less than 32 MiB."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises((MemoryError, ValueError), match=pattern):
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"allocated {peak / 2**20:.1f} MiB before refusing"
    assert time.perf_counter() - start < 5.0, "took too long to refuse"


SEQ_MESSAGE = (r"a sequence of shape \(.*\) with hidden size \d+ "
               r"(needs about [\d.]+ GiB|is too large)")
HUGE_SEQ = {
    # (T, B, I, H, dtype, batch_first, extra arrays (B, H) / lengths)
    "T*B>2^32": (2**22, 2**22, 1, 1, np.float32, False),
    "T*B>2^32-batch_first": (2**22, 2**22, 1, 1, np.float32, True),
    "over_2^62_bytes": (2**30, 2**30, 1, 1, np.float32, False),
    "B*H>2^32-float64": (1, 2**28, 1, 2**10, np.float64, False),
    "H=2^24": (1, 1, 1, 2**24, np.float32, False),
    "I=2^40": (1, 1, 2**40, 1, np.float32, False),
}


@needs_small_machine
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("case", list(HUGE_SEQ))
@pytest.mark.parametrize("kind", KINDS)
def test_huge_sequences_are_refused_cheaply(kind, case, training):
    T_, B_, I_, H_, dtype, bf = HUGE_SEQ[case]
    kw = huge_seq_args(kind, T_, B_, I_, H_, dtype, bf)
    assert_refused_cheaply(lambda: run_seq(kind, {}, **kw, training=training), SEQ_MESSAGE)


@needs_small_machine
@pytest.mark.parametrize("kind, what", [(k, w) for k in KINDS for w in ("h0", "c0", "lengths",
                                                                        "lengths_float")
                                         if k == "lstm" or w != "c0"])
def test_huge_state_or_lengths_views_are_not_copied_before_the_size_check(kind, what):
    """A (B, H) initial state or a (B,) lengths given as a huge broadcast view must not be
    copied (16 GiB here) or scanned element by element before the size check refuses."""
    B_, H_ = 2**20, 2**11
    T_ = 2 if what.startswith("lengths") else 1
    if what.startswith("lengths"):
        B_, H_ = 2**40, 1
        dt = np.float64 if what == "lengths_float" else np.int64
        extra = {"lengths": np.broadcast_to(np.ones((), dt), (B_,))}
    else:
        extra = {what: zeros_view((B_, H_), np.float64)}
    kw = huge_seq_args(kind, T_, B_, 1, H_, np.float64, **extra)
    assert_refused_cheaply(lambda: run_seq(kind, {}, **kw), SEQ_MESSAGE)


CELL_MESSAGE = r"a step of batch \d+ with hidden size \d+ (needs about [\d.]+ GiB|is too large)"


@needs_small_machine
@pytest.mark.parametrize("fn_name", CELLS)
@pytest.mark.parametrize("Bc, Ic, Hc", [(2**40, 1, 1), (1, 2**42, 1), (1, 1, 2**22),
                                        (2**28, 1, 2**8)],
                         ids=["B=2^40", "I=2^42", "H=2^22", "B*H>2^32"])
def test_huge_cell_steps_are_refused_cheaply(fn_name, Bc, Ic, Hc):
    G = gates(fn_name) * Hc
    p = dict(x=zeros_view((Bc, Ic)), h=zeros_view((Bc, Hc)), weight_ih=zeros_view((G, Ic)),
             weight_hh=zeros_view((G, Hc)), bias_ih=zeros_view((G,)), bias_hh=zeros_view((G,)))
    if cell_kind(fn_name) == "lstm":
        p["c"] = zeros_view((Bc, Hc))
    up = {"grad_h": zeros_view((Bc, Hc))}
    assert_refused_cheaply(lambda: call_cell(fn_name, p, up), CELL_MESSAGE)


# ----------------------------------------------------------------------------------------------
# set_num_threads
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, exc", [(0, ValueError), (-1, ValueError), (-(2**40), ValueError),
                                    ("2", TypeError), (True, TypeError), (False, TypeError),
                                    (2.0, TypeError), (2.5, TypeError), ([2], TypeError),
                                    (np.float64(2), TypeError)],
                         ids=["0", "-1", "-2^40", "str", "True", "False", "2.0", "2.5", "list",
                              "np.float64"])
def test_set_num_threads_rejects(n, exc, default_threads):
    fastlstm.set_num_threads(1)
    shown = repr(n) if exc is TypeError else str(n)
    with pytest.raises(exc, match=r"n must be a positive integer\b.*got " + lit(shown) + "$"):
        fastlstm.set_num_threads(n)
    if fastlstm.openmp_enabled():
        assert fastlstm.get_num_threads() == 1           # a rejected value changes nothing


def test_set_num_threads_accepts_integer_like_and_none(default_threads):
    fastlstm.set_num_threads(None)
    default = fastlstm.get_num_threads()
    assert isinstance(default, int) and default >= 1
    fastlstm.set_num_threads(np.int64(2))
    assert fastlstm.get_num_threads() == (2 if fastlstm.openmp_enabled() else 1)
    fastlstm.set_num_threads(None)
    assert fastlstm.get_num_threads() == default


@pytest.mark.parametrize("n", [2**31, 2**63, 10**30])
def test_set_num_threads_rejects_counts_beyond_a_c_int(n, default_threads):
    """The count reaches C as an ``int``: a value that cannot be one must be refused by
    set_num_threads itself (naming n), not accepted and then fail inside every later call."""
    with pytest.raises(ValueError, match=r"\bn\b"):
        fastlstm.set_num_threads(n)


# ----------------------------------------------------------------------------------------------
# NaN and infinity
# ----------------------------------------------------------------------------------------------

def nan_pattern_matches_reference(kind, p, up, dtype) -> None:
    """The kernel's NaN positions equal the reference's in every output and gradient, and the
    finite entries agree to the usual tolerance."""
    out, expected = run_seq(kind, p), (ref.lstm if kind == "lstm" else ref.gru)(**p)
    pairs = [(n, getattr(out, n), getattr(expected, n)) for n in seq_outputs(kind)]
    g, ge = out.backward(**up), expected.backward(**up)
    pairs += [("d" + n, getattr(g, n), getattr(ge, n)) for n in seq_grads(kind)]
    for name, a, e in pairs:
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=f"NaN positions of {name}")
        keep = ~np.isnan(e)
        assert_close(a[keep], e[keep], dtype, name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_nan_in_x_poisons_only_its_sequence_from_that_step(kind, dtype, batch_first):
    t_bad, b_bad = 1, 2
    p = seq_problem(kind, dtype, batch_first=batch_first)
    if batch_first:
        p["x"][b_bad, t_bad, 0] = np.nan
    else:
        p["x"][t_bad, b_bad, 0] = np.nan
    out = run_seq(kind, p)
    y = np.swapaxes(out.output, 0, 1) if batch_first else out.output      # (T, B, H)
    others = [b for b in range(B) if b != b_bad]
    assert np.isfinite(y[:t_bad, b_bad]).all()
    assert np.isnan(y[t_bad:, b_bad]).all()
    assert np.isfinite(y[:, others]).all()
    for name in seq_outputs(kind)[1:]:
        state = getattr(out, name)
        assert np.isnan(state[b_bad]).all() and np.isfinite(state[others]).all(), name
    g = out.backward(**upstream(kind, p))
    dx = np.swapaxes(g.x, 0, 1) if batch_first else g.x
    assert np.isnan(dx[:, b_bad]).all() and np.isfinite(dx[:, others]).all()
    assert np.isnan(g.h0[b_bad]).all() and np.isfinite(g.h0[others]).all()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        assert np.isnan(getattr(g, name)).all(), name          # a sum over every sequence
    nan_pattern_matches_reference(kind, p, upstream(kind, p), dtype)


@pytest.mark.parametrize("kind, where", [(k, w) for k in KINDS
                                         for w in ("h0", "c0", "weight_ih_row", "weight_hh_col",
                                                   "bias_hh") if k == "lstm" or w != "c0"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_elsewhere_matches_reference_pattern(kind, dtype, where):
    p = seq_problem(kind, dtype)
    if where in ("h0", "c0"):
        p[where][1, 2] = np.nan
    elif where == "weight_ih_row":
        p["weight_ih"][H + 1, 0] = np.nan
    elif where == "weight_hh_col":
        p["weight_hh"][0, 3] = np.nan
    else:
        p["bias_hh"][2 * H] = np.nan
    nan_pattern_matches_reference(kind, p, upstream(kind, p), dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [np.inf, -np.inf, 1e30])
def test_infinite_or_huge_x_forward_matches_reference_pattern(kind, dtype, value):
    p = seq_problem(kind, dtype)
    p["x"][1, 2, :] = value
    out = run_seq(kind, p)
    with np.errstate(invalid="ignore", over="ignore"):     # inf - inf in the reference's matmul
        e = (ref.lstm if kind == "lstm" else ref.gru)(**p)
    for name in seq_outputs(kind):
        a, b = getattr(out, name), getattr(e, name)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        keep = ~np.isnan(b)
        assert_close(a[keep], b[keep], dtype, name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_nan_grad_output_past_the_end_is_ignored(kind, dtype, batch_first):
    p = seq_problem(kind, dtype, batch_first=batch_first)
    p["lengths"] = np.array([T, 1, 2, T])
    up = upstream(kind, p)
    poisoned = copy_problem(up)
    go = np.swapaxes(poisoned["grad_output"], 0, 1) if batch_first else poisoned["grad_output"]
    go[1:, 1] = np.nan          # a view: writes into poisoned["grad_output"]
    go[2:, 2] = np.inf
    out = run_seq(kind, p)
    assert_results_equal(out.backward(**poisoned), out.backward(**up), seq_grads(kind))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("pad", [np.nan, np.inf])
def test_x_past_the_end_is_never_read(kind, dtype, batch_first, pad):
    """With lengths, sequence b runs only its first lengths[b] steps: whatever sits in x past
    its end (NaN/inf padding included) changes no output and no gradient."""
    p = seq_problem(kind, dtype, batch_first=batch_first)
    p["lengths"] = np.array([T, 1, 2, T])
    padded = copy_problem(p)
    x = np.swapaxes(padded["x"], 0, 1) if batch_first else padded["x"]
    x[1:, 1] = pad
    x[2:, 2] = pad
    up = upstream(kind, p)
    clean, dirty = run_seq(kind, p), run_seq(kind, padded)
    assert_results_equal(dirty, clean, seq_outputs(kind), "forward: ")
    assert_results_equal(dirty.backward(**up), clean.backward(**up), seq_grads(kind), "backward: ")


# ----------------------------------------------------------------------------------------------
# Layouts: strided, transposed, Fortran, reversed, unaligned, read-only, broadcast
# ----------------------------------------------------------------------------------------------

def strided(a: np.ndarray) -> np.ndarray:
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def transposed(a: np.ndarray) -> np.ndarray:
    """Same values; memory order of the first two axes swapped (a transposed view)."""
    if a.ndim < 2:
        return strided(a)
    return np.ascontiguousarray(np.swapaxes(a, 0, 1)).swapaxes(0, 1)


def fortran(a: np.ndarray) -> np.ndarray:
    return np.asfortranarray(a) if a.ndim >= 2 else strided(a)


def reversed_(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a[::-1])[::-1]


def unaligned(a: np.ndarray) -> np.ndarray:
    buf = np.zeros(a.nbytes + 1, np.uint8)
    v = np.ndarray(a.shape, a.dtype, buffer=buf, offset=1)
    v[...] = a
    return v


LAYOUTS = {"strided": strided, "transposed": transposed, "fortran": fortran,
           "reversed": reversed_, "unaligned": unaligned, "readonly": readonly}


def relayout(d: dict, fn) -> dict:
    return {k: fn(v) if isinstance(v, np.ndarray) else v for k, v in d.items()}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_seq_any_layout_gives_bitwise_the_contiguous_result(layout, kind, dtype, batch_first):
    p = seq_problem(kind, dtype, shape=(4, 5, 7, 6), batch_first=batch_first, with_lengths=True)
    up = upstream(kind, p)
    fn = LAYOUTS[layout]
    q, uq = relayout(p, fn), relayout(up, fn)
    if layout in ("strided", "transposed", "reversed"):
        assert not any(v.flags.c_contiguous for v in q.values() if isinstance(v, np.ndarray))
    if layout == "unaligned":
        assert not q["x"].flags.aligned
    clean, other = run_seq(kind, p), run_seq(kind, q)
    assert_results_equal(other, clean, seq_outputs(kind), f"{layout}: ")
    for name in seq_outputs(kind):
        assert getattr(other, name).flags.c_contiguous, name
    assert_results_equal(other.backward(**uq), clean.backward(**up), seq_grads(kind),
                         f"{layout}: d")


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("fn_name, lbr", CELL_VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cell_any_layout_gives_bitwise_the_contiguous_result(layout, fn_name, dtype, lbr):
    p = cell_problem(fn_name, dtype, b=5)
    up = cell_upstream(fn_name, p)
    fn = LAYOUTS[layout]
    clean = cell_outputs(fn_name, call_cell(fn_name, p, up, lbr))
    other = cell_outputs(fn_name, call_cell(fn_name, relayout(p, fn), relayout(up, fn), lbr))
    for name in clean:
        assert bitwise_equal(other[name], clean[name]), f"{layout}: {name}"


@pytest.mark.parametrize("kind", KINDS)
def test_broadcast_stride_zero_inputs(kind):
    """Stride-0 views (one initial state for every sequence, constant bias) equal their copies."""
    p = seq_problem(kind)
    rng = np.random.default_rng(5)
    row = rng.uniform(-0.5, 0.5, H)
    p["h0"] = np.broadcast_to(row, (B, H))
    if kind == "lstm":
        p["c0"] = np.broadcast_to(row[::-1], (B, H))
    p["bias_hh"] = np.broadcast_to(np.float64(0.25), p["bias_hh"].shape)
    p["x"] = np.broadcast_to(p["x"][:, :1], p["x"].shape)
    copied = relayout(p, np.array)
    up = upstream(kind, p)
    up_b = dict(up, grad_h_n=np.broadcast_to(up["grad_h_n"][0], (B, H)))
    up_c = relayout(up_b, np.array)
    a, b = run_seq(kind, p), run_seq(kind, copied)
    assert_results_equal(a, b, seq_outputs(kind))
    assert_results_equal(a.backward(**up_b), b.backward(**up_c), seq_grads(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_array_passed_twice(kind):
    """bias_ih and bias_hh (and h0, c0) may be one and the same array."""
    p = seq_problem(kind)
    p["bias_hh"] = p["bias_ih"]
    if kind == "lstm":
        p["c0"] = p["h0"]
    separate = copy_problem(p)
    up = upstream(kind, p)
    a, b = run_seq(kind, p), run_seq(kind, separate)
    assert_results_equal(a, b, seq_outputs(kind))
    assert_results_equal(a.backward(**up), b.backward(**up), seq_grads(kind))


# ----------------------------------------------------------------------------------------------
# The caller's arrays: never modified, never aliased, copied at the forward
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_seq_inputs_unmodified_and_results_alias_nothing(kind, dtype, batch_first):
    p = seq_problem(kind, dtype, batch_first=batch_first, with_lengths=True)
    up = upstream(kind, p)
    before, up_before = copy_problem(p), copy_problem(up)
    out = run_seq(kind, p)
    g1 = out.backward(**up)
    g2 = out.backward(**up)
    for b_, a_ in ((before, p), (up_before, up)):
        for k, v in b_.items():
            if isinstance(v, np.ndarray):
                assert bitwise_equal(a_[k], v), f"{k} was modified"
    results = [getattr(out, n) for n in seq_outputs(kind)]
    results += [getattr(g, n) for g in (g1, g2) for n in seq_grads(kind)]
    inputs = [v for d in (p, up) for v in d.values() if isinstance(v, np.ndarray)]
    for i, r in enumerate(results):
        assert r.flags.writeable and r.flags.c_contiguous and r.dtype == dtype
        for a in inputs:
            assert not np.shares_memory(r, a), "a result aliases an input"
        for other in results[i + 1:]:
            assert not np.shares_memory(r, other), "two results alias each other"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("new_length", [1, T + 5], ids=["valid", "out_of_range"])
def test_backward_uses_the_forward_values_not_later_changes(kind, new_length):
    """The forward keeps private copies: changing the caller's inputs, or the returned output
    and states, after the forward does not change what backward computes."""
    p = seq_problem(kind, with_lengths=True)
    up = upstream(kind, p)
    expected = run_seq(kind, copy_problem(p)).backward(**up)
    out = run_seq(kind, p)
    for k, v in p.items():
        if isinstance(v, np.ndarray):
            v[...] = new_length if k == "lengths" else -3.0
    for n in seq_outputs(kind):
        getattr(out, n)[...] = np.nan
    assert_results_equal(out.backward(**up), expected, seq_grads(kind))


@pytest.mark.parametrize("fn_name", CELLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cell_inputs_unmodified_and_results_alias_nothing(fn_name, dtype):
    p = cell_problem(fn_name, dtype)
    up = cell_upstream(fn_name, p)
    before, up_before = copy_problem(p), copy_problem(up)
    res = list(cell_outputs(fn_name, call_cell(fn_name, p, up)).values())
    res += list(cell_outputs(fn_name, call_cell(fn_name, p, up)).values())
    for b_, a_ in ((before, p), (up_before, up)):
        for k, v in b_.items():
            assert bitwise_equal(a_[k], v), f"{k} was modified"
    inputs = list(p.values()) + list(up.values())
    for i, r in enumerate(res):
        assert r.flags.writeable and r.dtype == dtype
        assert not any(np.shares_memory(r, a) for a in inputs), "a result aliases an input"
        assert not any(np.shares_memory(r, o) for o in res[i + 1:]), "results alias each other"


@pytest.mark.parametrize("lengths, exc, message", [
    ([3.0, np.nan], ValueError, "lengths must be finite integers, got a NaN or infinity"),
    ([3.0, 1.5], ValueError, "lengths must be whole numbers"),
    (["3", "1"], TypeError, "lengths must be an array of integers"),
    ([3, 4], ValueError, "lengths must be in 1..T = 1..3, got 4"),
])
def test_lengths_get_one_answer_everywhere(lengths, exc, message):
    """The kernels, the layers and the reference share one check (they used to disagree on
    NaN: TypeError in one, ValueError in the others)."""
    T, B, I, H = 3, 2, 2, 3
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I))
    w = [rng.standard_normal(s) for s in ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,))]
    calls = [lambda: fastlstm.lstm(x, *w, lengths=lengths),
             lambda: ref.lstm(x, *w, lengths=lengths),
             lambda: fastlstm.LSTM(I, H, dtype=np.float64).forward(x, lengths=lengths)]
    for call in calls:
        with pytest.raises(exc, match=re.escape(message)):
            call()
