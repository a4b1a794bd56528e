"""Bitwise reproducibility: the same inputs give the same bits for any thread count, on every
repeated call, and when several Python threads run kernels at once (the GIL is released
during the C call and the kernels keep no global state).

"Bitwise" means equal bytes (``tobytes()``), so even 0.0 versus -0.0 would fail; no tolerance.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

import fastlstm
from testkit import (DTYPES, GRU_GRAD_NAMES, LSTM_GRAD_NAMES, make_cell_problem,
                      make_gru_problem, make_lstm_problem, make_upstream)

THREAD_COUNTS = (1, 2, 3)
KINDS = ("lstm", "gru", "gru_orig")            # gru_orig: linear_before_reset=False

# (T, B, I, H): B not divisible by 2 or 3, B < thread count, B = 1, a batch that splits into
# several row tiles per thread (B > 2 * 12), one large enough that the hoisted GEMMs outside
# the time loop run on several threads (T*B*4H*I >> 2^20 multiply-adds), and small batches
# with H >= 64, where the LSTM splits the hidden units across threads instead of the batch
# (H = 100: the split is uneven and the last share ends in a partial vector).
SHAPES = [(5, 7, 9, 13), (4, 2, 5, 6), (6, 1, 7, 5), (3, 37, 28, 33), (16, 37, 32, 64),
          (6, 1, 7, 64), (5, 3, 9, 100)]
OPTIONS = [dict(with_lengths=False, batch_first=False, with_h0=True),
           dict(with_lengths=True, batch_first=True, with_h0=False),
           dict(with_lengths=True, batch_first=False, with_h0=True)]


@pytest.fixture
def threads():
    """fastlstm.set_num_threads, restored to the default (None) afterwards."""
    yield set_threads
    fastlstm.set_num_threads(None)


def set_threads(n: int) -> None:
    fastlstm.set_num_threads(n)
    if fastlstm.openmp_enabled():
        assert fastlstm.get_num_threads() == n


def problem(kind: str, shape, dtype, seed: int, **opts) -> dict:
    if kind == "lstm":
        return make_lstm_problem(*shape, dtype, seed=seed, **opts)
    return make_gru_problem(*shape, dtype, seed=seed, linear_before_reset=(kind == "gru"), **opts)


def run(kind: str, p: dict, up: dict) -> dict:
    """Every output, final state and gradient of one forward + backward, by name."""
    out = (fastlstm.lstm if kind == "lstm" else fastlstm.gru)(**p)
    res = {"output": out.output, "h_n": out.h_n}
    if kind == "lstm":
        res["c_n"] = out.c_n
    g = out.backward(**up)
    res.update({"d" + n: getattr(g, n) for n in (LSTM_GRAD_NAMES if kind == "lstm"
                                                 else GRU_GRAD_NAMES)})
    return res


def assert_bitwise(got: dict, expected: dict, what: str) -> None:
    assert got.keys() == expected.keys()
    for name, e in expected.items():
        a = got[name]
        assert a.dtype == e.dtype and a.shape == e.shape, f"{what}: {name}"
        if a.tobytes() != e.tobytes():
            diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
            raise AssertionError(f"{what}: {name} differs in {int(np.sum(a != e))}/{a.size} "
                                 f"elements (max abs diff {np.nanmax(diff):.3e})")


def case_id(shape, opts) -> str:
    T, B, I, H = shape
    return (f"T{T}B{B}I{I}H{H}-{'len' if opts['with_lengths'] else 'full'}-"
            f"{'bf' if opts['batch_first'] else 'tm'}-{'h0' if opts['with_h0'] else 'noh0'}")


CASES = [pytest.param(s, o, id=case_id(s, o)) for s in SHAPES for o in OPTIONS]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape, opts", CASES)
def test_sequence_bitwise_identical_for_any_thread_count_and_repeat(shape, opts, kind, dtype,
                                                                    threads):
    p = problem(kind, shape, dtype, seed=sum(shape), **opts)
    up = make_upstream(p, seed=7, lstm=(kind == "lstm"))
    threads(1)
    expected = run(kind, p, up)
    for n in THREAD_COUNTS:
        threads(n)
        for repeat in range(2):
            assert_bitwise(run(kind, p, up), expected, f"threads={n} call {repeat}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_backward_repeated_on_one_forward_is_bitwise_identical(kind, dtype, threads):
    """backward() called again (with other thread counts in between) gives the same bits."""
    p = problem(kind, (6, 13, 11, 17), dtype, seed=3, with_lengths=True)
    up = make_upstream(p, seed=4, lstm=(kind == "lstm"))
    names = LSTM_GRAD_NAMES if kind == "lstm" else GRU_GRAD_NAMES
    out = (fastlstm.lstm if kind == "lstm" else fastlstm.gru)(**p)
    threads(1)
    first = {n: getattr(out.backward(**up), n) for n in names}
    for n in (3, 2, 1, 3):
        threads(n)
        out.backward(grad_h_n=up["grad_h_n"])                   # a different call in between
        assert_bitwise({k: getattr(out.backward(**up), k) for k in names}, first, f"threads={n}")


CELL_SHAPES = [(1, 7, 5), (2, 5, 6), (7, 9, 13), (37, 28, 33)]


def run_cells(p_lstm: dict, p_gru: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    dt = p_lstm["x"].dtype
    gh, gc = (rng.standard_normal(p_lstm["h"].shape).astype(dt) for _ in range(2))
    res = {}
    res["lstm.h1"], res["lstm.c1"] = fastlstm.lstm_cell(**p_lstm)
    g = fastlstm.lstm_cell_backward(**p_lstm, grad_h=gh, grad_c=gc)
    res.update({f"lstm.d{n}": getattr(g, n) for n in ("x", "h", "c", "weight_ih", "weight_hh",
                                                      "bias_ih", "bias_hh")})
    for lbr in (True, False):
        res[f"gru{lbr}.h1"] = fastlstm.gru_cell(**p_gru, linear_before_reset=lbr)
        g = fastlstm.gru_cell_backward(**p_gru, grad_h=gh, linear_before_reset=lbr)
        res.update({f"gru{lbr}.d{n}": getattr(g, n) for n in ("x", "h", "weight_ih",
                                                                "weight_hh", "bias_ih",
                                                                "bias_hh")})
    return res


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CELL_SHAPES, ids=lambda s: "B{}I{}H{}".format(*s))
def test_cells_bitwise_identical_for_any_thread_count_and_repeat(shape, dtype, threads):
    p_lstm = make_cell_problem("lstm", *shape, dtype=dtype, seed=1)
    p_gru = make_cell_problem("gru", *shape, dtype=dtype, seed=2)
    threads(1)
    expected = run_cells(p_lstm, p_gru, 3)
    for n in THREAD_COUNTS:
        threads(n)
        for repeat in range(2):
            assert_bitwise(run_cells(p_lstm, p_gru, 3), expected, f"threads={n} call {repeat}")


# A unit's bits do not depend on where it sits in a vector
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [3, 9])                 # the small-batch split, and row tiles
@pytest.mark.parametrize("n_tail", [1, 3, 7, 15])
def test_lstm_unit_values_do_not_depend_on_vector_lanes(n_tail, batch, threads):
    """The float32 epilogue runs on whole vectors and then unit by unit for what is left, so a
    unit in the tail must get exactly the bits it would get in a vector lane. With h0 = 0 the
    gate pre-activations of unit j do not depend on H, so the first H_small units of a model
    with H_small = 32 + n_tail (the last ones in the tail) must equal those of the same model
    with H = 64 (all in vector lanes), bit for bit. Pre-activations span +-20 to reach the
    activations' clamps."""
    rng = np.random.default_rng(11)
    T, I, big, small = 2, 7, 64, 32 + n_tail
    w_ih = (rng.standard_normal((4 * big, I)) * 4).astype(np.float32)
    w_hh = np.zeros((4 * big, big), np.float32)   # only T = 1 is compared; step 2 runs the tail
    b_ih = rng.standard_normal(4 * big).astype(np.float32)
    b_hh = rng.standard_normal(4 * big).astype(np.float32)
    c0 = (rng.standard_normal((batch, big)) * 3).astype(np.float32)
    x = rng.standard_normal((T, batch, I)).astype(np.float32)
    rows = np.concatenate([np.arange(q * big, q * big + small) for q in range(4)])
    threads(2)
    ref = fastlstm.lstm(x, w_ih, w_hh, b_ih, b_hh, c0=c0, training=False)
    got = fastlstm.lstm(x, w_ih[rows], np.ascontiguousarray(w_hh[rows][:, :small]), b_ih[rows],
                        b_hh[rows], c0=c0[:, :small], training=False)
    # with W_hh = 0 every step's gates depend on x_t alone; c carries over unit by unit
    assert got.output.tobytes() == np.ascontiguousarray(ref.output[..., :small]).tobytes()
    assert got.c_n.tobytes() == np.ascontiguousarray(ref.c_n[:, :small]).tobytes()


