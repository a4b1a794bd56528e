"""``SequenceClassifier`` (recurrent stack -> last hidden state -> dense) and its checkpoints.

A checkpoint is an ``.npz`` file holding every parameter under its name (``rnn.weight_ih_l0``,
``fc.weight``, ...) plus one entry ``__fastlstm__``: a JSON string with the format tag, the
format version, the model config and free-form metadata (the trainer stores the input
normalisation and the training settings there). It loads without pickle.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
import time
import zipfile
import zlib
from typing import IO, Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from .layers import GRU, LSTM, Dense, DTypeLike, SeedLike

__all__ = ["SequenceClassifier", "CheckpointError", "save", "load", "load_with_state",
           "read_header", "parameter_shapes", "write_atomic", "ensure_writable", "CELLS",
           "check_features"]

CELLS = ("lstm", "gru")
# The model features a config may name, with the values a config without them means.
_FEATURE_DEFAULTS: Dict[str, Any] = {"linear_before_reset": True, "proj_size": 0,
                                     "layer_norm": False, "input_proj": 0, "dropout": 0.0,
                                     "recurrent_dropout": 0.0}
_META_KEY = "__fastlstm__"
_FORMAT = "fastlstm.SequenceClassifier"
_VERSION = 1


class CheckpointError(ValueError):
    """A file is not a fastlstm checkpoint, or does not match the model it describes."""


class SequenceClassifier:
    """Classify sequences from the final hidden state of a recurrent stack.

    ``logits = fc(h_T)`` where ``h_T`` is the top layer's ``h_n`` (for a bidirectional stack,
    the forward and reverse final states concatenated); with ``input_proj=N`` every step's
    input first goes through a dense layer ``input_proj`` (I -> N, no activation), as in the
    TF1 tutorials' ``weights['in']``.

    Parameters
    ----------
    input_size, hidden_size, num_classes : int
    cell : "lstm" or "gru"
    num_layers : int
    bidirectional : bool
    dtype : float32 (default) or float64
    seed : int, numpy Generator or None
        Initialisation (PyTorch's U(-1/sqrt(fan), 1/sqrt(fan)) for every part) and then the
        dropout masks.
    forget_bias : float
        LSTM only: added to the forget-gate rows of every ``bias_ih`` after initialisation
        (1.0 is the classic Jozefowicz et al. choice); 0 keeps PyTorch's initialisation.
    linear_before_reset : bool
        GRU only: False is the original GRU of TF1's ``GRUCell``.
    gate_bias : float
        GRU only: added to the r and z rows of every ``bias_ih`` (TF1's ``GRUCell``: 1.0).
    dropout, recurrent_dropout, layer_norm, proj_size
        As for :class:`fastlstm.LSTM` / :class:`fastlstm.GRU` (``proj_size``: LSTM only).
    input_proj : int
        0 (default): the recurrent stack reads the input directly; N: through a dense layer.

    Inputs are batch-first: ``x`` is (B, T, I), e.g. a batch of MNIST images read row by row.
    Parameter names are ``rnn.<PyTorch RNN name>`` and ``fc.weight`` / ``fc.bias`` (and
    ``input_proj.weight`` / ``input_proj.bias``), so the state_dict of a torch module with
    attributes ``rnn`` (nn.LSTM/GRU, batch_first) and ``fc`` (nn.Linear), converted to NumPy,
    loads with :meth:`load_state_dict`.
    """

    def __init__(self, input_size: int, hidden_size: int, num_classes: int, *,
                 cell: str = "lstm", num_layers: int = 1, bidirectional: bool = False,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None,
                 forget_bias: float = 0.0, linear_before_reset: bool = True,
                 gate_bias: float = 0.0, dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 layer_norm: bool = False, proj_size: int = 0, input_proj: int = 0) -> None:
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        check_features({"cell": cell, "linear_before_reset": linear_before_reset,
                        "gate_bias": gate_bias, "forget_bias": forget_bias,
                        "proj_size": proj_size, "layer_norm": layer_norm})
        if isinstance(input_proj, bool) or not isinstance(input_proj, (int, np.integer)) \
                or input_proj < 0:
            raise ValueError(f"input_proj must be a non-negative integer, got {input_proj!r}")
        rng = np.random.default_rng(seed)
        self.cell = cell
        self.input_proj = (Dense(input_size, int(input_proj), dtype=dtype, seed=rng)
                           if input_proj else None)
        rnn_in = int(input_proj) or input_size
        features = dict(batch_first=True, dtype=dtype, seed=rng, dropout=dropout,
                        recurrent_dropout=recurrent_dropout, layer_norm=layer_norm)
        if cell == "lstm":
            self.rnn: Union[LSTM, GRU] = LSTM(rnn_in, hidden_size, num_layers,
                                              bidirectional=bidirectional, proj_size=proj_size,
                                              forget_bias=forget_bias, **features)
        else:
            self.rnn = GRU(rnn_in, hidden_size, num_layers, bidirectional=bidirectional,
                           linear_before_reset=linear_before_reset, gate_bias=gate_bias,
                           **features)
        self.input_size = int(input_size)
        self.fc = Dense(self.rnn.output_size * self.rnn.num_directions, num_classes,
                        dtype=dtype, seed=rng)
        self._can_backward = False   # set by a forward with training=True
        self.forget_bias = float(forget_bias)
        self.metadata: Dict[str, Any] = {}

    # -- configuration -------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        return self.rnn.dtype

    def _parts(self) -> List[Tuple[str, Any]]:
        """(prefix, layer) of every part with parameters, in order."""
        parts: List[Tuple[str, Any]] = [("input_proj.", self.input_proj)] if self.input_proj \
            else []
        return parts + [("rnn.", self.rnn), ("fc.", self.fc)]

    def config(self) -> Dict[str, Any]:
        """The constructor arguments (JSON-serialisable) that rebuild this architecture. The
        model features appear only when they are not at their defaults (so a plain model's
        config, and checkpoint, is what it always was)."""
        cfg = {"cell": self.cell, "input_size": self.input_size,
               "hidden_size": self.rnn.hidden_size, "num_classes": self.fc.out_features,
               "num_layers": self.rnn.num_layers, "bidirectional": self.rnn.bidirectional,
               "dtype": self.dtype.name}
        features = {"linear_before_reset": getattr(self.rnn, "linear_before_reset", True),
                    "proj_size": self.rnn.proj_size, "layer_norm": self.rnn.layer_norm,
                    "input_proj": self.input_proj.out_features if self.input_proj else 0,
                    "dropout": self.rnn.dropout, "recurrent_dropout": self.rnn.recurrent_dropout}
        cfg.update({k: v for k, v in features.items() if v != _FEATURE_DEFAULTS[k]})
        return cfg

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"SequenceClassifier({args})"

    # -- parameters ----------------------------------------------------------------------------
    def parameters(self) -> Dict[str, np.ndarray]:
        """Name -> live parameter array (``input_proj.*``, ``rnn.*``, then ``fc.*``)."""
        return {prefix + k: v for prefix, part in self._parts()
                for k, v in part.parameters().items()}

    @property
    def grads(self) -> Dict[str, np.ndarray]:
        """Name -> live gradient array, same names as :meth:`parameters`."""
        return {prefix + k: v for prefix, part in self._parts() for k, v in part.grads.items()}

    def zero_grad(self) -> None:
        for _, part in self._parts():
            part.zero_grad()

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
        subs = [(part, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
                for prefix, part in self._parts()]
        # Check every part before changing any.
        for prefix, part in self._parts():
            for k, p in part.parameters().items():
                if np.shape(state[prefix + k]) != p.shape:
                    raise ValueError(f"{prefix}{k} must have shape {p.shape}, "
                                     f"got {np.shape(state[prefix + k])}")
        for part, sub in subs:
            part.load_state_dict(sub)

    # -- compute -------------------------------------------------------------------------------
    def forward(self, x, *, lengths=None, training: bool = True) -> np.ndarray:
        """(B, T, I) -> logits (B, num_classes). ``training=False``: inference only (no
        :meth:`backward` after it; faster, and nothing is kept for backward)."""
        self._can_backward = False
        if self.input_proj is not None:
            x = self.input_proj.forward(x)
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
        D, R = self.rnn.num_directions, self.rnn.output_size
        B = g_feat.shape[0]
        grad_h_n = np.zeros((self.rnn.num_layers * D, B, R), self.dtype)
        for d in range(D):
            grad_h_n[-D + d] = g_feat[:, d * R:(d + 1) * R]
        gx = self.rnn.backward(None, grad_h_n)
        return gx if self.input_proj is None else self.input_proj.backward(gx)

    def predict(self, x, *, lengths=None) -> np.ndarray:
        """Class index per sequence, (B,)."""
        return np.argmax(self.forward(x, lengths=lengths, training=False), axis=1)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
#
# Files are read as untrusted: the zip directory, the metadata member and every member's .npy
# header are checked (names, dtypes, shapes derived from the config, sizes) before any array
# is allocated or any model is built, and a member is never decompressed past the size its
# header implies. Every failure is a one-line CheckpointError.

_MAX_MEMBERS = 4096                 # more than any real model has (4 per layer and direction)
_MAX_HEADER_CHARS = 4 * 2**20       # the JSON header (config, metadata, resume state)
_MAX_INT = 2**31 - 1                # bound on every size in the config
_DEFLATE_MAX_RATIO = 1100           # deflate cannot expand more than ~1032:1
_OPTIM_SLOTS = ("m", "v", "buf")    # Adam moments, SGD momentum buffer
_TMP_PREFIX = ".fastlstm-"
_TMP_SUFFIX = ".npz.tmp"
_CONFIG_KEYS = ("cell", "input_size", "hidden_size", "num_classes", "num_layers",
                "bidirectional", "dtype")


def _fail(path: str, message: str) -> CheckpointError:
    return CheckpointError(f"{path}: {message}")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_config(path: str, config: Any) -> Dict[str, Any]:
    """The validated model config (exact keys and types), or CheckpointError."""
    def bad(why: str) -> CheckpointError:
        return _fail(path, f"invalid model config {_short(config)} ({why})")

    if not isinstance(config, dict):
        raise bad("not a JSON object")
    missing = [k for k in _CONFIG_KEYS if k not in config]
    unknown = [k for k in config if k not in _CONFIG_KEYS and k not in _FEATURE_DEFAULTS]
    if missing or unknown:
        raise bad(f"missing {missing}, unknown {unknown}")
    if config["cell"] not in CELLS:
        raise bad(f"cell must be one of {CELLS}")
    for k in ("input_size", "hidden_size", "num_classes", "num_layers"):
        if not _is_int(config[k]) or not 1 <= config[k] <= _MAX_INT:
            raise bad(f"{k} must be an integer in 1..{_MAX_INT}, got {_short(config[k], 30)}")
    if not isinstance(config["bidirectional"], bool):
        raise bad("bidirectional must be true or false")
    if config["dtype"] not in ("float32", "float64"):
        raise bad("dtype must be 'float32' or 'float64'")
    for k in ("linear_before_reset", "layer_norm"):
        if k in config and not isinstance(config[k], bool):
            raise bad(f"{k} must be true or false")
    for k in ("proj_size", "input_proj"):
        if k in config and (not _is_int(config[k]) or not 0 <= config[k] <= _MAX_INT):
            raise bad(f"{k} must be an integer in 0..{_MAX_INT}, got {_short(config[k], 30)}")
    for k in ("dropout", "recurrent_dropout"):
        if k in config and (not _is_number(config[k]) or not 0 <= config[k] < 1):
            raise bad(f"{k} must be a number in [0, 1), got {_short(config[k], 30)}")
    try:  # the combinations the constructor refuses (e.g. proj_size on a GRU)
        check_features(config)
    except ValueError as e:
        raise bad(str(e)) from None
    return dict(config)


def check_features(config: Mapping[str, Any]) -> None:
    """Raise ValueError for a combination of ``cell`` and features that
    :class:`SequenceClassifier` refuses (e.g. ``proj_size`` on a GRU), without building it.
    ``config`` maps constructor argument names to values; absent ones take their defaults."""
    get = lambda k, default=None: config.get(  # noqa: E731
        k, _FEATURE_DEFAULTS.get(k, default))
    lstm = config["cell"] == "lstm"
    if lstm and not get("linear_before_reset"):
        raise ValueError("linear_before_reset=False (the TF1 GRU, --cell gru-tf1) applies to "
                         "the GRU cell only")
    if lstm and get("gate_bias", 0.0):
        raise ValueError("gate_bias (--gate-bias) applies to the GRU cell only")
    if not lstm and get("proj_size"):
        raise ValueError("proj_size (--proj-size) applies to the LSTM cell only")
    if not lstm and get("forget_bias", 0.0):
        raise ValueError("forget_bias (--forget-bias) applies to the LSTM cell only")
    if not lstm and get("layer_norm") and not get("linear_before_reset"):
        raise ValueError("layer_norm (--layer-norm) is not available for the GRU with "
                         "linear_before_reset=False (the TF1 GRU, --cell gru-tf1): its "
                         "normalised recurrent product is taken before the reset gate")


def _check_metadata(path: str, meta: Any) -> Dict[str, Any]:
    """Free-form metadata, except the entries the package itself reads later."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise _fail(path, f"corrupt checkpoint header (metadata must be a JSON object, "
                          f"got {type(meta).__name__})")
    norm = meta.get("normalize")
    if norm is not None:
        if not isinstance(norm, dict):
            raise _fail(path, "corrupt checkpoint header (metadata.normalize must be an object "
                              "with mean and std)")
        for k in ("mean", "std"):
            v = norm.get(k)
            if not _is_number(v) or not math.isfinite(v):
                raise _fail(path, f"corrupt checkpoint header (metadata.normalize.{k} must be a "
                                  f"finite number, got {_short(v, 30)})")
        if not norm["std"] > 0:
            raise _fail(path, f"corrupt checkpoint header (metadata.normalize.std must be > 0, "
                              f"got {norm['std']!r})")
    for k in ("train", "resume"):
        if k in meta and not isinstance(meta[k], dict):
            raise _fail(path, f"corrupt checkpoint header (metadata.{k} must be a JSON object)")
    return meta


def _num_parameter_arrays(cfg: Mapping[str, Any]) -> int:
    per_direction = (4 + (1 if cfg.get("proj_size") else 0)
                     + ((4 if cfg["cell"] == "lstm" else 2) if cfg.get("layer_norm") else 0))
    return (per_direction * cfg["num_layers"] * (2 if cfg["bidirectional"] else 1) + 2
            + (2 if cfg.get("input_proj") else 0))


def parameter_shapes(config: Mapping[str, Any]) -> Dict[str, tuple]:
    """Name -> shape of every parameter of the model ``config`` describes (in the order of
    :meth:`SequenceClassifier.parameters`), computed without building the model."""
    G = (4 if config["cell"] == "lstm" else 3) * config["hidden_size"]
    H, D = config["hidden_size"], 2 if config["bidirectional"] else 1
    P, N = config.get("proj_size", 0), config.get("input_proj", 0)
    R = P or H
    out: Dict[str, tuple] = {}
    if N:
        out["input_proj.weight"] = (N, config["input_size"])
        out["input_proj.bias"] = (N,)
    for layer in range(config["num_layers"]):
        in_size = (N or config["input_size"]) if layer == 0 else R * D
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            out[f"rnn.weight_ih{sfx}"] = (G, in_size)
            out[f"rnn.weight_hh{sfx}"] = (G, R)
            out[f"rnn.bias_ih{sfx}"] = (G,)
            out[f"rnn.bias_hh{sfx}"] = (G,)
            if P:
                out[f"rnn.weight_hr{sfx}"] = (P, H)
            if config.get("layer_norm"):
                out[f"rnn.ln_gain_ih{sfx}"] = (G,)
                out[f"rnn.ln_gain_hh{sfx}"] = (G,)
                if config["cell"] == "lstm":
                    out[f"rnn.ln_gain_c{sfx}"] = (H,)
                    out[f"rnn.ln_bias_c{sfx}"] = (H,)
    out["fc.weight"] = (config["num_classes"], R * D)
    out["fc.bias"] = (config["num_classes"],)
    return out


class _Member:
    """One ``.npy`` member of the archive, its header read and checked, its data not read."""

    def __init__(self, path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        self.zf, self.info, self.name = zf, info, info.filename[:-4]
        where = f"member {self.name!r}"
        if info.flag_bits & 0x1:
            raise _fail(path, f"{where} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _fail(path, f"{where} uses an unsupported compression method "
                              f"({info.compress_type})")
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_MAX_RATIO
        if info.file_size > max(info.compress_size, 1) * ratio + 1024:
            raise _fail(path, f"{where} claims {info.file_size} bytes from "
                              f"{info.compress_size} compressed: not a real archive member")
        with zf.open(info) as f:
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
            except (ValueError, TypeError, SyntaxError, OverflowError, EOFError) as e:
                raise _fail(path, f"{where} has no valid .npy header "
                                  f"({_one_line(e)})") from None
            self.offset = f.tell()
        if dtype.hasobject or dtype.kind not in "fU":
            raise _fail(path, f"{where} has dtype {dtype}, expected a float or text array")
        self.shape, self.fortran, self.dtype = tuple(shape), bool(fortran), dtype
        count = 1
        for n in self.shape:
            count *= int(n)
        self.nbytes = count * dtype.itemsize            # Python int: no overflow
        if info.file_size != self.offset + self.nbytes:
            raise _fail(path, f"{where}: its .npy header implies {self.offset + self.nbytes} "
                              f"bytes, the archive says {info.file_size}")

    def read(self, path: str) -> np.ndarray:
        """The array, never decompressing more than the header implies."""
        try:
            with self.zf.open(self.info) as f:
                f.read(self.offset)
                buf = bytearray(self.nbytes)
                view, got = memoryview(buf), 0
                while got < self.nbytes:
                    n = f.readinto(view[got:got + (1 << 24)])
                    if not n:
                        break
                    got += n
                if got != self.nbytes or f.read(1):
                    raise _fail(path, f"member {self.name!r} is truncated or has trailing data")
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as e:
            if isinstance(e, CheckpointError):
                raise
            raise _fail(path, f"member {self.name!r} is corrupt ({_one_line(e)})") from None
        arr = np.frombuffer(buf, dtype=self.dtype)
        arr = arr.reshape(self.shape[::-1]).T if self.fortran else arr.reshape(self.shape)
        return np.require(arr, requirements="CWA") if arr.ndim else arr


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text or type(e).__name__)[:200]


class _Checkpoint:
    """An opened, fully validated checkpoint: header parsed, every member's header checked."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:  # FileNotFoundError / IsADirectoryError propagate as they are
            magic = f.read(4)
        if magic != b"PK\x03\x04":
            raise _fail(path, "not a fastlstm checkpoint (not an .npz file)")
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            raise _fail(path, f"not a fastlstm checkpoint (not a readable .npz file: "
                              f"{_one_line(e)})") from None
        try:
            self._check()
        except BaseException:
            self.zf.close()
            raise

    def close(self) -> None:
        self.zf.close()

    def __enter__(self) -> "_Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self) -> None:
        path, zf = self.path, self.zf
        infos = zf.infolist()
        if len(infos) > _MAX_MEMBERS:
            raise _fail(path, f"not a fastlstm checkpoint ({len(infos)} members)")
        by_name: Dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if not info.filename.endswith(".npy") or info.is_dir():
                raise _fail(path, f"not a fastlstm checkpoint (unexpected member "
                                  f"{_short(info.filename)})")
            name = info.filename[:-4]
            if name in by_name:
                raise _fail(path, f"not a fastlstm checkpoint (member {_short(name)} twice)")
            by_name[name] = info
        if _META_KEY not in by_name:
            raise _fail(path, f"not a fastlstm checkpoint (no {_META_KEY!r} entry)")
        meta_member = _Member(path, zf, by_name.pop(_META_KEY))
        if (meta_member.dtype.kind != "U" or meta_member.shape != ()
                or meta_member.dtype.itemsize > 4 * _MAX_HEADER_CHARS):
            raise _fail(path, f"corrupt checkpoint header ({_META_KEY!r} must be one string of "
                              f"at most {_MAX_HEADER_CHARS} characters, got dtype "
                              f"{meta_member.dtype} shape {meta_member.shape})")
        try:
            text = str(meta_member.read(path)[()])
            header = json.loads(text)
        except (ValueError, RecursionError, UnicodeError) as e:
            raise _fail(path, f"corrupt checkpoint header ({_one_line(e)})") from None
        if not isinstance(header, dict) or header.get("format") != _FORMAT:
            fmt = header.get("format") if isinstance(header, dict) else None
            raise _fail(path, f"not a fastlstm checkpoint (format is {_short(fmt)})")
        if header.get("version") != _VERSION:
            raise _fail(path, f"unsupported checkpoint version {_short(header.get('version'))} "
                              f"(this fastlstm reads version {_VERSION})")
        self.config = _check_config(path, header.get("config"))
        self.metadata = _check_metadata(path, header.get("metadata"))

        # Names: exactly the parameters of this config, plus optimizer slots for them.
        n_params = _num_parameter_arrays(self.config)
        if n_params > _MAX_MEMBERS:
            raise _fail(path, f"parameters do not match the config: it has {n_params} "
                              f"parameter arrays, the file {len(by_name)}")
        shapes = parameter_shapes(self.config)
        missing = [k for k in shapes if k not in by_name]
        unexpected = []
        for k in by_name:
            if k.startswith("optim."):
                slot, _, pname = k[len("optim."):].partition(".")
                if slot in _OPTIM_SLOTS and pname in shapes:
                    continue
            elif k in shapes:
                continue
            unexpected.append(k)
        if missing or unexpected:
            raise _fail(path, f"parameters do not match the config: missing "
                              f"{[k[:60] for k in missing[:10]]}, unexpected "
                              f"{[k[:60] for k in unexpected[:10]]}")

        # Every member's header: dtype and shape as the config says, size as the header says.
        dtype = np.dtype(self.config["dtype"])
        self.members: Dict[str, _Member] = {}
        for name, info in by_name.items():
            m = _Member(path, zf, info)
            pname = name.split(".", 2)[2] if name.startswith("optim.") else name
            if m.shape != shapes[pname]:
                raise _fail(path, f"parameters do not match the config: {name} must have shape "
                                  f"{shapes[pname]}, got {_short(m.shape, 40)}")
            if m.dtype != dtype:
                raise _fail(path, f"parameters do not match the config: {name} must have dtype "
                                  f"{dtype.name}, got {m.dtype}")
            self.members[name] = m
        self.shapes = shapes

    def parameter_bytes(self) -> int:
        item = np.dtype(self.config["dtype"]).itemsize
        return sum(int(np.prod(s, dtype=np.float64)) * item for s in self.shapes.values())

    def read(self, names) -> Dict[str, np.ndarray]:
        return {k: self.members[k].read(self.path) for k in names}

    def build(self) -> SequenceClassifier:
        """The model, after checking that it (and its initialisation) fits in memory."""
        from . import _checks

        nbytes = self.parameter_bytes()
        largest = max(int(np.prod(s, dtype=np.float64)) for s in self.shapes.values()) * 8
        try:
            _checks.memory(2.0 * nbytes + largest, f"the model in {self.path}")
        except (MemoryError, ValueError) as e:
            raise _fail(self.path, f"refusing to load: {_one_line(e)}") from None
        cfg = dict(self.config)
        arrays = self.read(self.shapes)
        model = SequenceClassifier(cfg.pop("input_size"), cfg.pop("hidden_size"),
                                   cfg.pop("num_classes"), **cfg)
        model.load_state_dict(arrays)
        model.metadata = dict(self.metadata)
        return model

    def optimizer_state(self) -> Dict[str, Dict[str, np.ndarray]]:
        """slot -> parameter name -> array, for the optimizer members in the file."""
        out: Dict[str, Dict[str, np.ndarray]] = {}
        for name in self.members:
            if name.startswith("optim."):
                slot, _, pname = name[len("optim."):].partition(".")
                out.setdefault(slot, {})[pname] = self.members[name].read(self.path)
        return out


def read_header(path: "os.PathLike[str] | str") -> Dict[str, Any]:
    """The validated ``{"config", "metadata"}`` of a checkpoint, without reading any array."""
    with _Checkpoint(os.fspath(path)) as ck:
        return {"config": dict(ck.config), "metadata": ck.metadata}


def load(path: "os.PathLike[str] | str") -> SequenceClassifier:
    """Rebuild the model saved by :func:`save`.

    The file is validated before anything is allocated: the names, dtypes and shapes of all
    members (from the config), their sizes (from the zip directory and the ``.npy`` headers),
    the config and the metadata the package reads (``normalize``). Optimizer state saved with
    the model is checked but not read.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    CheckpointError
        The file is not a fastlstm checkpoint, or is malformed, or does not fit in memory; the
        message is one line.
    """
    with _Checkpoint(os.fspath(path)) as ck:
        return ck.build()


def load_with_state(path: "os.PathLike[str] | str"
                    ) -> Tuple[SequenceClassifier, Dict[str, Dict[str, np.ndarray]]]:
    """:func:`load` plus the optimizer state saved with the model (slot -> name -> array;
    empty when the file has none)."""
    with _Checkpoint(os.fspath(path)) as ck:
        model = ck.build()
        return model, ck.optimizer_state()


# -- writing -----------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _remove_stale_temporaries(folder: str, base: str) -> None:
    """Delete temporaries of earlier writes of ``base`` whose writer is gone (killed mid-write):
    ``.fastlstm-<base>.<pid>.<random>.npz.tmp`` with a dead pid, or older than a day."""
    prefix = f"{_TMP_PREFIX}{base}."
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)):
            continue
        pid_text = name[len(prefix):].split(".", 1)[0]
        full = os.path.join(folder, name)
        try:
            old = time.time() - os.lstat(full).st_mtime > 86400
            if old or not pid_text.isdigit() or not _pid_alive(int(pid_text)) or \
                    int(pid_text) == os.getpid():
                os.unlink(full)
        except OSError:
            pass


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: "os.PathLike[str] | str", write: Callable[[IO[bytes]], None]) -> None:
    """Write a file so that ``path`` holds either its old content or the complete new one.

    ``write(f)`` fills a temporary file in the same folder, which is flushed, fsync'ed and
    renamed over ``path``; then the folder is fsync'ed. Temporaries left by killed earlier
    writes of the same file are removed first; on any failure the temporary is removed.
    """
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    _remove_stale_temporaries(folder, base)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{_TMP_PREFIX}{base}.{os.getpid()}.",
                               suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it 0600; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def ensure_writable(path: "os.PathLike[str] | str", what: str = "output file") -> None:
    """Prove that :func:`write_atomic` can later write ``path``: its folder exists and accepts
    a new file (one is created and removed), and ``path`` is not a folder. Raises OSError
    (with a one-line message) otherwise."""
    path = os.fspath(path)
    full = os.path.abspath(path)
    folder = os.path.dirname(full)
    if os.path.isdir(full):
        raise IsADirectoryError(errno.EISDIR, f"the {what} path is a folder", path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"no such folder for the {what}", path)
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f"{_TMP_PREFIX}probe.",
                                     suffix=_TMP_SUFFIX)
    except OSError as e:
        raise type(e)(e.errno, f"cannot create files in {folder} for the {what} "
                               f"({e.strerror})", path) from None
    os.close(fd)
    os.unlink(probe)


def save(model: SequenceClassifier, path: "os.PathLike[str] | str",
         metadata: Optional[Mapping[str, Any]] = None, *,
         optimizer_state: Optional[Mapping[str, Mapping[str, np.ndarray]]] = None) -> None:
    """Write ``model`` (parameters + config + metadata) to the ``.npz`` file ``path``.

    ``metadata`` defaults to ``model.metadata``; it must be JSON-serialisable.
    ``optimizer_state`` (slot -> parameter name -> array, slots ``m``, ``v``, ``buf``) is
    stored as ``optim.<slot>.<name>`` for resuming training (:func:`load_with_state`).
    The write is atomic (:func:`write_atomic`): a failed or killed save never leaves half a
    file, and the previous checkpoint stays until the new one is complete on disk.
    """
    meta = dict(model.metadata if metadata is None else metadata)
    header = json.dumps({"format": _FORMAT, "version": _VERSION, "config": model.config(),
                         "metadata": meta})
    params = model.parameters()
    arrays: Dict[str, np.ndarray] = {_META_KEY: np.array(header)}
    arrays.update(params)
    for slot, named in (optimizer_state or {}).items():
        if slot not in _OPTIM_SLOTS:
            raise ValueError(f"optimizer slot must be one of {_OPTIM_SLOTS}, got {slot!r}")
        for name, a in named.items():
            if name not in params or np.shape(a) != params[name].shape:
                raise ValueError(f"optimizer state {slot}.{name} does not match a parameter")
            arrays[f"optim.{slot}.{name}"] = np.asarray(a, dtype=model.dtype)
    write_atomic(path, lambda f: _write_npz(f, arrays))


def _write_npz(f, arrays: Dict[str, np.ndarray]) -> None:
    """What ``np.savez`` writes, with one fixed timestamp on every member: the same arrays give
    the same bytes (so the checkpoints of a rerun, or of every rank of a distributed run,
    compare equal as files)."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o600 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(a), allow_pickle=False)
