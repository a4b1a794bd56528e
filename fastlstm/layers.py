"""Layers with explicit forward/backward: ``LSTM``, ``GRU`` (C kernels) and ``Dense`` (NumPy).

The recurrent layers never loop over time in Python: each (layer, direction) is one call to
:func:`fastlstm.lstm` / :func:`fastlstm.gru`, which runs the whole sequence in C. A stack of
layers is a stack of such calls; the reverse direction of a bidirectional layer is the same call
on the time-reversed input (each sequence reversed within its own length), and the two outputs
are concatenated on the feature axis, as in PyTorch.

Parameters use PyTorch's names, shapes and initialisation, so
``layer.load_state_dict({k: v.numpy() for k, v in torch_lstm.state_dict().items()})`` works.
``parameters()`` returns the live arrays (optimizers update them in place); ``grads`` holds
gradient arrays of the same names, which ``backward`` accumulates into (``zero_grad`` resets).

Shapes: T steps, B batch, I input, H hidden, L layers, D directions (1 or 2).
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _checks
import fastlstm as _kernels  # kernels are looked up at call time (fastlstm.lstm, fastlstm.gru)

__all__ = ["LSTM", "GRU", "Dense", "Module"]

SeedLike = Union[None, int, np.random.Generator]
DTypeLike = Union[str, type, np.dtype]


def _float_dtype(dtype: DTypeLike) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _probability(name: str, value: float) -> float:
    """A dropout probability: a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Module:
    """Parameter bookkeeping shared by every layer: ``parameters``, ``grads``, state dicts."""

    _params: Dict[str, np.ndarray]
    grads: Dict[str, np.ndarray]

    def parameters(self) -> Dict[str, np.ndarray]:
        """Name -> the layer's own parameter array (not a copy; update it in place)."""
        return self._params

    def zero_grad(self) -> None:
        """Set every gradient array to zero (in place)."""
        for g in self.grads.values():
            g.fill(0)

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Name -> a copy of each parameter."""
        return {k: v.copy() for k, v in self._params.items()}

    def load_state_dict(self, state: Mapping[str, object], strict: bool = True) -> None:
        """Copy parameters from ``state`` (name -> array-like, e.g. a converted torch state_dict).

        Every array must have exactly the shape of the parameter it replaces; values are cast
        to the layer's dtype. With ``strict`` (default) the names must match exactly.
        Nothing is changed if any check fails.
        """
        missing = [k for k in self._params if k not in state]
        unexpected = [k for k in state if k not in self._params]
        if strict and (missing or unexpected):
            raise ValueError(f"state dict does not match: missing {missing}, "
                             f"unexpected {unexpected}")
        arrays = {}
        for k, p in self._params.items():
            if k not in state:
                continue
            a = np.asarray(state[k])
            if a.shape != p.shape:
                raise ValueError(f"{k} must have shape {p.shape}, got {a.shape}")
            if not np.issubdtype(a.dtype, np.number):
                raise TypeError(f"{k} must be numeric, got dtype {a.dtype}")
            arrays[k] = a
        for k, a in arrays.items():
            np.copyto(self._params[k], a, casting="unsafe")

    def _init_grads(self) -> None:
        self.grads = {k: np.zeros_like(v) for k, v in self._params.items()}


# ----------------------------------------------------------------------------------------------
# Recurrent layers
# ----------------------------------------------------------------------------------------------

class _Recurrent(Module):
    """Stacked, optionally bidirectional recurrent layer driving one C kernel call per direction."""

    _n_gates: int
    _state_names: Tuple[str, ...]

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 bidirectional: bool = False, batch_first: bool = False,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None, dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, layer_norm: bool = False,
                 proj_size: int = 0) -> None:
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.bidirectional = bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.dtype = _float_dtype(dtype)
        self.dropout = _probability("dropout", dropout)
        if self.dropout and self.num_layers == 1:
            warnings.warn("dropout acts between stacked layers: with num_layers=1 it does "
                          "nothing (PyTorch warns the same)", UserWarning, stacklevel=3)
        self.recurrent_dropout = _probability("recurrent_dropout", recurrent_dropout)
        self.layer_norm = bool(layer_norm)
        if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)) \
                or proj_size < 0:
            raise ValueError(f"proj_size must be a non-negative integer, got {proj_size!r}")
        self.proj_size = int(proj_size)
        self.num_directions = 2 if self.bidirectional else 1
        # One generator for the initialisation and then every dropout mask, so two layers
        # built alike with the same seed draw the same parameters and the same masks.
        self._rng = np.random.default_rng(seed)
        H, G, R = self.hidden_size, self._n_gates * self.hidden_size, self.output_size
        bound = 1.0 / math.sqrt(H)
        self._params = {}
        # Same order as PyTorch's _flat_weights_names: layer, direction, w_ih, w_hh, b_ih, b_hh
        # (then w_hr with a projection); the layer-norm parameters, which PyTorch lacks, after.
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else R * self.num_directions
            for d in range(self.num_directions):
                sfx = self._suffix(layer, d)
                shapes = [("weight_ih", (G, in_size)), ("weight_hh", (G, R)), ("bias_ih", (G,)),
                          ("bias_hh", (G,))]
                if self.proj_size:
                    shapes.append(("weight_hr", (self.proj_size, H)))
                for name, shape in shapes:
                    self._params[name + sfx] = self._rng.uniform(-bound, bound, shape
                                                                 ).astype(self.dtype)
                if self.layer_norm:
                    for name, n, value in self._layer_norm_parameters():
                        self._params[name + sfx] = np.full((n,), value, self.dtype)
        self._init_grads()
        self._cache: Optional[tuple] = None
        self.grad_h0: Optional[np.ndarray] = None
        self.grad_c0: Optional[np.ndarray] = None

    @property
    def output_size(self) -> int:
        """R: the width of h (``proj_size`` with a projection, else ``hidden_size``)."""
        return self.proj_size or self.hidden_size

    def _layer_norm_parameters(self) -> List[Tuple[str, int, float]]:
        """(name, size, initial value) of each layer-norm parameter of one (layer, direction)."""
        G = self._n_gates * self.hidden_size
        return [("ln_gain_ih", G, 1.0), ("ln_gain_hh", G, 1.0)]

    def _parameter_bases(self) -> List[str]:
        """The parameter names of one (layer, direction), without the suffix."""
        names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
        if self.proj_size:
            names.append("weight_hr")
        if self.layer_norm:
            names += [n for n, _, _ in self._layer_norm_parameters()]
        return names

    def _extension_arguments(self, sfx: str, mask: Optional[np.ndarray]) -> dict:
        """The kernel's keyword arguments for the features this layer uses (none: the plain
        kernel runs)."""
        p = self._params
        kw = {}
        if self.proj_size:
            kw["weight_hr"] = p["weight_hr" + sfx]
        if self.layer_norm:
            kw.update({n: p[n + sfx] for n, _, _ in self._layer_norm_parameters()})
        if mask is not None:
            kw["recurrent_mask"] = mask
        return kw

    def _offset_bias_ih(self, name: str, value: float, rows: slice) -> float:
        """Add ``value`` to ``rows`` of every ``bias_ih`` (an initialisation choice)."""
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer,
                                                             np.floating)) \
                or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        for k, p in self._params.items():
            if k.startswith("bias_ih"):
                p[rows] += value
        return float(value)

    def _keep_mask(self, p: float, shape: tuple) -> np.ndarray:
        """An inverted-dropout mask: 0 with probability p, else 1/(1-p)."""
        keep = self._rng.random(shape) >= p
        return (keep / (1.0 - p)).astype(self.dtype)

    @staticmethod
    def _suffix(layer: int, direction: int) -> str:
        return f"_l{layer}" + ("_reverse" if direction else "")

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in (
            ("proj_size", self.proj_size), ("dropout", self.dropout),
            ("recurrent_dropout", self.recurrent_dropout), ("layer_norm", self.layer_norm))
            if v)
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, "
                f"batch_first={self.batch_first}, dtype={self.dtype.name}{extra})")

    # -- kernel hooks (LSTM and GRU differ only here) ------------------------------------------
    def _run(self, x: np.ndarray, sfx: str, states: List[Optional[np.ndarray]],
             lengths: Optional[np.ndarray], training: bool, mask: Optional[np.ndarray]):
        """One kernel call over the whole sequence for the parameters with suffix ``sfx``."""
        raise NotImplementedError

    @staticmethod
    def _result_states(result) -> tuple:
        raise NotImplementedError

    def _run_backward(self, result, grad_output, grad_states: List[Optional[np.ndarray]]):
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------------
    def _time_axis(self) -> int:
        return 1 if self.batch_first else 0

    def _state_width(self, state: str) -> int:
        """State "h" is R wide (the projection's size), "c" is H wide."""
        return self.output_size if state == "h" else self.hidden_size

    def _check_input(self, x) -> Tuple[np.ndarray, int, int]:
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            want = "(B, T, {})" if self.batch_first else "(T, B, {})"
            raise ValueError(f"x must have shape {want.format(self.input_size)}, got {x.shape}")
        x = x.astype(self.dtype, copy=False)
        T, B = (x.shape[1], x.shape[0]) if self.batch_first else (x.shape[0], x.shape[1])
        return x, T, B

    def _check_state(self, name: str, a, B: int, state: str) -> Optional[np.ndarray]:
        if a is None:
            return None
        a = np.asarray(a)
        want = (self.num_layers * self.num_directions, B, self._state_width(state))
        if a.shape != want:
            raise ValueError(f"{name} must have shape {want}, got {a.shape}")
        return a.astype(self.dtype, copy=False)

    @staticmethod
    def _check_lengths(lengths, T: int, B: int) -> Optional[np.ndarray]:
        """Validated lengths (the kernels' own check); None when every sequence runs all T
        steps."""
        a = _checks.lengths_array(lengths, B, T)
        return None if a is None or np.all(a == T) else a

    def _reverser(self, lengths: Optional[np.ndarray], T: int, B: int):
        """Return f(a) reversing each sequence of a (T, B, F) / (B, T, F) array in time.

        With lengths, sequence b is reversed within its first lengths[b] steps and its padding
        stays in place; f is its own inverse, so it also maps gradients back.
        """
        ax = self._time_axis()
        if lengths is None:
            return lambda a: np.flip(a, axis=ax)
        t = np.arange(T)[None, :]
        L = lengths[:, None]
        rev = np.where(t < L, L - 1 - t, t)                 # (B, T)
        b = np.arange(B)[:, None]
        if self.batch_first:
            return lambda a: a[b, rev]
        return lambda a: a[rev.T, b.T]

    # -- public API ----------------------------------------------------------------------------
    def _forward(self, x, states_in: List, lengths,
                 training: bool = True) -> Tuple[np.ndarray, List[np.ndarray]]:
        x, T, B = self._check_input(x)
        states_in = [self._check_state(n + "0", s, B, n)
                     for n, s in zip(self._state_names, states_in)]
        lengths = self._check_lengths(lengths, T, B)
        reverse = self._reverser(lengths, T, B) if self.bidirectional else None
        LD, R = self.num_layers * self.num_directions, self.output_size
        states_out = [np.empty((LD, B, self._state_width(n)), self.dtype)
                      for n in self._state_names]
        results, drop_masks = [], []
        inp = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                s0 = [None if s is None else s[k] for s in states_in]
                # variational recurrent dropout: one mask per sequence, reused at every step
                mask = (self._keep_mask(self.recurrent_dropout, (B, R))
                        if training and self.recurrent_dropout else None)
                res = self._run(inp if d == 0 else reverse(inp), self._suffix(layer, d), s0,
                                lengths, training, mask)
                outs.append(res.output if d == 0 else reverse(res.output))
                for dst, src in zip(states_out, self._result_states(res)):
                    dst[k] = src
                results.append(res)
            inp = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)
            # dropout on the output of every layer but the last (PyTorch's semantics)
            if training and self.dropout and layer + 1 < self.num_layers:
                drop = self._keep_mask(self.dropout, inp.shape)
                inp = inp * drop
                drop_masks.append(drop)
        # inference keeps nothing: the kernels saved no reserve, and backward must not run
        self._cache = (results, drop_masks, reverse, B) if training else None
        return inp, states_out

    def _backward(self, grad_output, grad_states: List) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("backward needs a forward with training=True first")
        results, drop_masks, reverse, B = self._cache
        D, R = self.num_directions, self.output_size
        grad_states = [self._check_state("grad_" + n + "_n", g, B, n)
                       for n, g in zip(self._state_names, grad_states)]
        g_inp = None
        if grad_output is not None:
            g_inp = np.asarray(grad_output).astype(self.dtype, copy=False)
            want = results[-1].output.shape[:2] + (D * R,)
            if g_inp.shape != want:
                raise ValueError(f"grad_output must have shape {want}, got {g_inp.shape}")
        grad_s0 = [np.zeros((len(results), B, self._state_width(n)), self.dtype)
                   for n in self._state_names]
        for layer in reversed(range(self.num_layers)):
            if g_inp is not None and layer < len(drop_masks):
                g_inp = g_inp * drop_masks[layer]   # through the dropout after this layer
            g_next = None
            for d in range(D):
                k = layer * D + d
                go = None if g_inp is None else g_inp[..., d * R:(d + 1) * R]
                if go is not None and d == 1:
                    go = reverse(go)
                g = self._run_backward(results[k], go,
                                       [None if s is None else s[k] for s in grad_states])
                sfx = self._suffix(layer, d)
                for name in self._parameter_bases():
                    self.grads[name + sfx] += getattr(g, name)
                for dst, name in zip(grad_s0, self._state_names):
                    dst[k] = getattr(g, name + "0")
                gx = g.x if d == 0 else reverse(g.x)
                g_next = gx if g_next is None else g_next + gx
            g_inp = g_next
        self.grad_h0 = grad_s0[0]
        if len(grad_s0) > 1:
            self.grad_c0 = grad_s0[1]
        return np.asarray(g_inp).astype(self.dtype, copy=False)


