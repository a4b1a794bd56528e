"""Shared helpers of the test suite (problem builders, the tolerance table, comparisons, fixtures).

Every comparison of a kernel against the reference goes through :func:`assert_close` with
``TOL``; no tolerance sits inline in a test.
"""

from __future__ import annotations

import os
from itertools import product
from typing import NamedTuple, Optional

import numpy as np
import pytest

# Kernel (in `dtype`) vs the float64 reference of the same inputs.
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}

# Central finite differences (eps = FD_EPS, float64) vs the reference's analytic gradients.
# The rounding error of a difference quotient is ~ 1e-16 * |loss| / eps ~ 1e-10 here.
FD_EPS = 1e-6
FD_TOL = dict(rtol=1e-6, atol=1e-8)

THREADS = (1, 2, 3)
DTYPES = (np.float64, np.float32)

LSTM_GRAD_NAMES = ("x", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "h0", "c0")
GRU_GRAD_NAMES = ("x", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "h0")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


# ----------------------------------------------------------------------------------------------
# Comparisons
# ----------------------------------------------------------------------------------------------

def assert_close(actual, expected, dtype, name: str) -> None:
    """Assert ``actual`` (kernel, in ``dtype``) matches ``expected`` (float64 reference).

    Elementwise ``|actual - expected| <= atol * scale + rtol * |expected|`` with the TOL entry
    of ``dtype``, where ``scale = max(1, max|expected|)`` scales atol to the magnitude of the
    quantity (a weight gradient is a sum over T*B terms, and its small entries carry the
    rounding error of the large ones). Also checks shape and that ``actual`` has ``dtype``.
    """
    dtype = np.dtype(dtype).type
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == dtype, f"{name}: dtype {actual.dtype}, expected {np.dtype(dtype)}"
    tol = TOL[dtype]
    _assert_within(actual, expected, tol["rtol"], tol["atol"], name, np.dtype(dtype).name)


def assert_close_fd(analytic, numeric, name: str) -> None:
    """Assert an analytic float64 gradient matches a finite-difference one (FD_TOL)."""
    _assert_within(np.asarray(analytic), np.asarray(numeric), FD_TOL["rtol"], FD_TOL["atol"],
                   name, "finite differences")


def _assert_within(actual, expected, rtol, atol, name, what) -> None:
    expected = expected.astype(np.float64)
    actual = actual.astype(np.float64)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    err = np.abs(actual - expected)
    bound = atol * scale + rtol * np.abs(expected)
    finite = np.all(np.isfinite(actual))
    if not finite or np.any(err > bound):
        worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else ()
        msg = (f"{name} ({what}): max abs err {np.max(err):.3e}, max rel err "
               f"{np.max(err / np.maximum(np.abs(expected), 1e-300)):.3e}, "
               f"{int(np.sum(~(err <= bound)))}/{err.size} elements out of tolerance "
               f"(rtol={rtol}, atol={atol}*{scale:.3g}); worst at {worst}: "
               f"actual {actual[worst]!r}, expected {expected[worst]!r}")
        print(msg)
        raise AssertionError(msg)
    if err.size:
        print(f"{name} ({what}): max abs err {np.max(err):.3e}")


def assert_results_close(actual, expected, names, dtype, what: str = "") -> None:
    """assert_close on every attribute in ``names`` of two result/gradient objects."""
    for name in names:
        assert_close(getattr(actual, name), getattr(expected, name), dtype, what + name)


def assert_results_equal(a, b, names, what: str = "") -> None:
    """Bitwise equality of every attribute in ``names`` (dtype included)."""
    for name in names:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, f"{what}{name}: dtype {x.dtype} != {y.dtype}"
        np.testing.assert_array_equal(x, y, err_msg=what + name)


def max_rel_err(actual, expected) -> float:
    """max |a - e| / max(1, max|e|): one number per quantity, for reports."""
    expected = np.asarray(expected, dtype=np.float64)
    err = np.abs(np.asarray(actual, dtype=np.float64) - expected)
    if not err.size:
        return 0.0
    return float(err.max() / max(1.0, np.abs(expected).max()))


# ----------------------------------------------------------------------------------------------
# Random problems
# ----------------------------------------------------------------------------------------------

