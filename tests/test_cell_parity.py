"""Single-step cells (fastlstm.lstm_cell, gru_cell and their backward) against the reference."""

from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from testkit import (DTYPES, THREADS, assert_close, assert_results_close,
                      assert_results_equal, copy_problem, make_cell_problem, map_arrays,
                      noncontiguous, readonly)
from fastlstm import reference as ref

CELL_SHAPES = [(1, 1, 1), (1, 28, 17), (5, 7, 3), (37, 7, 33), (16, 28, 64), (9, 1, 5)]
LSTM_CELL_GRADS = ("x", "h", "c", "weight_ih", "weight_hh", "bias_ih", "bias_hh")
GRU_CELL_GRADS = ("x", "h", "weight_ih", "weight_hh", "bias_ih", "bias_hh")
VARIANTS = [pytest.param(True, id="lbr"), pytest.param(False, id="orig")]


def cell_cases():
    return [pytest.param(shape, THREADS[k % len(THREADS)], k,
                         id=f"B{shape[0]}I{shape[1]}H{shape[2]}-t{THREADS[k % len(THREADS)]}")
            for k, shape in enumerate(CELL_SHAPES)]


def upstream(p: dict, seed: int, names=("grad_h", "grad_c")) -> dict:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(p["h"].shape).astype(p["h"].dtype) for n in names}


def check_lstm_cell(p: dict, up: dict, dtype) -> None:
    h1, c1 = fastlstm.lstm_cell(**p)
    e_h1, e_c1 = ref.lstm_cell(**p)
    assert_close(h1, e_h1, dtype, "h1")
    assert_close(c1, e_c1, dtype, "c1")
    grads = fastlstm.lstm_cell_backward(**p, **up)
    assert_results_close(grads, ref.lstm_cell_backward(**p, **up), LSTM_CELL_GRADS, dtype, "d")


def check_gru_cell(p: dict, up: dict, dtype, lbr: bool) -> None:
    h1 = fastlstm.gru_cell(**p, linear_before_reset=lbr)
    assert_close(h1, ref.gru_cell(**p, linear_before_reset=lbr), dtype, "h1")
    grads = fastlstm.gru_cell_backward(**p, **up, linear_before_reset=lbr)
    expected = ref.gru_cell_backward(**p, **up, linear_before_reset=lbr)
    assert_results_close(grads, expected, GRU_CELL_GRADS, dtype, "d")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, threads, seed", cell_cases())
def test_lstm_cell_matches_reference(shape, threads, seed, dtype, num_threads):
    num_threads(threads)
    p = make_cell_problem("lstm", *shape, dtype=dtype, seed=seed)
    check_lstm_cell(p, upstream(p, seed + 100), dtype)


