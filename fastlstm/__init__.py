"""fastlstm: fused LSTM and GRU kernels in C (forward and backpropagation through time),
parallel across the batch with OpenMP, for NumPy arrays on the CPU.

See ``fastlstm.lstm`` and ``fastlstm.gru`` for the sequence functions, ``fastlstm.reference``
for the plain-NumPy implementation every kernel is tested against.
"""
from __future__ import annotations

import os


def _core_missing_error(cause: ImportError) -> ImportError:
    """The one sentence a user needs when the compiled core cannot be imported: usually this
    is the source folder of a checkout shadowing the installed package (as NumPy says)."""
    here = os.path.dirname(os.path.abspath(__file__))
    source_tree = os.path.exists(os.path.join(os.path.dirname(here), "setup.py")) and \
        os.path.exists(os.path.join(here, "_core.pyx"))
    if source_tree:
        return ImportError(
            f"fastlstm is being imported from its source folder ({here}), which has no "
            f"compiled core: run Python from another folder (or use the `fastlstm` command) to "
            f"use the installed package, or build in place with `pip install -e .`.")
    return ImportError(f"fastlstm's compiled core (fastlstm._core) failed to import: {cause}; "
                       f"reinstall fastlstm with `pip install --force-reinstall fastlstm`.")


try:
    from . import _core
except ImportError as exc:  # not a build problem of the caller's: say what to do, once
    raise _core_missing_error(exc) from None

from ._threads import get_num_threads, openmp_enabled, set_num_threads
from .rnn import (GRUGradients, GRUResult, LSTMGradients, LSTMResult, gru, gru_cell,
                  gru_cell_backward, lstm, lstm_cell, lstm_cell_backward)
from ._core import KernelError, isa, release_scratch
from .stream import GRUStream, LSTMStream
from . import data, model, optim
from . import convert  # other frameworks' weight layouts (NumPy only)
from .layers import GRU, LSTM, Dense
from .loss import softmax_cross_entropy
from .model import CheckpointError, SequenceClassifier

__version__: str = _core.version()  # FASTLSTM_VERSION of csrc/fastlstm.h


def get_include() -> str:
    """The folder holding ``fastlstm.h`` (the C API) and the ``.pxd`` files, for C or Cython
    code that calls the kernels directly (``include_dirs=[fastlstm.get_include()]``)."""
    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(here, "include")
    if os.path.exists(os.path.join(installed, "fastlstm.h")):
        return installed
    return os.path.join(os.path.dirname(here), "csrc")  # an in-place (editable) build


def get_library_dir() -> str:
    """The folder holding the static C library ``libfastlstm.a`` that this package was built
    with. A C program links it with ``-I<get_include()> -L<get_library_dir()> -lfastlstm
    -fopenmp -lm``; a Cython module that cimports ``fastlstm.libfastlstm`` adds
    ``library_dirs=[get_library_dir()], libraries=["fastlstm"]`` and ``-fopenmp``."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")


__all__ = ["lstm", "gru", "lstm_cell", "lstm_cell_backward", "gru_cell", "gru_cell_backward",
           "LSTMResult", "GRUResult", "LSTMGradients", "GRUGradients", "KernelError",
           "set_num_threads", "get_num_threads", "openmp_enabled", "isa", "get_include",
           "get_library_dir",
           "release_scratch", "LSTMStream", "GRUStream",
           "LSTM", "GRU", "Dense", "SequenceClassifier", "CheckpointError",
           "softmax_cross_entropy", "data", "model", "optim", "__version__"]