def random_lengths(rng: np.random.Generator, T: int, B: int) -> np.ndarray:
    """(B,) int64 lengths in 1..T, including a full-length and a length-1 sequence if B >= 2."""
    lengths = rng.integers(1, T + 1, size=B)
    if B >= 2:
        lengths[rng.permutation(B)[:2]] = (T, 1)
    return lengths.astype(np.int64)


def _make_problem(n_gates: int, T: int, B: int, I: int, H: int, dtype, seed: int,
                  with_h0: bool, with_c0: bool, with_lengths: bool, batch_first: bool,
                  weight_scale: float) -> dict:
    rng = np.random.default_rng(seed)
    k = weight_scale / np.sqrt(H)            # PyTorch's U(-1/sqrt(H), 1/sqrt(H)), scaled

    def u(lo, hi, shape):
        return rng.uniform(lo, hi, size=shape).astype(dtype)

    x_shape = (B, T, I) if batch_first else (T, B, I)
    # x in [-1, 1] and h0, c0 in [-0.5, 0.5] keep the gates away from saturation, where a
    # wrong gate gradient would hide behind sigmoid' ~ 0.
    p = dict(x=u(-1, 1, x_shape),
             weight_ih=u(-k, k, (n_gates * H, I)), weight_hh=u(-k, k, (n_gates * H, H)),
             bias_ih=u(-k, k, (n_gates * H,)), bias_hh=u(-k, k, (n_gates * H,)),
             h0=u(-0.5, 0.5, (B, H)) if with_h0 else None)
    if n_gates == 4:
        p["c0"] = u(-0.5, 0.5, (B, H)) if with_c0 else None
    p["lengths"] = random_lengths(rng, T, B) if with_lengths else None
    p["batch_first"] = batch_first
    return p


def make_lstm_problem(T: int, B: int, I: int, H: int, dtype=np.float64, seed: int = 0,
                      with_h0: bool = True, with_lengths: bool = False, *,
                      with_c0: Optional[bool] = None, batch_first: bool = False,
                      weight_scale: float = 1.0) -> dict:
    """Random keyword arguments for ``lstm(**p)``: x, weights, biases, h0, c0, lengths, batch_first.

    ``with_c0`` defaults to ``with_h0``. Absent states/lengths are None. Same seed, same data.
    """
    with_c0 = with_h0 if with_c0 is None else with_c0
    return _make_problem(4, T, B, I, H, dtype, seed, with_h0, with_c0, with_lengths,
                         batch_first, weight_scale)


def make_gru_problem(T: int, B: int, I: int, H: int, dtype=np.float64, seed: int = 0,
                     with_h0: bool = True, with_lengths: bool = False, *,
                     batch_first: bool = False, linear_before_reset: bool = True,
                     weight_scale: float = 1.0) -> dict:
    """Random keyword arguments for ``gru(**p)`` (including ``linear_before_reset``)."""
    p = _make_problem(3, T, B, I, H, dtype, seed, with_h0, False, with_lengths, batch_first,
                      weight_scale)
    p["linear_before_reset"] = linear_before_reset
    return p


def make_upstream(problem: dict, seed: int = 1, lstm: Optional[bool] = None) -> dict:
    """Random (normal) upstream gradients for ``result.backward(**g)`` of a problem.

    Returns grad_output (in the problem's layout), grad_h_n and, for an LSTM, grad_c_n, in the
    problem's dtype. Never ones: a uniform upstream gradient hides transposed gates.
    """
    rng = np.random.default_rng(seed)
    x = problem["x"]
    H = problem["weight_hh"].shape[1]
    B = x.shape[0] if problem.get("batch_first") else x.shape[1]
    if lstm is None:
        lstm = "c0" in problem
    g = dict(grad_output=rng.standard_normal(x.shape[:2] + (H,)).astype(x.dtype),
             grad_h_n=rng.standard_normal((B, H)).astype(x.dtype))
    if lstm:
        g["grad_c_n"] = rng.standard_normal((B, H)).astype(x.dtype)
    return g


