"""GRU (PyTorch variant, linear_before_reset=True), float32: fastlstm vs the NumPy reference vs
torch.nn.GRU (forward and train step) vs ONNX Runtime's GRU (linear_before_reset=1, forward only).

    pytest bench/bench_gru.py --benchmark-only
"""

import pytest

from common import IMPLS, MODES, SHAPES, THREADS


# impl varies fastest, so that the peers of one group run one right after the other
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("threads", THREADS, ids=lambda n: f"t{n}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_gru(run_rnn, impl, shape, mode, threads):
    run_rnn("gru", impl, shape, mode, threads)