@pytest.mark.parametrize("linear_before_reset", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, threads, seed", cell_cases())
def test_gru_cell_matches_reference(shape, threads, seed, dtype, linear_before_reset,
                                    num_threads):
    num_threads(threads)
    p = make_cell_problem("gru", *shape, dtype=dtype, seed=seed)
    check_gru_cell(p, upstream(p, seed + 100, ("grad_h",)), dtype, linear_before_reset)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("given", [(), ("grad_h",), ("grad_c",)])
def test_lstm_cell_missing_upstream_means_zero(given, dtype):
    p = make_cell_problem("lstm", 4, 7, 5, dtype=dtype, seed=1)
    check_lstm_cell(p, upstream(p, 2, given), dtype)


@pytest.mark.parametrize("linear_before_reset", VARIANTS)
def test_gru_cell_missing_upstream_means_zero(linear_before_reset):
    p = make_cell_problem("gru", 4, 7, 5, dtype=np.float64, seed=3)
    grads = fastlstm.gru_cell_backward(**p, linear_before_reset=linear_before_reset)
    for name in GRU_CELL_GRADS:
        assert not np.any(getattr(grads, name)), name


def test_gru_cell_default_is_linear_before_reset():
    p = make_cell_problem("gru", 3, 4, 5, dtype=np.float64, seed=4)
    np.testing.assert_array_equal(fastlstm.gru_cell(**p),
                                  fastlstm.gru_cell(**p, linear_before_reset=True))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cells_do_not_modify_inputs(dtype):
    for kind in ("lstm", "gru"):
        p = make_cell_problem(kind, 5, 7, 6, dtype=dtype, seed=5)
        up = upstream(p, 6, ("grad_h", "grad_c") if kind == "lstm" else ("grad_h",))
        before, up_before = copy_problem(p), copy_problem(up)
        if kind == "lstm":
            fastlstm.lstm_cell(**p)
            fastlstm.lstm_cell_backward(**p, **up)
        else:
            fastlstm.gru_cell(**p)
            fastlstm.gru_cell_backward(**p, **up)
        for b, a in ((before, p), (up_before, up)):
            for k, v in b.items():
                np.testing.assert_array_equal(a[k], v, err_msg=f"{kind} {k}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cells_noncontiguous_and_readonly_inputs(dtype):
    p = make_cell_problem("lstm", 6, 7, 9, dtype=dtype, seed=7)
    up = upstream(p, 8)
    plain_h1, plain_c1 = fastlstm.lstm_cell(**p)
    plain_g = fastlstm.lstm_cell_backward(**p, **up)
    for variant in (map_arrays(lambda a, k: noncontiguous(a, k % 3), p),
                    map_arrays(lambda a, k: readonly(a), p)):
        up_v = map_arrays(lambda a, k: noncontiguous(a, k + 1), up)
        h1, c1 = fastlstm.lstm_cell(**variant)
        np.testing.assert_array_equal(h1, plain_h1)
        np.testing.assert_array_equal(c1, plain_c1)
        assert_results_equal(fastlstm.lstm_cell_backward(**variant, **up_v), plain_g,
                             LSTM_CELL_GRADS)

    q = make_cell_problem("gru", 6, 7, 9, dtype=dtype, seed=9)
    gh = upstream(q, 10, ("grad_h",))
    for lbr in (True, False):
        plain = fastlstm.gru_cell_backward(**q, **gh, linear_before_reset=lbr)
        for variant in (map_arrays(lambda a, k: noncontiguous(a, k % 3), q),
                        map_arrays(lambda a, k: readonly(a), q)):
            np.testing.assert_array_equal(fastlstm.gru_cell(**variant, linear_before_reset=lbr),
                                          fastlstm.gru_cell(**q, linear_before_reset=lbr))
            got = fastlstm.gru_cell_backward(**variant, **map_arrays(lambda a, k: readonly(a), gh),
                                             linear_before_reset=lbr)
            assert_results_equal(got, plain, GRU_CELL_GRADS)


@pytest.mark.parametrize("linear_before_reset", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cell_step_equals_one_step_sequence(dtype, linear_before_reset):
    """The cell API and the sequence API agree with each other, not only with the reference."""
    p = make_cell_problem("lstm", 5, 7, 6, dtype=dtype, seed=11)
    h1, c1 = fastlstm.lstm_cell(**p)
    out = fastlstm.lstm(p["x"][None], p["weight_ih"], p["weight_hh"], p["bias_ih"],
                        p["bias_hh"], p["h"], p["c"])
    assert_close(h1, out.h_n.astype(np.float64), dtype, "h1 vs lstm h_n")
    assert_close(c1, out.c_n.astype(np.float64), dtype, "c1 vs lstm c_n")
    q = make_cell_problem("gru", 5, 7, 6, dtype=dtype, seed=12)
    h1 = fastlstm.gru_cell(**q, linear_before_reset=linear_before_reset)
    out = fastlstm.gru(q["x"][None], q["weight_ih"], q["weight_hh"], q["bias_ih"],
                       q["bias_hh"], q["h"], linear_before_reset=linear_before_reset)
    assert_close(h1, out.h_n.astype(np.float64), dtype, "h1 vs gru h_n")