# ----------------------------------------------------------------------------------------------
# Several Python threads at once
# ----------------------------------------------------------------------------------------------

def run_concurrently(jobs: list, rounds: int) -> list:
    """Run every job ``rounds`` times, all jobs in their own Python thread, started together.
    Returns, per job, the list of its results; re-raises the first exception of any thread."""
    barrier = threading.Barrier(len(jobs))
    results = [[] for _ in jobs]
    errors = []

    def worker(k: int) -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(rounds):
                results[k].append(jobs[k]())
        except BaseException as exc:  # noqa: BLE001 -- reported in the main thread
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(len(jobs))]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in pool), "a worker thread hangs"
    if errors:
        raise errors[0]
    return results


def mixed_jobs(dtype) -> list:
    """Different kernels on different inputs, one per Python thread."""
    jobs = []
    for k, (kind, shape, opts) in enumerate([
            ("lstm", (8, 13, 16, 24), dict(with_lengths=True)),
            ("gru", (7, 29, 12, 20), dict(batch_first=True)),
            ("gru_orig", (9, 6, 8, 31), dict(with_lengths=True, batch_first=True)),
            ("lstm", (16, 37, 32, 64), dict()),
            ("gru", (5, 1, 3, 4), dict(with_h0=False))]):
        p = problem(kind, shape, dtype, seed=100 + k, **opts)
        up = make_upstream(p, seed=200 + k, lstm=(kind == "lstm"))
        jobs.append(lambda kind=kind, p=p, up=up: run(kind, p, up))
    p_lstm = make_cell_problem("lstm", 11, 7, 9, dtype=dtype, seed=300)
    p_gru = make_cell_problem("gru", 11, 7, 9, dtype=dtype, seed=301)
    jobs.append(lambda: run_cells(p_lstm, p_gru, 302))
    return jobs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel_threads", [1, 2])