class LSTM(_Recurrent):
    """Multi-layer, optionally bidirectional LSTM (PyTorch's ``nn.LSTM`` layout and init).

    Parameters
    ----------
    input_size, hidden_size : int
        I and H.
    num_layers : int
        Stacked layers; layer l > 0 takes the (D*R)-wide output of layer l-1.
    bidirectional : bool
        Add a reverse-time direction per layer (parameters with the ``_reverse`` suffix).
    batch_first : bool
        ``x`` and ``output`` are (B, T, .) instead of (T, B, .).
    dtype : float32 (default) or float64
    seed : int, numpy Generator or None
        Every weight and bias is drawn from U(-1/sqrt(H), 1/sqrt(H)), as PyTorch does; the
        dropout masks come from the same generator, so two layers built alike with the same
        seed draw the same masks.
    dropout : float in [0, 1)
        Dropout on the output of every layer but the last, in training (PyTorch's
        ``dropout``); inverted: kept values are scaled by 1/(1-p), so inference applies none.
    recurrent_dropout : float in [0, 1)
        Variational dropout on the recurrent state (Gal & Ghahramani; Keras'
        ``recurrent_dropout``): per (layer, direction) and forward call, one mask per sequence
        multiplies h_{t-1} in ``W_hh h_{t-1}`` at every step, inside the kernel. Training only.
    layer_norm : bool
        Layer-normalised LSTM (haste's ``LayerNormLSTM``): ``W_ih x`` and ``W_hh h`` are each
        normalised over their 4H pre-activations (gains ``ln_gain_ih``, ``ln_gain_hh``,
        initialised to 1; the biases stay ``bias_ih + bias_hh``), and c is normalised before
        its tanh (gain ``ln_gain_c`` = 1 and bias ``ln_bias_c`` = 0). eps = 1e-5. The output
        does not change when ``weight_ih`` or ``weight_hh`` is scaled by a positive constant.
    proj_size : int
        PyTorch's ``proj_size`` (LSTMP): ``h = W_hr (o * tanh(c))`` with ``weight_hr_l{k}``
        (P, H); h, the output and ``weight_hh`` have P columns. 0: no projection.
    forget_bias : float
        Added to the forget-gate rows of every ``bias_ih`` after initialisation (1.0 is the
        classic choice of Jozefowicz et al. and TF1's ``BasicLSTMCell``); 0 keeps PyTorch's.

    Parameters are ``weight_ih_l{k}`` (4H, I or D*R), ``weight_hh_l{k}`` (4H, R),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,), ``weight_hr_l{k}`` (P, H) with a projection,
    ``ln_gain_ih_l{k}``, ``ln_gain_hh_l{k}`` (4H,), ``ln_gain_c_l{k}``, ``ln_bias_c_l{k}`` (H,)
    with layer norm, plus ``..._reverse``; gate rows i, f, g, o. R = P or H.
    """

    _n_gates = 4
    _state_names = ("h", "c")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 bidirectional: bool = False, batch_first: bool = False,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None, dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, layer_norm: bool = False, proj_size: int = 0,
                 forget_bias: float = 0.0) -> None:
        super().__init__(input_size, hidden_size, num_layers, bidirectional=bidirectional,
                         batch_first=batch_first, dtype=dtype, seed=seed, dropout=dropout,
                         recurrent_dropout=recurrent_dropout, layer_norm=layer_norm,
                         proj_size=proj_size)
        H = self.hidden_size
        self.forget_bias = self._offset_bias_ih("forget_bias", forget_bias, slice(H, 2 * H))

    def _layer_norm_parameters(self) -> List[Tuple[str, int, float]]:
        return super()._layer_norm_parameters() + [("ln_gain_c", self.hidden_size, 1.0),
                                                   ("ln_bias_c", self.hidden_size, 0.0)]

    def forward(self, x, h0=None, c0=None, *, lengths=None, training: bool = True
                ) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """Run the stack.

        Parameters
        ----------
        x : (T, B, I) array, or (B, T, I) with ``batch_first``; cast to the layer's dtype.
        h0 : (L*D, B, R) array or None (zeros); c0 : (L*D, B, H) array or None (zeros).
        lengths : (B,) integers in 1..T or None. Sequence b uses only its first lengths[b]
            steps (PyTorch packed-sequence semantics; outputs past the end are zero).
        training : keep what :meth:`backward` needs and apply the dropouts (default). False
            runs the inference kernels (no dropout, nothing saved, less memory and time) and
            forbids ``backward``.

        Returns
        -------
        output : (T, B, D*R) or (B, T, D*R)
        (h_n, c_n) : (L*D, B, R) and (L*D, B, H); the state after each sequence's own last
            step (for the reverse direction: after its step at t = 0).
        """
        out, (h_n, c_n) = self._forward(x, [h0, c0], lengths, training)
        return out, (h_n, c_n)

    __call__ = forward

    def backward(self, grad_output=None, grad_h_n=None, grad_c_n=None) -> np.ndarray:
        """Backpropagate through the last ``forward``; accumulate into ``grads``.

        Each argument has the shape of the matching forward result; None means zero.
        Returns the gradient wrt ``x``. Gradients wrt ``h0``/``c0`` are left in
        ``self.grad_h0`` / ``self.grad_c0``.
        """
        return self._backward(grad_output, [grad_h_n, grad_c_n])

    def _run(self, x, sfx, states, lengths, training, mask):
        p = self._params
        return _kernels.lstm(x, p["weight_ih" + sfx], p["weight_hh" + sfx], p["bias_ih" + sfx],
                             p["bias_hh" + sfx], states[0], states[1], lengths=lengths,
                             batch_first=self.batch_first, training=training,
                             **self._extension_arguments(sfx, mask))

    @staticmethod
    def _result_states(res):
        return res.h_n, res.c_n

    def _run_backward(self, result, grad_output, grad_states):
        return result.backward(grad_output, grad_states[0], grad_states[1])


