"""LSTM, float32: fastlstm vs the NumPy reference vs torch.nn.LSTM (forward and train step) vs
ONNX Runtime's LSTM (forward only).

    pytest bench/bench_lstm.py --benchmark-only
"""

import pytest

from common import IMPLS, MODES, SHAPES, THREADS


# impl varies fastest, so that the peers of one group run one right after the other
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("threads", THREADS, ids=lambda n: f"t{n}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_lstm(run_rnn, impl, shape, mode, threads):
    run_rnn("lstm", impl, shape, mode, threads)
