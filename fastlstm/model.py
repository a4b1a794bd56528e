"""``SequenceClassifier`` (recurrent stack -> last hidden state -> dense) and its checkpoints.

A checkpoint is an ``.npz`` file holding every parameter under its name (``rnn.weight_ih_l0``,
``fc.weight``, ...) plus one entry ``__fastlstm__``: a JSON string with the format tag, the
format version, the model config and free-form metadata (the trainer stores the input
normalisation and the training settings there). It loads without pickle.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Any, Dict, Mapping, Optional

import numpy as np

from .layers import GRU, LSTM, Dense, DTypeLike, SeedLike

__all__ = ["SequenceClassifier", "CheckpointError", "save", "load", "CELLS"]

CELLS = ("lstm", "gru")
_META_KEY = "__fastlstm__"
_FORMAT = "fastlstm.SequenceClassifier"
_VERSION = 1


class CheckpointError(ValueError):
    """A file is not a fastlstm checkpoint, or does not match the model it describes."""


class SequenceClassifier:
    """Classify sequences from the final hidden state of a recurrent stack.

    ``logits = fc(h_T)`` where ``h_T`` is the top layer's ``h_n`` (for a bidirectional stack,
    the forward and reverse final states concatenated, 2H wide).

    Parameters
    ----------
    input_size, hidden_size, num_classes : int
    cell : "lstm" or "gru"
    num_layers : int
    bidirectional : bool
    dtype : float32 (default) or float64
    seed : int, numpy Generator or None
        Initialisation (PyTorch's U(-1/sqrt(fan), 1/sqrt(fan)) for both parts).
    forget_bias : float
        LSTM only: added to the forget-gate rows of every ``bias_ih`` after initialisation
        (1.0 is the classic Jozefowicz et al. choice); 0 keeps PyTorch's initialisation.

    Inputs are batch-first: ``x`` is (B, T, I), e.g. a batch of MNIST images read row by row.
    Parameter names are ``rnn.<PyTorch RNN name>`` and ``fc.weight`` / ``fc.bias``, so the
    state_dict of a torch module with attributes ``rnn`` (nn.LSTM/GRU, batch_first) and ``fc``
    (nn.Linear), converted to NumPy, loads with :meth:`load_state_dict`.
    """

    def __init__(self, input_size: int, hidden_size: int, num_classes: int, *,
                 cell: str = "lstm", num_layers: int = 1, bidirectional: bool = False,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None,
                 forget_bias: float = 0.0) -> None:
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        rng = np.random.default_rng(seed)
        rnn_cls = LSTM if cell == "lstm" else GRU
        self.cell = cell
        self.rnn = rnn_cls(input_size, hidden_size, num_layers, bidirectional=bidirectional,
                           batch_first=True, dtype=dtype, seed=rng)
        self.fc = Dense(hidden_size * self.rnn.num_directions, num_classes, dtype=dtype, seed=rng)
        self._can_backward = False   # set by a forward with training=True
        self.forget_bias = float(forget_bias)
        if self.forget_bias:
            if cell != "lstm":
                raise ValueError("forget_bias applies to the LSTM cell only")
            H = self.rnn.hidden_size
            for name, p in self.rnn.parameters().items():
                if name.startswith("bias_ih"):
                    p[H:2 * H] += self.forget_bias
        self.metadata: Dict[str, Any] = {}

    # -- configuration -------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        return self.rnn.dtype

    def config(self) -> Dict[str, Any]:
        """The constructor arguments (JSON-serialisable) that rebuild this architecture."""
        return {"cell": self.cell, "input_size": self.rnn.input_size,
                "hidden_size": self.rnn.hidden_size, "num_classes": self.fc.out_features,
                "num_layers": self.rnn.num_layers, "bidirectional": self.rnn.bidirectional,
                "dtype": self.dtype.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"SequenceClassifier({args})"

    # -- parameters ----------------------------------------------------------------------------
    def parameters(self) -> Dict[str, np.ndarray]:
        """Name -> live parameter array (``rnn.*`` then ``fc.*``)."""
        out = {f"rnn.{k}": v for k, v in self.rnn.parameters().items()}
        out.update({f"fc.{k}": v for k, v in self.fc.parameters().items()})
        return out

    @property
    def grads(self) -> Dict[str, np.ndarray]:
        """Name -> live gradient array, same names as :meth:`parameters`."""
        out = {f"rnn.{k}": v for k, v in self.rnn.grads.items()}
        out.update({f"fc.{k}": v for k, v in self.fc.grads.items()})
        return out

    def zero_grad(self) -> None:
        self.rnn.zero_grad()
        self.fc.zero_grad()

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters().values())

    def state_dict(self) -> Dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.parameters().items()}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Copy every parameter from ``state`` (exact names and shapes required)."""
        names = self.parameters().keys()
        missing = [k for k in names if k not in state]
        unexpected = [k for k in state if k not in names]
        if missing or unexpected:
            raise ValueError(f"state dict does not match: missing {missing}, "
                             f"unexpected {unexpected}")
        rnn = {k[4:]: v for k, v in state.items() if k.startswith("rnn.")}
        fc = {k[3:]: v for k, v in state.items() if k.startswith("fc.")}
        # Check both parts before changing either.
        for part, sub in ((self.rnn, rnn), (self.fc, fc)):
            for k, p in part.parameters().items():
                if np.shape(sub[k]) != p.shape:
                    prefix = "rnn." if part is self.rnn else "fc."
                    raise ValueError(f"{prefix}{k} must have shape {p.shape}, "
                                     f"got {np.shape(sub[k])}")
        self.rnn.load_state_dict(rnn)
        self.fc.load_state_dict(fc)

    # -- compute -------------------------------------------------------------------------------
    def forward(self, x, *, lengths=None, training: bool = True) -> np.ndarray:
        """(B, T, I) -> logits (B, num_classes). ``training=False``: inference only (no
        :meth:`backward` after it; faster, and nothing is kept for backward)."""
        self._can_backward = False
        _, states = self.rnn.forward(x, lengths=lengths, training=training)
        h_n = states[0] if isinstance(states, tuple) else states
        D = self.rnn.num_directions
        feat = h_n[-1] if D == 1 else np.concatenate([h_n[-2], h_n[-1]], axis=1)
        logits = self.fc.forward(feat)
        self._can_backward = training
        return logits

    __call__ = forward

    def backward(self, grad_logits) -> np.ndarray:
        """Accumulate parameter gradients from dL/dlogits; return dL/dx (B, T, I)."""
        if not self._can_backward:    # checked before any gradient is touched
            raise RuntimeError("backward needs a forward with training=True first")
        g_feat = self.fc.backward(grad_logits)
        D, H = self.rnn.num_directions, self.rnn.hidden_size
        B = g_feat.shape[0]
        grad_h_n = np.zeros((self.rnn.num_layers * D, B, H), self.dtype)
        for d in range(D):
            grad_h_n[-D + d] = g_feat[:, d * H:(d + 1) * H]
        return self.rnn.backward(None, grad_h_n)

    def predict(self, x, *, lengths=None) -> np.ndarray:
        """Class index per sequence, (B,)."""
        return np.argmax(self.forward(x, lengths=lengths, training=False), axis=1)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------

def save(model: SequenceClassifier, path: "os.PathLike[str] | str",
         metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``model`` (parameters + config + metadata) to the ``.npz`` file ``path``.

    ``metadata`` defaults to ``model.metadata``; it must be JSON-serialisable. The file is
    written to a temporary name first and renamed, so a failed save never leaves half a file.
    """
    meta = dict(model.metadata if metadata is None else metadata)
    header = json.dumps({"format": _FORMAT, "version": _VERSION, "config": model.config(),
                         "metadata": meta})
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fastlstm-", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{_META_KEY: np.array(header)}, **model.parameters())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it 0600; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: "os.PathLike[str] | str") -> SequenceClassifier:
    """Rebuild the model saved by :func:`save`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    CheckpointError
        The file is not a fastlstm checkpoint, or its arrays do not fit its config.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:  # FileNotFoundError / IsADirectoryError propagate as they are
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise CheckpointError(f"{path}: not a fastlstm checkpoint (not an .npz file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise CheckpointError(f"{path}: not a fastlstm checkpoint (not a readable .npz file: {e})"
                              ) from None
    if _META_KEY not in arrays:
        raise CheckpointError(f"{path}: not a fastlstm checkpoint (no {_META_KEY!r} entry)")
    try:
        header = json.loads(str(arrays.pop(_META_KEY)))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint header ({e})") from None
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: not a fastlstm checkpoint (format is "
                              f"{header.get('format') if isinstance(header, dict) else None!r})")
    if header.get("version") != _VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {header.get('version')!r} "
                              f"(this fastlstm reads version {_VERSION})")
    config = header.get("config")
    try:
        cfg = dict(config)
        model = SequenceClassifier(cfg.pop("input_size"), cfg.pop("hidden_size"),
                                   cfg.pop("num_classes"), **cfg)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: invalid model config {config!r} ({e})") from None
    try:
        model.load_state_dict(arrays)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: parameters do not match the config: {e}") from None
    model.metadata = dict(header.get("metadata") or {})
    return model
