"""NumPy float32 matmul, 2048 x 2048 @ 2048 x 2048: the machine's "peak" for the README.

fastlstm has no public GEMM; this is what the machine's BLAS reaches, measured in the same
run as the RNN benchmarks so that their GFLOP/s can be read as a fraction of it.
"""

import numpy as np
import pytest

from common import THREADS, thread_count

N = 2048


@pytest.mark.parametrize("threads", THREADS, ids=lambda n: f"t{n}")
def test_numpy_matmul(benchmark, threads):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((N, N), dtype=np.float32)
    b = rng.standard_normal((N, N), dtype=np.float32)
    out = np.empty((N, N), np.float32)
    benchmark.group = f"numpy matmul {N} float32"
    with thread_count(threads) as set_to:
        benchmark(np.matmul, a, b, out=out)
    # correct: a few entries against a float64 dot product
    i = np.arange(0, N, 511)
    expected = a[i].astype(np.float64) @ b[:, i].astype(np.float64)
    n_flops = 2.0 * N ** 3
    stats = getattr(benchmark, "stats", None)
    median = stats.stats.median if stats is not None else None
    benchmark.extra_info.update(
        impl="numpy", flops=n_flops, gflops=n_flops / median / 1e9 if median else None,
        n_threads=threads, threads_set=set_to,
        correct=bool(np.allclose(out[np.ix_(i, i)], expected, rtol=1e-4, atol=1e-3)))
