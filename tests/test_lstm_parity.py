"""fastlstm.lstm (C kernels) against the NumPy reference: outputs, final states, every gradient."""

from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from testkit import (DTYPES, LSTM_GRAD_NAMES, SEQ_SHAPES, assert_close, assert_results_close,
                      assert_results_equal, copy_problem, make_gru_problem, make_lstm_problem,
                      make_upstream, map_arrays, noncontiguous, readonly, sweep_cases)
from fastlstm import reference as ref

OUT_NAMES = ("output", "h_n", "c_n")


def problem(case, dtype) -> dict:
    return make_lstm_problem(case.T, case.B, case.I, case.H, dtype, seed=case.seed,
                             with_h0=case.with_h0, with_lengths=case.with_lengths,
                             batch_first=case.batch_first)


def check_against_reference(p: dict, up: dict, dtype, what: str = "") -> None:
    out = fastlstm.lstm(**p)
    expected = ref.lstm(**p)
    assert_results_close(out, expected, OUT_NAMES, dtype, what)
    grads = out.backward(**up)
    assert_results_close(grads, expected.backward(**up), LSTM_GRAD_NAMES, dtype, what + "d")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sweep_cases(SEQ_SHAPES))
def test_lstm_matches_reference(case, dtype, num_threads):
    num_threads(case.threads)
    p = problem(case, dtype)
    check_against_reference(p, make_upstream(p, seed=case.seed + 1000), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("given", [(), ("grad_output",), ("grad_h_n",), ("grad_c_n",),
                                   ("grad_h_n", "grad_c_n")])
def test_lstm_missing_upstream_gradients_mean_zero(given, dtype):
    p = make_lstm_problem(5, 4, 7, 5, dtype, seed=1, with_lengths=True)
    up = {k: v for k, v in make_upstream(p, seed=2).items() if k in given}
    check_against_reference(p, up, dtype)
    grads = fastlstm.lstm(**p).backward(**up)
    if not given:
        for name in LSTM_GRAD_NAMES:
            assert not np.any(getattr(grads, name)), name


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_backward_twice_is_identical(dtype, threads, num_threads):
    num_threads(threads)
    p = make_lstm_problem(6, 11, 7, 17, dtype, seed=3, with_lengths=True)
    up = make_upstream(p, seed=4)
    out = fastlstm.lstm(**p)
    first = out.backward(**up)
    out.backward(grad_h_n=up["grad_h_n"])                 # a different call in between
    second = out.backward(**up)
    assert_results_equal(first, second, LSTM_GRAD_NAMES)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_does_not_modify_inputs(dtype):
    p = make_lstm_problem(4, 6, 7, 5, dtype, seed=5, with_lengths=True)
    up = make_upstream(p, seed=6)
    p_before, up_before = copy_problem(p), copy_problem(up)
    out = fastlstm.lstm(**p)
    out.backward(**up)
    out.backward(**up)
    for before, after in ((p_before, p), (up_before, up)):
        for k, v in before.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(after[k], v, err_msg=k)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_noncontiguous_inputs_same_as_contiguous(dtype, batch_first):
    p = make_lstm_problem(5, 6, 7, 9, dtype, seed=7, with_lengths=True, batch_first=batch_first)
    up = make_upstream(p, seed=8)
    strided = map_arrays(lambda a, k: noncontiguous(a, k % 3), p)
    strided_up = map_arrays(lambda a, k: noncontiguous(a, k % 3 + 1), up)
    assert not any(v.flags.c_contiguous for v in strided.values() if isinstance(v, np.ndarray))
    out, out_s = fastlstm.lstm(**p), fastlstm.lstm(**strided)
    assert_results_equal(out_s, out, OUT_NAMES)
    assert_results_equal(out_s.backward(**strided_up), out.backward(**up), LSTM_GRAD_NAMES)
    check_against_reference(strided, strided_up, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_readonly_inputs(dtype):
    p = make_lstm_problem(4, 3, 7, 5, dtype, seed=9, with_lengths=True)
    up = make_upstream(p, seed=10)
    check_against_reference(map_arrays(lambda a, k: readonly(a), p),
                            map_arrays(lambda a, k: readonly(a), up), dtype)


@pytest.mark.parametrize("lengths_dtype", [np.int32, np.int64, np.intp])
def test_lstm_lengths_integer_dtypes(lengths_dtype):
    p = make_lstm_problem(5, 4, 3, 6, np.float64, seed=11, with_lengths=True)
    up = make_upstream(p, seed=12)
    p["lengths"] = p["lengths"].astype(lengths_dtype)
    check_against_reference(p, up, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_every_thread_count_matches_reference(dtype, num_threads):
    """A batch that does not split evenly, at each thread count (more threads than rows too)."""
    p = make_lstm_problem(5, 7, 28, 33, dtype, seed=13, with_lengths=True)
    up = make_upstream(p, seed=14)
    for n in (1, 2, 3, 8):
        num_threads(n)
        check_against_reference(p, up, dtype, what=f"threads={n}: ")


def test_lstm_results_have_input_dtype_and_shapes():
    p = make_lstm_problem(3, 2, 5, 4, np.float32, seed=15, batch_first=True)
    out = fastlstm.lstm(**p)
    assert out.output.shape == (2, 3, 4) and out.h_n.shape == out.c_n.shape == (2, 4)
    grads = out.backward(**make_upstream(p, seed=16))
    for name in LSTM_GRAD_NAMES:
        expected = p[name] if p.get(name) is not None else out.h_n
        assert getattr(grads, name).shape == expected.shape, name
        assert getattr(grads, name).dtype == np.float32, name
    assert_close(out.output, ref.lstm(**p).output, np.float32, "output")


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_results_and_gradients_start_on_a_cache_line(kind):
    """Threads write neighbouring parts of each output row; an array that does not start on a
    64-byte line would put two threads' writes on one line (NumPy aligns to 16 bytes)."""
    fn = fastlstm.lstm if kind == "lstm" else fastlstm.gru
    maker = make_lstm_problem if kind == "lstm" else make_gru_problem
    for T in (1, 3, 7):    # different sizes land on different offsets of NumPy's allocations
        p = maker(T, 3, 5, 9, np.float32, seed=T)
        out = fn(**p)
        grads = out.backward(**make_upstream(p, seed=2, lstm=(kind == "lstm")))
        arrays = [out.output, out.h_n, out._reserve] + [getattr(grads, n) for n in
                                                         ("x", "weight_ih", "weight_hh")]
        assert all(a.ctypes.data % 64 == 0 for a in arrays)