class GRU(_Recurrent):
    """Multi-layer, optionally bidirectional GRU (PyTorch's ``nn.GRU`` layout and init).

    Same constructor as :class:`LSTM` without ``proj_size`` and ``forget_bias``, plus
    ``linear_before_reset`` (default True, PyTorch's variant; False is the original GRU and
    TF1's ``GRUCell``) and ``gate_bias``: added to the r and z rows of every ``bias_ih`` after
    initialisation (TF1's ``GRUCell`` starts its gate bias at 1.0). Parameters have 3H rows,
    gate order r, z, n. ``layer_norm`` (``ln_gain_ih_l{k}``, ``ln_gain_hh_l{k}``, 3H each)
    normalises ``W_ih x`` and ``W_hh h`` separately (haste's ``LayerNormGRU``) and needs
    ``linear_before_reset=True``.
    """

    _n_gates = 3
    _state_names = ("h",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 bidirectional: bool = False, batch_first: bool = False,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None,
                 linear_before_reset: bool = True, dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, layer_norm: bool = False,
                 gate_bias: float = 0.0) -> None:
        if layer_norm and not linear_before_reset:
            raise ValueError("layer_norm needs linear_before_reset=True (the normalised "
                             "recurrent product W_hh h is computed before the reset gate)")
        super().__init__(input_size, hidden_size, num_layers, bidirectional=bidirectional,
                         batch_first=batch_first, dtype=dtype, seed=seed, dropout=dropout,
                         recurrent_dropout=recurrent_dropout, layer_norm=layer_norm)
        self.linear_before_reset = bool(linear_before_reset)
        self.gate_bias = self._offset_bias_ih("gate_bias", gate_bias,
                                              slice(0, 2 * self.hidden_size))

    def forward(self, x, h0=None, *, lengths=None,
                training: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """Run the stack: returns ``output`` and ``h_n`` (see :meth:`LSTM.forward`)."""
        out, (h_n,) = self._forward(x, [h0], lengths, training)
        return out, h_n

    __call__ = forward

    def backward(self, grad_output=None, grad_h_n=None) -> np.ndarray:
        """Backpropagate (see :meth:`LSTM.backward`); returns the gradient wrt ``x``."""
        return self._backward(grad_output, [grad_h_n])

    def _run(self, x, sfx, states, lengths, training, mask):
        p = self._params
        return _kernels.gru(x, p["weight_ih" + sfx], p["weight_hh" + sfx], p["bias_ih" + sfx],
                            p["bias_hh" + sfx], states[0], lengths=lengths,
                            batch_first=self.batch_first,
                            linear_before_reset=self.linear_before_reset, training=training,
                            **self._extension_arguments(sfx, mask))

    @staticmethod
    def _result_states(res):
        return (res.h_n,)

    def _run_backward(self, result, grad_output, grad_states):
        return result.backward(grad_output, grad_states[0])


# ----------------------------------------------------------------------------------------------
# Dense
# ----------------------------------------------------------------------------------------------

class Dense(Module):
    """Affine layer ``y = x @ weight.T + bias`` (PyTorch ``nn.Linear`` names, shapes and init).

    ``weight`` is (out_features, in_features) and ``bias`` (out_features,), both drawn from
    U(-1/sqrt(in_features), 1/sqrt(in_features)). ``x`` is (..., in_features).
    """

    def __init__(self, in_features: int, out_features: int, *, dtype: DTypeLike = np.float32,
                 seed: SeedLike = None) -> None:
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        self.dtype = _float_dtype(dtype)
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(self.in_features)
        self._params = {
            "weight": rng.uniform(-bound, bound, (self.out_features, self.in_features)
                                  ).astype(self.dtype),
            "bias": rng.uniform(-bound, bound, (self.out_features,)).astype(self.dtype),
        }
        self._init_grads()
        self._x: Optional[np.ndarray] = None

    def __repr__(self) -> str:
        return f"Dense({self.in_features}, {self.out_features}, dtype={self.dtype.name})"

    def forward(self, x) -> np.ndarray:
        """(..., in_features) -> (..., out_features)."""
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {x.shape}")
        x = x.astype(self.dtype, copy=False)
        self._x = x
        return x @ self._params["weight"].T + self._params["bias"]

    __call__ = forward

    def backward(self, grad_y) -> np.ndarray:
        """Accumulate ``grads['weight']``, ``grads['bias']``; return the gradient wrt ``x``."""
        if self._x is None:
            raise RuntimeError("backward called before forward")
        g = np.asarray(grad_y).astype(self.dtype, copy=False)
        want = self._x.shape[:-1] + (self.out_features,)
        if g.shape != want:
            raise ValueError(f"grad_y must have shape {want}, got {g.shape}")
        g2 = g.reshape(-1, self.out_features)
        self.grads["weight"] += g2.T @ self._x.reshape(-1, self.in_features)
        self.grads["bias"] += g2.sum(axis=0)
        return g @ self._params["weight"]
