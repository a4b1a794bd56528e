"""GRU (PyTorch variant, linear_before_reset=True), float32: fastlstm vs the NumPy reference vs
torch.nn.GRU, forward and train step.

    pytest bench/bench_gru.py --benchmark-only
"""

import pytest

from bench.common import IMPLS, MODES, SHAPES, THREADS


@pytest.mark.parametrize("threads", THREADS, ids=lambda n: f"t{n}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("impl", IMPLS)
def test_gru(run_rnn, impl, shape, mode, threads):
    run_rnn("gru", impl, shape, mode, threads)
