"""fastlstm: fused LSTM and GRU kernels in C (forward and backpropagation through time),
parallel across the batch with OpenMP, for NumPy arrays on the CPU.

See ``fastlstm.lstm`` and ``fastlstm.gru`` for the sequence functions, ``fastlstm.reference``
for the plain-NumPy implementation every kernel is tested against.
"""
from __future__ import annotations

import os

from ._threads import get_num_threads, openmp_enabled, set_num_threads
from .rnn import (GRUGradients, GRUResult, LSTMGradients, LSTMResult, gru, gru_cell,
                  gru_cell_backward, lstm, lstm_cell, lstm_cell_backward)
from ._core import KernelError, isa, release_scratch
from . import data, model, optim
from .layers import GRU, LSTM, Dense
from .loss import softmax_cross_entropy
from .model import CheckpointError, SequenceClassifier

__version__ = "0.1.0"


def get_include() -> str:
    """The folder holding ``fastlstm.h`` (the C API) and the ``.pxd`` files, for C or Cython
    code that calls the kernels directly (``include_dirs=[fastlstm.get_include()]``)."""
    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(here, "include")
    if os.path.exists(os.path.join(installed, "fastlstm.h")):
        return installed
    return os.path.join(os.path.dirname(here), "csrc")  # an in-place (editable) build


__all__ = ["lstm", "gru", "lstm_cell", "lstm_cell_backward", "gru_cell", "gru_cell_backward",
           "LSTMResult", "GRUResult", "LSTMGradients", "GRUGradients", "KernelError",
           "set_num_threads", "get_num_threads", "openmp_enabled", "isa", "get_include",
           "release_scratch",
           "LSTM", "GRU", "Dense", "SequenceClassifier", "CheckpointError",
           "softmax_cross_entropy", "data", "model", "optim", "__version__"]
