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

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 bidirectional: bool = False, batch_first: bool = False,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None) -> None:
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.bidirectional = bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.dtype = _float_dtype(dtype)
        self.num_directions = 2 if self.bidirectional else 1
        rng = np.random.default_rng(seed)
        H, G = self.hidden_size, self._n_gates * self.hidden_size
        bound = 1.0 / math.sqrt(H)
        self._params = {}
        # Same order as PyTorch's _flat_weights_names: layer, direction, w_ih, w_hh, b_ih, b_hh.
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else H * self.num_directions
            for d in range(self.num_directions):
                sfx = self._suffix(layer, d)
                for name, shape in (("weight_ih", (G, in_size)), ("weight_hh", (G, H)),
                                    ("bias_ih", (G,)), ("bias_hh", (G,))):
                    self._params[name + sfx] = rng.uniform(-bound, bound, shape).astype(self.dtype)
        self._init_grads()
        self._cache: Optional[tuple] = None
        self.grad_h0: Optional[np.ndarray] = None
        self.grad_c0: Optional[np.ndarray] = None

    @staticmethod
    def _suffix(layer: int, direction: int) -> str:
        return f"_l{layer}" + ("_reverse" if direction else "")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, "
                f"batch_first={self.batch_first}, dtype={self.dtype.name})")

    # -- kernel hooks (LSTM and GRU differ only here) ------------------------------------------
    def _run(self, x: np.ndarray, sfx: str, states: List[Optional[np.ndarray]],
             lengths: Optional[np.ndarray]):
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

    def _check_input(self, x) -> Tuple[np.ndarray, int, int]:
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            want = "(B, T, {})" if self.batch_first else "(T, B, {})"
            raise ValueError(f"x must have shape {want.format(self.input_size)}, got {x.shape}")
        x = x.astype(self.dtype, copy=False)
        T, B = (x.shape[1], x.shape[0]) if self.batch_first else (x.shape[0], x.shape[1])
        return x, T, B

    def _check_state(self, name: str, a, B: int) -> Optional[np.ndarray]:
        if a is None:
            return None
        a = np.asarray(a)
        want = (self.num_layers * self.num_directions, B, self.hidden_size)
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
        states_in = [self._check_state(n + "0", s, B)
                     for n, s in zip(self._state_names, states_in)]
        lengths = self._check_lengths(lengths, T, B)
        reverse = self._reverser(lengths, T, B) if self.bidirectional else None
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        states_out = [np.empty((LD, B, H), self.dtype) for _ in self._state_names]
        results = []
        inp = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                s0 = [None if s is None else s[k] for s in states_in]
                res = self._run(inp if d == 0 else reverse(inp), self._suffix(layer, d), s0,
                                lengths, training)
                outs.append(res.output if d == 0 else reverse(res.output))
                for dst, src in zip(states_out, self._result_states(res)):
                    dst[k] = src
                results.append(res)
            inp = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)
        # inference keeps nothing: the kernels saved no reserve, and backward must not run
        self._cache = (results, reverse, B) if training else None
        return inp, states_out

    def _backward(self, grad_output, grad_states: List) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("backward needs a forward with training=True first")
        results, reverse, B = self._cache
        D, H = self.num_directions, self.hidden_size
        grad_states = [self._check_state("grad_" + n + "_n", g, B)
                       for n, g in zip(self._state_names, grad_states)]
        g_inp = None
        if grad_output is not None:
            g_inp = np.asarray(grad_output).astype(self.dtype, copy=False)
            want = results[-1].output.shape[:2] + (D * H,)
            if g_inp.shape != want:
                raise ValueError(f"grad_output must have shape {want}, got {g_inp.shape}")
        grad_s0 = [np.zeros((len(results), B, H), self.dtype) for _ in self._state_names]
        for layer in reversed(range(self.num_layers)):
            g_next = None
            for d in range(D):
                k = layer * D + d
                go = None if g_inp is None else g_inp[..., d * H:(d + 1) * H]
                if go is not None and d == 1:
                    go = reverse(go)
                g = self._run_backward(results[k], go,
                                       [None if s is None else s[k] for s in grad_states])
                sfx = self._suffix(layer, d)
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
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
        Stacked layers; layer l > 0 takes the (D*H)-wide output of layer l-1.
    bidirectional : bool
        Add a reverse-time direction per layer (parameters with the ``_reverse`` suffix).
    batch_first : bool
        ``x`` and ``output`` are (B, T, .) instead of (T, B, .).
    dtype : float32 (default) or float64
    seed : int, numpy Generator or None
        Every parameter is drawn from U(-1/sqrt(H), 1/sqrt(H)), as PyTorch does.

    Parameters are ``weight_ih_l{k}`` (4H, I or D*H), ``weight_hh_l{k}`` (4H, H),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,), plus ``..._reverse``; gate rows i, f, g, o.
    """

    _n_gates = 4
    _state_names = ("h", "c")

    def forward(self, x, h0=None, c0=None, *, lengths=None, training: bool = True
                ) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """Run the stack.

        Parameters
        ----------
        x : (T, B, I) array, or (B, T, I) with ``batch_first``; cast to the layer's dtype.
        h0, c0 : (L*D, B, H) arrays or None (zeros).
        lengths : (B,) integers in 1..T or None. Sequence b uses only its first lengths[b]
            steps (PyTorch packed-sequence semantics; outputs past the end are zero).
        training : keep what :meth:`backward` needs (default). False runs the inference
            kernels (nothing saved, less memory and time) and forbids ``backward``.

        Returns
        -------
        output : (T, B, D*H) or (B, T, D*H)
        (h_n, c_n) : (L*D, B, H) each; the state after each sequence's own last step
            (for the reverse direction: after its step at t = 0).
        """
        out, (h_n, c_n) = self._forward(x, [h0, c0], lengths, training)
        return out, (h_n, c_n)

    __call__ = forward

    def backward(self, grad_output=None, grad_h_n=None, grad_c_n=None) -> np.ndarray:
        """Backpropagate through the last ``forward``; accumulate into ``grads``.

        Each argument has the shape of the matching forward result; None means zero.
        Returns the gradient wrt ``x``. Gradients wrt ``h0``/``c0`` are left in
        ``self.grad_h0`` / ``self.grad_c0`` ((L*D, B, H)).
        """
        return self._backward(grad_output, [grad_h_n, grad_c_n])

    def _run(self, x, sfx, states, lengths, training):
        p = self._params
        return _kernels.lstm(x, p["weight_ih" + sfx], p["weight_hh" + sfx], p["bias_ih" + sfx],
                             p["bias_hh" + sfx], states[0], states[1], lengths=lengths,
                             batch_first=self.batch_first, training=training)

    @staticmethod
    def _result_states(res):
        return res.h_n, res.c_n

    def _run_backward(self, result, grad_output, grad_states):
        return result.backward(grad_output, grad_states[0], grad_states[1])


class GRU(_Recurrent):
    """Multi-layer, optionally bidirectional GRU (PyTorch's ``nn.GRU`` layout and init).

    Same constructor as :class:`LSTM`, plus ``linear_before_reset`` (default True, PyTorch's
    variant; False is the original GRU). Parameters have 3H rows, gate order r, z, n.
    """

    _n_gates = 3
    _state_names = ("h",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 bidirectional: bool = False, batch_first: bool = False,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None,
                 linear_before_reset: bool = True) -> None:
        super().__init__(input_size, hidden_size, num_layers, bidirectional=bidirectional,
                         batch_first=batch_first, dtype=dtype, seed=seed)
        self.linear_before_reset = bool(linear_before_reset)

    def forward(self, x, h0=None, *, lengths=None,
                training: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """Run the stack: returns ``output`` and ``h_n`` (see :meth:`LSTM.forward`)."""
        out, (h_n,) = self._forward(x, [h0], lengths, training)
        return out, h_n

    __call__ = forward

    def backward(self, grad_output=None, grad_h_n=None) -> np.ndarray:
        """Backpropagate (see :meth:`LSTM.backward`); returns the gradient wrt ``x``."""
        return self._backward(grad_output, [grad_h_n])

    def _run(self, x, sfx, states, lengths, training):
        p = self._params
        return _kernels.gru(x, p["weight_ih" + sfx], p["weight_hh" + sfx], p["bias_ih" + sfx],
                            p["bias_hh" + sfx], states[0], lengths=lengths,
                            batch_first=self.batch_first,
                            linear_before_reset=self.linear_before_reset, training=training)

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
