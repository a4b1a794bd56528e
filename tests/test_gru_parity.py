"""fastlstm.gru (C kernels) against the NumPy reference, both GRU variants."""

from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from testkit import (DTYPES, GRU_GRAD_NAMES, SEQ_SHAPES, assert_results_close,
                      assert_results_equal, copy_problem, make_gru_problem, make_upstream,
                      map_arrays, noncontiguous, readonly, sweep_cases)
from fastlstm import reference as ref

OUT_NAMES = ("output", "h_n")
VARIANTS = [pytest.param(True, id="lbr"), pytest.param(False, id="orig")]


def problem(case, dtype, linear_before_reset: bool) -> dict:
    return make_gru_problem(case.T, case.B, case.I, case.H, dtype, seed=case.seed,
                            with_h0=case.with_h0, with_lengths=case.with_lengths,
                            batch_first=case.batch_first,
                            linear_before_reset=linear_before_reset)


def check_against_reference(p: dict, up: dict, dtype, what: str = "") -> None:
    out = fastlstm.gru(**p)
    expected = ref.gru(**p)
    assert_results_close(out, expected, OUT_NAMES, dtype, what)
    grads = out.backward(**up)
    assert_results_close(grads, expected.backward(**up), GRU_GRAD_NAMES, dtype, what + "d")


@pytest.mark.parametrize("linear_before_reset", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sweep_cases(SEQ_SHAPES))
def test_gru_matches_reference(case, dtype, linear_before_reset, num_threads):
    num_threads(case.threads)
    p = problem(case, dtype, linear_before_reset)
    check_against_reference(p, make_upstream(p, seed=case.seed + 1000), dtype)


def test_gru_variants_differ():
    """Guards against a kernel that ignores linear_before_reset (the sweep would still pass
    if the reference ignored it too)."""
    p = make_gru_problem(3, 2, 5, 4, np.float64, seed=1)
    a = fastlstm.gru(**dict(p, linear_before_reset=True)).output
    b = fastlstm.gru(**dict(p, linear_before_reset=False)).output
    assert np.max(np.abs(a - b)) > 1e-3


def test_gru_default_is_linear_before_reset():
    p = make_gru_problem(3, 2, 5, 4, np.float64, seed=2)
    del p["linear_before_reset"]
    np.testing.assert_array_equal(fastlstm.gru(**p).output,
                                  fastlstm.gru(**p, linear_before_reset=True).output)


@pytest.mark.parametrize("linear_before_reset", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("given", [(), ("grad_output",), ("grad_h_n",)])
def test_gru_missing_upstream_gradients_mean_zero(given, dtype, linear_before_reset):
    p = make_gru_problem(5, 4, 7, 5, dtype, seed=3, with_lengths=True,
                         linear_before_reset=linear_before_reset)
    up = {k: v for k, v in make_upstream(p, seed=4).items() if k in given}
    check_against_reference(p, up, dtype)
    if not given:
        grads = fastlstm.gru(**p).backward()
        for name in GRU_GRAD_NAMES:
            assert not np.any(getattr(grads, name)), name


@pytest.mark.parametrize("linear_before_reset", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gru_backward_twice_is_identical(dtype, linear_before_reset, num_threads):
    num_threads(2)
    p = make_gru_problem(6, 11, 7, 17, dtype, seed=5, with_lengths=True,
                         linear_before_reset=linear_before_reset)
    up = make_upstream(p, seed=6)
    out = fastlstm.gru(**p)
    first = out.backward(**up)
    out.backward(grad_h_n=up["grad_h_n"])
    second = out.backward(**up)
    assert_results_equal(first, second, GRU_GRAD_NAMES)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gru_does_not_modify_inputs(dtype):
    p = make_gru_problem(4, 6, 7, 5, dtype, seed=7, with_lengths=True, linear_before_reset=False)
    up = make_upstream(p, seed=8)
    p_before, up_before = copy_problem(p), copy_problem(up)
    out = fastlstm.gru(**p)
    out.backward(**up)
    out.backward(**up)
    for before, after in ((p_before, p), (up_before, up)):
        for k, v in before.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(after[k], v, err_msg=k)


@pytest.mark.parametrize("linear_before_reset", VARIANTS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gru_noncontiguous_inputs_same_as_contiguous(dtype, batch_first, linear_before_reset):
    p = make_gru_problem(5, 6, 7, 9, dtype, seed=9, with_lengths=True, batch_first=batch_first,
                         linear_before_reset=linear_before_reset)
    up = make_upstream(p, seed=10)
    strided = map_arrays(lambda a, k: noncontiguous(a, k % 3), p)
    strided_up = map_arrays(lambda a, k: noncontiguous(a, k % 3 + 1), up)
    assert not any(v.flags.c_contiguous for v in strided.values() if isinstance(v, np.ndarray))
    out, out_s = fastlstm.gru(**p), fastlstm.gru(**strided)
    assert_results_equal(out_s, out, OUT_NAMES)
    assert_results_equal(out_s.backward(**strided_up), out.backward(**up), GRU_GRAD_NAMES)
    check_against_reference(strided, strided_up, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gru_readonly_inputs(dtype):
    p = make_gru_problem(4, 3, 7, 5, dtype, seed=11, with_lengths=True)
    up = make_upstream(p, seed=12)
    check_against_reference(map_arrays(lambda a, k: readonly(a), p),
                            map_arrays(lambda a, k: readonly(a), up), dtype)


@pytest.mark.parametrize("linear_before_reset", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gru_every_thread_count_matches_reference(dtype, linear_before_reset, num_threads):
    p = make_gru_problem(5, 7, 28, 33, dtype, seed=13, with_lengths=True,
                         linear_before_reset=linear_before_reset)
    up = make_upstream(p, seed=14)
    for n in (1, 2, 3, 8):
        num_threads(n)
        check_against_reference(p, up, dtype, what=f"threads={n}: ")
