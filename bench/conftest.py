"""pytest glue for the benchmarks: the ``run_rnn`` fixture and the machine info in the JSON.

The benchmarks are skipped by plain ``pytest`` (``--benchmark-skip`` in pyproject's addopts)
and run by ``pytest bench --benchmark-only``. Shapes, peers and checks live in ``common.py``.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict

import pytest

import common

PAUSE = 0.05  # seconds before each benchmark (see run_rnn)


def pytest_benchmark_update_machine_info(config, machine_info: Dict[str, Any]) -> None:
    machine_info["fastlstm_bench"] = common.machine_info()


def pytest_benchmark_update_json(config, benchmarks, output_json: Dict[str, Any]) -> None:
    output_json["command"] = " ".join(sys.argv)


@pytest.fixture
def run_rnn(benchmark) -> Callable[[str, str, str, str, int], None]:
    """``run_rnn(cell, impl, shape, mode, threads)``: check once, then time one peer.

    Peers with the same cell, mode, shape and thread count share a benchmark group, so they sit
    side by side in pytest-benchmark's table (onnxruntime: forward only, skipped when it or
    onnx is not installed). ``extra_info`` holds GFLOP/s (standard count, from
    the median), the thread settings, the build (ISA, OpenMP) and the correctness check.
    """

    def run(cell: str, impl: str, shape: str, mode: str, threads: int) -> None:
        if impl == "torch":
            pytest.importorskip("torch")
        if impl == "onnxruntime":
            if mode not in common.impl_modes(impl):
                pytest.skip("ONNX Runtime is an inference peer: forward only")
            pytest.importorskip("onnx")
            pytest.importorskip("onnxruntime")
        if impl == "numpy_ref" and shape == "long":
            pytest.skip("the NumPy reference takes 10-30 s per call at the long shape; "
                        "fastlstm is checked against it on a few batch rows instead")
        p = common.problem(cell, shape)
        benchmark.group = f"{cell} {mode} {shape} t{threads}"
        with common.thread_count(threads) as set_to:
            result = common.check(impl, cell, shape, mode)
            fn = common.make_runner(impl, cell, mode, p, threads)
            # fastlstm's OpenMP threads and ONNX Runtime's keep spinning for a while after a
            # call: let the previous benchmark's threads go idle before timing this one
            time.sleep(PAUSE)
            benchmark(fn)
        T, B, I, H = common.SHAPES[shape]
        n_flops = common.flops(cell, shape, mode)
        stats = getattr(benchmark, "stats", None)
        median = stats.stats.median if stats is not None else None
        benchmark.extra_info.update(
            impl=impl, cell=cell, mode=mode, shape=shape, T=T, B=B, I=I, H=H, dtype="float32",
            flops=n_flops, gflops=n_flops / median / 1e9 if median else None,
            n_threads=threads, threads_set=set_to, openmp_enabled=common.fastlstm.openmp_enabled(),
            isa=common.fastlstm.isa(), **result.as_dict())

    return run