def make_cell_problem(kind: str, B: int, I: int, H: int, dtype=np.float64,
                      seed: int = 0) -> dict:
    """Random keyword arguments for ``lstm_cell`` (kind "lstm") or ``gru_cell`` (kind "gru")."""
    n_gates = {"lstm": 4, "gru": 3}[kind]
    p = _make_problem(n_gates, 1, B, I, H, dtype, seed, True, True, False, False, 1.0)
    cell = dict(x=p["x"][0], h=p["h0"])
    if kind == "lstm":
        cell["c"] = p["c0"]
    cell.update({k: p[k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
    return cell


class Case(NamedTuple):
    """One point of a parity sweep."""

    T: int
    B: int
    I: int
    H: int
    with_lengths: bool
    with_h0: bool
    batch_first: bool
    threads: int
    seed: int


def sweep_cases(shapes) -> list:
    """Every (T, B, I, H) in ``shapes`` x lengths x h0 x layout, as pytest params.

    The thread count cycles through THREADS (so each shape meets several counts) and every
    case gets its own seed.
    """
    cases = []
    options = product((False, True), repeat=3)
    for k, ((T, B, I, H), (with_lengths, with_h0, batch_first)) in enumerate(
            product(shapes, list(options))):
        c = Case(T, B, I, H, with_lengths, with_h0, batch_first, THREADS[k % len(THREADS)], k)
        case_id = (f"T{T}B{B}I{I}H{H}-{'lengths' if with_lengths else 'full'}-"
                   f"{'h0' if with_h0 else 'noh0'}-{'bf' if batch_first else 'tm'}-t{c.threads}")
        cases.append(pytest.param(c, id=case_id))
    return cases


# Shapes for the sequence sweeps: B=1, T=1, H and I not multiples of 8/16, B up to 37.
SEQ_SHAPES = [(1, 1, 1, 1), (1, 5, 7, 3), (4, 1, 28, 17), (3, 37, 7, 5), (6, 9, 28, 33),
              (5, 16, 1, 64), (7, 3, 7, 1), (2, 37, 28, 64), (3, 8, 16, 16)]


def noncontiguous(a: np.ndarray, variant: int = 0) -> np.ndarray:
    """A non-C-contiguous view with the same values as ``a``.

    variant 0: every other element of a twice-as-wide buffer (strided last axis);
    1: reversed memory (negative strides); 2: Fortran order (2-D and up; 1-D falls back to 0);
    3-D arrays always come back as a transposed view of the other layout.
    """
    a = np.asarray(a)
    if a.ndim == 3:
        return np.ascontiguousarray(a.transpose(1, 0, 2)).transpose(1, 0, 2)
    if variant == 1:
        flipped = np.ascontiguousarray(a[::-1])
        view = flipped[::-1]
    elif variant == 2 and a.ndim >= 2:
        view = np.asfortranarray(a)
    else:
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        wide[..., ::2] = a
        view = wide[..., ::2]
    return view


def readonly(a: np.ndarray) -> np.ndarray:
    """A read-only copy of ``a``."""
    a = np.array(a)
    a.setflags(write=False)
    return a


def map_arrays(fn, d: dict) -> dict:
    """Apply ``fn(array, index)`` to every ndarray value of a dict, keep the rest."""
    out = {}
    for k, (key, v) in enumerate(d.items()):
        out[key] = fn(v, k) if isinstance(v, np.ndarray) else v
    return out


def copy_problem(problem: dict) -> dict:
    """Deep copy of the arrays in a problem dict (to check that nothing was modified)."""
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in problem.items()}


@pytest.fixture
def num_threads():
    """Yield a setter for ``fastlstm.set_num_threads`` that restores the old value afterwards."""
    import fastlstm

    old = fastlstm.get_num_threads()
    yield fastlstm.set_num_threads
    fastlstm.set_num_threads(old)


def child_env() -> dict:
    """The environment for a child Python that must import the same fastlstm as this one (an
    installed package or this tree's in-place build) from any folder."""
    import fastlstm
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastlstm.__file__)))
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join([root] + rest))


def mnist_dir():
    """The real MNIST folder: $FASTLSTM_DATA, else ../shared/datasets/mnist beside the repo;
    None when neither holds the files (the tests that need them skip)."""
    from pathlib import Path
    env = os.environ.get("FASTLSTM_DATA")
    candidates = ([Path(env)] if env else []) + [
        Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"]
    for folder in candidates:
        if (folder / "train-images-idx3-ubyte.gz").exists() or \
                (folder / "train-images-idx3-ubyte").exists():
            return folder
    return None
