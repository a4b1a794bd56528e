"""Softmax cross-entropy: numerically stable, mean over the batch."""

from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["log_softmax", "softmax_cross_entropy"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log(softmax(logits)) over the last axis, computed as ``z - max - log(sum(exp(z - max)))``."""
    z = np.asarray(logits)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> Tuple[float, np.ndarray]:
    """Mean cross-entropy of integer class ``labels`` under ``softmax(logits)``, and its gradient.

    Parameters
    ----------
    logits : (B, C) float array
    labels : (B,) integers in 0..C-1

    Returns
    -------
    loss : float
        ``-mean_b log softmax(logits)[b, labels[b]]``.
    grad : (B, C) array, dtype of ``logits``
        d loss / d logits = ``(softmax(logits) - onehot(labels)) / B``.
    """
    z = np.asarray(logits)
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"logits must have shape (B, C) with B >= 1, got {z.shape}")
    if z.dtype.kind != "f":
        z = z.astype(np.float64)
    y = np.asarray(labels)
    B, C = z.shape
    if y.shape != (B,):
        raise ValueError(f"labels must have shape ({B},), got {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= C:
        raise ValueError(f"labels must be in 0..{C - 1}, got min {y.min()}, max {y.max()}")
    logp = log_softmax(z)
    rows = np.arange(B)
    loss = -float(logp[rows, y].astype(np.float64).mean())
    grad = np.exp(logp)
    grad[rows, y] -= 1
    grad /= B
    return loss, grad
