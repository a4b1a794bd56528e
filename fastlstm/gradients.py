"""The gradient containers returned by the kernels' ``backward`` and by ``fastlstm.reference``
(plain NumPy, no compiled code, so the reference can import it on its own)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["LSTMGradients", "GRUGradients", "LSTMCellGradients", "GRUCellGradients"]


@dataclass(frozen=True)
class LSTMGradients:
    """Gradients of the loss with respect to every input of ``lstm``.

    ``h0`` and ``c0`` are the gradients with respect to the initial state, returned even when
    the forward used the default zero state.

    The extensions' gradients (``weight_hr`` (P, H) of a projection; ``ln_gain_ih``,
    ``ln_gain_hh`` (4H,), ``ln_gain_c``, ``ln_bias_c`` (H,) of layer norm) are None when the
    forward did not use the feature.
    """
    x: np.ndarray
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    bias_ih: np.ndarray
    bias_hh: np.ndarray
    h0: np.ndarray
    c0: np.ndarray
    weight_hr: Optional[np.ndarray] = None
    ln_gain_ih: Optional[np.ndarray] = None
    ln_gain_hh: Optional[np.ndarray] = None
    ln_gain_c: Optional[np.ndarray] = None
    ln_bias_c: Optional[np.ndarray] = None


@dataclass(frozen=True)
class GRUGradients:
    """Gradients of the loss with respect to every input of ``gru``.

    ``ln_gain_ih`` and ``ln_gain_hh`` are the layer-norm gains' gradients, None when the
    forward ran without layer norm.
    """
    x: np.ndarray
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    bias_ih: np.ndarray
    bias_hh: np.ndarray
    h0: np.ndarray
    ln_gain_ih: Optional[np.ndarray] = None
    ln_gain_hh: Optional[np.ndarray] = None


@dataclass(frozen=True)
class LSTMCellGradients:
    """Gradients of one LSTM step with respect to its inputs."""
    x: np.ndarray
    h: np.ndarray
    c: np.ndarray
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    bias_ih: np.ndarray
    bias_hh: np.ndarray


@dataclass(frozen=True)
class GRUCellGradients:
    """Gradients of one GRU step with respect to its inputs."""
    x: np.ndarray
    h: np.ndarray
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    bias_ih: np.ndarray
    bias_hh: np.ndarray