def test_concurrent_python_threads_give_the_single_threaded_results(dtype, kernel_threads,
                                                                     threads):
    jobs = mixed_jobs(dtype)
    threads(1)
    expected = [job() for job in jobs]
    threads(kernel_threads)            # each Python thread then opens its own OpenMP team
    for k, per_job in enumerate(run_concurrently(jobs, rounds=5)):
        for r, got in enumerate(per_job):
            assert_bitwise(got, expected[k], f"job {k} round {r}")


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_backward_on_one_shared_result(kind, threads):
    """Several threads calling backward() on the same forward result at once."""
    p = problem(kind, (10, 23, 16, 32), np.float32, seed=11, with_lengths=True)
    ups = [make_upstream(p, seed=20 + k, lstm=(kind == "lstm")) for k in range(4)]
    names = LSTM_GRAD_NAMES if kind == "lstm" else GRU_GRAD_NAMES
    out = (fastlstm.lstm if kind == "lstm" else fastlstm.gru)(**p)
    threads(1)
    expected = [{n: getattr(out.backward(**up), n) for n in names} for up in ups]
    threads(2)
    jobs = [lambda up=up: {n: getattr(out.backward(**up), n) for n in names} for up in ups]
    for k, per_job in enumerate(run_concurrently(jobs, rounds=3)):
        for r, got in enumerate(per_job):
            assert_bitwise(got, expected[k], f"upstream {k} round {r}")


def largest_stall(call) -> tuple:
    """Run ``call`` in a worker thread while this thread keeps taking timestamps; return
    (duration of the call, longest interval during it in which this thread could not run).

    A call that holds the GIL stalls this thread for (nearly) its whole duration."""
    span = {}

    def worker():
        span["start"] = time.perf_counter()
        call()
        span["end"] = time.perf_counter()

    ticks = []
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    try:
        t = threading.Thread(target=worker)
        t.start()
        while t.is_alive():
            ticks.append(time.perf_counter())
        t.join()
    finally:
        sys.setswitchinterval(old)
    inside = [span["start"]] + [x for x in ticks if span["start"] < x < span["end"]] + [span["end"]]
    return span["end"] - span["start"], float(np.max(np.diff(inside)))


def test_kernels_release_the_gil(threads):
    """While a long kernel runs in one Python thread, another keeps running. The control (a
    C loop that holds the GIL) shows that the measurement can tell the difference."""
    threads(1)
    p = make_lstm_problem(100, 64, 128, 256, np.float32, seed=5)
    n = 10**6
    while True:                                  # a control lasting at least 0.1 s
        start = time.perf_counter()
        sum(range(n))
        if time.perf_counter() - start > 0.1:
            break
        n *= 2
    duration, stall = largest_stall(lambda: sum(range(n)))
    assert stall > 0.5 * duration, "control: the measurement cannot see a held GIL"
    duration, stall = largest_stall(lambda: fastlstm.lstm(**p, training=False))
    assert duration > 0.05, "the kernel call is too short to measure"
    assert stall < 0.5 * duration, (f"the main thread stalled {stall:.3f} s of a {duration:.3f} s "
                                    f"kernel call: the GIL is held")
