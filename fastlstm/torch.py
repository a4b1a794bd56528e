"""fastlstm inside PyTorch: drop-in ``torch.nn.LSTM`` and ``torch.nn.GRU`` for the CPU.

    import fastlstm.torch
    model = fastlstm.torch.convert(model)     # every nn.LSTM / nn.GRU inside, in place
    # or build them directly: fastlstm.torch.LSTM(28, 128, batch_first=True)

:class:`LSTM` and :class:`GRU` subclass ``torch.nn.LSTM`` / ``torch.nn.GRU``: same constructor,
parameters, ``state_dict``, ``.to()``, forward signature and results (padded or
``PackedSequence`` input, ``h0``/``c0``, ``batch_first``, stacked, bidirectional, dropout between
layers drawn by torch's RNG, ``proj_size`` for the LSTM). Each (layer, direction) is one call of
the fused C kernels through a ``torch.autograd.Function`` that hands them the tensors' own
memory (contiguous CPU float32/float64: no copy of the input, the states or the weights); its
backward fills the gradients of the input, the initial states and every weight. A projected
LSTM (``proj_size > 0``: h = W_hr (o * tanh(c))) runs the extended kernels
(``_core.lstmx_forward``/``lstmx_backward``), its backward also fills ``weight_hr_l{k}``.

What the kernels do not cover runs torch's own implementation instead (``super().forward``),
with torch's results and errors: see :meth:`LSTM.fastlstm_unsupported`. Double backward
(``create_graph=True``) is served inside the Function's backward by differentiating the same
recurrence written with torch operations.

Threads: each call asks for ``torch.get_num_threads()`` (or the module's ``num_threads``
attribute when it is set) and passes it into the kernel; no global setting, torch's or
OpenMP's, is changed.

This module is imported only on request (``import fastlstm`` never imports torch).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch  # absolute import: the real torch, not this module
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import _core

__all__ = ["LSTM", "GRU", "convert"]

_NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _np(t: torch.Tensor) -> np.ndarray:
    """The tensor's own memory as a NumPy array (the caller made it contiguous)."""
    return t.detach().numpy()


def _opt_np(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if t is None else t.detach().numpy()


def _contig(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.contiguous()


_zero_bias_cache: dict = {}


def _zero_bias(n: int, dtype) -> np.ndarray:
    """Read-only zeros standing in for the biases of a ``bias=False`` module."""
    key = (n, np.dtype(dtype).str)
    z = _zero_bias_cache.get(key)
    if z is None:
        z = _core.empty_aligned((n,), dtype)
        z.fill(0)
        z.flags.writeable = False
        _zero_bias_cache[key] = z
    return z


# ----------------------------------------------------------------------------------------------
# The recurrence in torch operations: the double-backward path (create_graph=True) only
# ----------------------------------------------------------------------------------------------

def _torch_recurrence(lstm: bool, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, batch_first,
                      w_hr=None):
    """One layer, one direction, the kernels' semantics (lengths: runs of each sequence's own
    first lengths[b] steps, zero outputs past them), differentiable twice by torch. With
    ``w_hr`` (LSTM only, (P, H)): h = W_hr (o * tanh(c)), P wide, as torch's proj_size."""
    if batch_first:
        x = x.transpose(0, 1)
    T, B = x.shape[0], x.shape[1]
    H = w_hh.shape[1]  # the width of h: P with a projection
    Hc = w_ih.shape[0] // 4  # the width of c
    h = h0 if h0 is not None else x.new_zeros(B, H)
    c = (c0 if c0 is not None else x.new_zeros(B, Hc)) if lstm else None
    xw = torch.matmul(x, w_ih.t())
    if b_ih is not None:
        xw = xw + b_ih
    lens = None if lengths is None else torch.from_numpy(np.asarray(lengths))
    outs = []
    for t in range(T):
        hw = torch.matmul(h, w_hh.t())
        if b_hh is not None:
            hw = hw + b_hh
        if lstm:
            i, f, g, o = (xw[t] + hw).chunk(4, 1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            if w_hr is not None:
                h_new = torch.matmul(h_new, w_hr.t())
        else:
            xr, xz, xn = xw[t].chunk(3, 1)
            hr, hz, hn = hw.chunk(3, 1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h_new = (1 - z) * n + z * h
        if lens is None:
            h = h_new
            if lstm:
                c = c_new
            outs.append(h_new)
        else:
            m = (lens > t).unsqueeze(1)
            h = torch.where(m, h_new, h)
            if lstm:
                c = torch.where(m, c_new, c)
            outs.append(torch.where(m, h_new, torch.zeros_like(h_new)))
    y = torch.stack(outs)
    if batch_first:
        y = y.transpose(0, 1)
    return (y, h, c) if lstm else (y, h)


def _grad_by_torch(ctx, lstm: bool, saved, grads):
    """Backward with create_graph=True: the gradients as differentiable torch expressions."""
    n_in = len(saved)
    with torch.enable_grad():
        args = saved if lstm else (saved[0], saved[1], None) + tuple(saved[2:])  # no c0
        # the LSTM saves w_hr (None without a projection) last, after the 7 common arguments
        outs = _torch_recurrence(lstm, *args[:7], ctx.lengths, ctx.batch_first, *args[7:])
    pairs = [(o, g) for o, g in zip(outs, grads) if g is not None]
    wanted = [k for k in range(n_in) if ctx.needs_input_grad[k] and saved[k] is not None]
    result: List[Optional[torch.Tensor]] = [None] * n_in
    if pairs and wanted:
        got = torch.autograd.grad([o for o, _ in pairs], [saved[k] for k in wanted],
                                  [g for _, g in pairs], create_graph=True, allow_unused=True)
        for k, g in zip(wanted, got):
            result[k] = g if g is not None else torch.zeros_like(saved[k])
    return result


# ----------------------------------------------------------------------------------------------
# autograd Functions: one kernel call per (layer, direction)
# ----------------------------------------------------------------------------------------------

def _dims(x: torch.Tensor, w_hh: torch.Tensor, batch_first: bool):
    if batch_first:
        B, T, I = x.shape
    else:
        T, B, I = x.shape
    return T, B, I, w_hh.shape[1]


def _lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, batch_first, n_threads,
                  training):
    """One (layer, direction) of the LSTM: the plain kernel, or with ``w_hr`` (P, H) the
    extended one (projection only: no layer norm, no recurrent mask), whose y and h_n are P
    wide (R below) and c_n H wide."""
    T, B, I, R = _dims(x, w_hh, batch_first)
    H = w_ih.shape[0] // 4
    dt = _NP_DTYPES[x.dtype]
    y = _core.empty_aligned((B, T, R) if batch_first else (T, B, R), dt)
    h_n, c_n = _core.empty_aligned((B, R), dt), _core.empty_aligned((B, H), dt)
    zb = None if b_ih is not None else _zero_bias(4 * H, dt)
    common = (zb if b_ih is None else _np(b_ih), zb if b_hh is None else _np(b_hh))
    reserve = None
    if w_hr is None:
        if training:
            reserve = _core.empty_aligned((_core.lstm_reserve_size(T, B, I, H, y.itemsize),), dt)
        _core.lstm_forward(_np(x), _np(w_ih), _np(w_hh), *common, _opt_np(h0), _opt_np(c0),
                           lengths, y, h_n, c_n, reserve, T, B, I, H, batch_first, n_threads)
        return y, h_n, c_n, reserve
    P = R
    if training:
        reserve = _core.empty_aligned(
            (_core.lstmx_reserve_size(T, B, I, H, P, False, y.itemsize),), dt)
    _core.lstmx_forward(_np(x), _np(w_ih), _np(w_hh), *common, _np(w_hr), None, None, None,
                        None, None, _opt_np(h0), _opt_np(c0), lengths, y, h_n, c_n, reserve,
                        T, B, I, H, P, False, batch_first, n_threads)
    return y, h_n, c_n, reserve


def _gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, batch_first, n_threads, training):
    T, B, I, H = _dims(x, w_hh, batch_first)
    dt = _NP_DTYPES[x.dtype]
    y = _core.empty_aligned((B, T, H) if batch_first else (T, B, H), dt)
    h_n = _core.empty_aligned((B, H), dt)
    reserve = None
    if training:
        reserve = _core.empty_aligned(
            (_core.gru_reserve_size(T, B, I, H, y.itemsize, True),), dt)
    zb = None if b_ih is not None else _zero_bias(3 * H, dt)
    _core.gru_forward(_np(x), _np(w_ih), _np(w_hh),
                      zb if b_ih is None else _np(b_ih), zb if b_hh is None else _np(b_hh),
                      _opt_np(h0), lengths, y, h_n, reserve, T, B, I, H, batch_first, True,
                      n_threads)
    return y, h_n, reserve


def _grad_np(g: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    """An incoming gradient as a C-contiguous array (None stays None: the kernels read zero)."""
    return None if g is None else g.detach().contiguous().numpy()


class _LSTMFunction(torch.autograd.Function):
    """One (layer, direction) of the LSTM; ``w_hr`` (P, H) for a projected one, else None."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, batch_first, n_threads):
        y, h_n, c_n, reserve = _lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths,
                                             batch_first, n_threads, True)
        # The saved tensors are the inputs themselves, not copies: autograd's version counters
        # refuse a backward after any of them was modified in place.
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
        ctx.reserve, ctx.lengths, ctx.batch_first, ctx.n_threads = \
            reserve, lengths, batch_first, n_threads
        ctx.set_materialize_grads(False)
        return torch.from_numpy(y), torch.from_numpy(h_n), torch.from_numpy(c_n)

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n):
        saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a graph of the gradients is wanted
            return tuple(_grad_by_torch(ctx, True, saved, (dy, dh_n, dc_n))) + (None,) * 3
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr = saved
        T, B, I, R = _dims(x, w_hh, ctx.batch_first)  # R: the width of h (P if projected)
        H = w_ih.shape[0] // 4
        dt = _NP_DTYPES[x.dtype]
        e = _core.empty_aligned
        gx, gwi, gwh = e(tuple(x.shape), dt), e((4 * H, I), dt), e((4 * H, R), dt)
        gbi, gbh, gh0, gc0 = e((4 * H,), dt), e((4 * H,), dt), e((B, R), dt), e((B, H), dt)
        grads = (_grad_np(dy), _grad_np(dh_n), _grad_np(dc_n), gx, gwi, gwh, gbi, gbh)
        gwr = None
        if w_hr is None:
            _core.lstm_backward(_np(x), _np(w_ih), _np(w_hh), _opt_np(h0), _opt_np(c0),
                                ctx.lengths, ctx.reserve, *grads, gh0, gc0,
                                T, B, I, H, ctx.batch_first, ctx.n_threads)
        else:  # the extended kernel does not read h0 (nor the biases)
            gwr = e((R, H), dt)
            _core.lstmx_backward(_np(x), _np(w_ih), _np(w_hh), _np(w_hr), None, None, None,
                                 None, _opt_np(c0), ctx.lengths, ctx.reserve, *grads, gwr,
                                 None, None, None, None, gh0, gc0, T, B, I, H, R, False,
                                 ctx.batch_first, ctx.n_threads)
        need = ctx.needs_input_grad
        out = [gx, gh0, gc0, gwi, gwh, gbi, gbh, gwr]
        return tuple(torch.from_numpy(g) if need[k] and saved[k] is not None else None
                     for k, g in enumerate(out)) + (None,) * 3


class _GRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, batch_first, n_threads):
        y, h_n, reserve = _gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, batch_first,
                                       n_threads, True)
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh)
        ctx.reserve, ctx.lengths, ctx.batch_first, ctx.n_threads = \
            reserve, lengths, batch_first, n_threads
        ctx.set_materialize_grads(False)
        return torch.from_numpy(y), torch.from_numpy(h_n)

    @staticmethod
    def backward(ctx, dy, dh_n):
        saved = ctx.saved_tensors
        if torch.is_grad_enabled():
            return tuple(_grad_by_torch(ctx, False, saved, (dy, dh_n))) + (None,) * 3
        x, h0, w_ih, w_hh, b_ih, b_hh = saved
        T, B, I, H = _dims(x, w_hh, ctx.batch_first)
        dt = _NP_DTYPES[x.dtype]
        e = _core.empty_aligned
        gx, gwi, gwh = e(tuple(x.shape), dt), e((3 * H, I), dt), e((3 * H, H), dt)
        gbi, gbh, gh0 = e((3 * H,), dt), e((3 * H,), dt), e((B, H), dt)
        _core.gru_backward(_np(x), _np(w_ih), _np(w_hh), _opt_np(h0), ctx.lengths, ctx.reserve,
                           _grad_np(dy), _grad_np(dh_n), gx, gwi, gwh, gbi, gbh, gh0,
                           T, B, I, H, ctx.batch_first, True, ctx.n_threads)
        need = ctx.needs_input_grad
        out = [gx, gh0, gwi, gwh, gbi, gbh]
        return tuple(torch.from_numpy(g) if need[k] and saved[k] is not None else None
                     for k, g in enumerate(out)) + (None,) * 3


# ----------------------------------------------------------------------------------------------
# The modules
# ----------------------------------------------------------------------------------------------

def _is_plain(t) -> bool:
    return type(t) in (torch.Tensor, nn.Parameter)


class _FastRNN:
    """What LSTM and GRU share; mixed in before torch's class."""

    #: Threads per kernel call; None (default): ``torch.get_num_threads()`` at each call.
    num_threads: Optional[int] = None
    _is_lstm: bool

    def _threads(self) -> int:
        if not _core.openmp_enabled():
            return 1
        n = self.num_threads if self.num_threads is not None else torch.get_num_threads()
        return max(1, int(n))

    def fastlstm_unsupported(self, input, hx=None) -> Optional[str]:
        """Why ``forward(input, hx)`` would run torch's implementation rather than the
        fastlstm kernels, or None when the kernels run."""
        if torch.jit.is_scripting() or torch.jit.is_tracing():
            return "TorchScript scripting or tracing (export sees torch's own RNN op)"
        try:
            if torch.compiler.is_compiling():
                return "torch.compile"
        except AttributeError:  # pragma: no cover - older torch
            pass
        if not isinstance(getattr(self, "mode", None), str) or \
                self.mode not in ("LSTM", "GRU"):  # pragma: no cover
            return f"mode {getattr(self, 'mode', None)!r}"
        data = input.data if isinstance(input, PackedSequence) else input
        if not isinstance(data, torch.Tensor):
            return "input is not a tensor"
        if data.numel() == 0:
            return "empty input (the kernels need T >= 1 and B >= 1)"
        self._update_flat_weights()  # torch.func.functional_call may have swapped them
        tensors = [data]
        if hx is not None:
            hs = hx if isinstance(hx, (tuple, list)) else (hx,)
            if not all(isinstance(h, torch.Tensor) for h in hs):
                return "hx is not a tensor (or a tuple of tensors)"
            tensors.extend(hs)
        tensors.extend(self._flat_weights)
        dt = data.dtype
        if dt not in _NP_DTYPES:
            return f"dtype {dt} (the kernels have float32 and float64)"
        for t in tensors:
            if t is None:
                return "a weight is None"
            if t.device.type != "cpu":
                return f"device {t.device} (the kernels run on the CPU)"
            if t.dtype != dt:
                return f"mixed dtypes ({t.dtype} and {dt})"
            if not _is_plain(t) or t.is_sparse or t.layout != torch.strided:
                return f"tensor type {type(t).__name__} / layout {t.layout}"
            if t.is_conj() or t.is_neg():  # pragma: no cover - not for real dtypes
                return "lazy conjugate/negative tensor"
            if torch._C._functorch.is_functorch_wrapped_tensor(t):
                return "a torch.func transform (vmap, grad, jacrev, ...)"
        if torch.autograd.forward_ad._current_level >= 0:
            return "forward-mode AD (a dual level is active)"
        return None

    def forward(self, input, hx=None):
        if self.fastlstm_unsupported(input, hx) is not None:
            return super().forward(input, hx)
        return self._fast_forward(input, hx)

    # -- the kernel path -----------------------------------------------------------------------
    def _fast_forward(self, input, hx):
        lstm = self._is_lstm
        D = 2 if self.bidirectional else 1
        L, H = self.num_layers, self.hidden_size
        packed = isinstance(input, PackedSequence)
        unbatched = False
        lengths = None
        mask = None
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            if hx is not None:
                self.check_forward_args(data, hx, batch_sizes)
                hx = self.permute_hidden(hx, sorted_indices)
            else:
                self.check_input(data, batch_sizes)
            T, B = len(batch_sizes), int(batch_sizes[0])
            mask = torch.arange(B).unsqueeze(0) < batch_sizes.unsqueeze(1)      # (T, B)
            lengths = mask.sum(0).numpy().astype(np.int64)  # sorted order: non-increasing
            if bool((lengths == T).all()):
                lengths = None
            x = data.new_zeros((T, B, data.shape[1]))
            x = x.index_put((mask,), data)
            batch_first = False
        else:
            name = "LSTM" if lstm else "GRU"
            if input.dim() not in (2, 3):
                raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D "
                                 f"instead")
            batch_first = self.batch_first
            unbatched = input.dim() == 2
            x = input
            if unbatched:
                x = x.unsqueeze(0 if batch_first else 1)
            hs = () if hx is None else (hx if lstm else (hx,))
            if hx is not None:
                want = 2 if unbatched else 3
                if any(h.dim() != want for h in hs):
                    if lstm:
                        kind = "unbatched 2-D" if unbatched else "batched 3-D"
                        raise RuntimeError(
                            f"For {kind} input, hx and cx should also be {want}-D but got "
                            f"({hs[0].dim()}-D, {hs[1].dim()}-D) tensors")
                    raise RuntimeError(f"For {'unbatched 2-D' if unbatched else 'batched 3-D'}"
                                       f" input, hx should also be {want}-D but got "
                                       f"{hs[0].dim()}-D tensor")
                if unbatched:
                    hs = tuple(h.unsqueeze(1) for h in hs)
                hx = hs if lstm else hs[0]
                self.check_forward_args(x, hx, None)
            else:
                self.check_input(x, None)
        states = None if hx is None else ((hx[0], hx[1]) if lstm else (hx,))
        T = x.shape[1] if batch_first else x.shape[0]
        B = x.shape[0] if batch_first else x.shape[1]
        n_threads = self._threads()
        weights = self._flat_weights
        P = getattr(self, "proj_size", 0)  # > 0: LSTM with a projection, weight_hr last
        per = (4 if self.bias else 2) + (1 if P > 0 else 0)
        grad_mode = torch.is_grad_enabled()
        reverse = _reverser(lengths, T, B, batch_first) if D == 2 else None
        use_dropout = self.dropout > 0 and self.training
        inp = x
        h_out, c_out = [], []
        for layer in range(L):
            outs = []
            xin = inp.contiguous()
            for d in range(D):
                k = layer * D + d
                w = weights[k * per:(k + 1) * per]
                w_ih, w_hh = w[0].contiguous(), w[1].contiguous()
                b_ih, b_hh = (w[2].contiguous(), w[3].contiguous()) if self.bias else (None, None)
                w_hr = w[-1].contiguous() if P > 0 else None
                s0 = [None] * (2 if lstm else 1) if states is None else \
                    [s[k].contiguous() for s in states]
                xd = xin if d == 0 else reverse(xin).contiguous()
                args = [xd] + s0 + [w_ih, w_hh, b_ih, b_hh]
                if lstm:
                    args.append(w_hr)  # None without a projection
                needs_grad = grad_mode and any(a is not None and a.requires_grad for a in args)
                if lstm:
                    if needs_grad:
                        y, hn, cn = _LSTMFunction.apply(*args, lengths, batch_first, n_threads)
                    else:
                        ya, ha, ca, _ = _lstm_forward(*args, lengths, batch_first, n_threads,
                                                      False)
                        y, hn, cn = (torch.from_numpy(a) for a in (ya, ha, ca))
                    c_out.append(cn)
                else:
                    if needs_grad:
                        y, hn = _GRUFunction.apply(*args, lengths, batch_first, n_threads)
                    else:
                        ya, ha, _ = _gru_forward(*args, lengths, batch_first, n_threads, False)
                        y, hn = torch.from_numpy(ya), torch.from_numpy(ha)
                h_out.append(hn)
                outs.append(y if d == 0 else reverse(y))
            inp = outs[0] if D == 1 else torch.cat(outs, 2)
            if use_dropout and layer < L - 1:
                inp = _torch_dropout(inp, self.dropout, mask, batch_first)
        output = inp
        h_n = torch.stack(h_out)
        c_n = torch.stack(c_out) if lstm else None
        if packed:
            # the rows of the packed data are the valid (t, b) of the padded output, t-major
            output = PackedSequence(output[mask], batch_sizes, sorted_indices, unsorted_indices)
            if lstm:
                h_n, c_n = self.permute_hidden((h_n, c_n), unsorted_indices)
            else:
                h_n = self.permute_hidden(h_n, unsorted_indices)
        elif unbatched:
            output = output.squeeze(0 if batch_first else 1)
            h_n = h_n.squeeze(1)
            if lstm:
                c_n = c_n.squeeze(1)
        return (output, (h_n, c_n)) if lstm else (output, h_n)


def _torch_dropout(a: torch.Tensor, p: float, mask, batch_first: bool) -> torch.Tensor:
    """Dropout between layers as torch's RNNs draw it (torch's RNG, same shapes in the same
    order, so ``torch.manual_seed`` gives nn.LSTM's masks): on the time-major output, or on
    the packed rows of a PackedSequence."""
    if mask is not None:  # packed: torch drops out the packed data
        return a.new_zeros(a.shape).index_put((mask,), F.dropout(a[mask], p, True))
    if batch_first:  # torch runs time-major inside: draw the mask in (T, B, .) order
        return F.dropout(a.transpose(0, 1).contiguous(), p, True).transpose(0, 1)
    return F.dropout(a, p, True)


def _reverser(lengths: Optional[np.ndarray], T: int, B: int, batch_first: bool):
    """f(a) reversing each sequence of a (T, B, F) / (B, T, F) tensor in time, within its own
    length (padding stays in place); f is its own inverse (as fastlstm.layers' _reverser)."""
    ax = 1 if batch_first else 0
    if lengths is None:
        return lambda a: torch.flip(a, (ax,))
    t = np.arange(T)[None, :]
    Ls = lengths[:, None]
    rev = torch.from_numpy(np.where(t < Ls, Ls - 1 - t, t))              # (B, T)
    if batch_first:
        b = torch.arange(B).unsqueeze(1)
        return lambda a: a[b, rev]
    rev_t, b_t = rev.t().contiguous(), torch.arange(B).unsqueeze(0)
    return lambda a: a[rev_t, b_t]


class LSTM(_FastRNN, nn.LSTM):
    """``torch.nn.LSTM`` running the fastlstm kernels on the CPU (same constructor, parameters,
    forward and results; torch's implementation where the kernels do not apply).

    Extra keyword: ``num_threads`` (default None: ``torch.get_num_threads()`` at each call).
    """

    _is_lstm = True

    def __init__(self, *args, num_threads: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_threads = num_threads


class GRU(_FastRNN, nn.GRU):
    """``torch.nn.GRU`` running the fastlstm kernels on the CPU (see :class:`LSTM`)."""

    _is_lstm = False

    def __init__(self, *args, num_threads: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_threads = num_threads


def convert(model: nn.Module, num_threads: Optional[int] = None) -> nn.Module:
    """Make every ``nn.LSTM`` and ``nn.GRU`` in ``model`` (``model`` itself included) run the
    fastlstm kernels, in place, and return ``model``.

    The modules keep their identity, parameters (the same ``Parameter`` objects, so an
    optimizer built before still updates them), buffers, hooks and state: only their class
    becomes :class:`LSTM` / :class:`GRU`. Subclasses of nn.LSTM/nn.GRU other than exactly those
    two are left alone (their ``forward`` may differ).
    """
    swap = {nn.LSTM: LSTM, nn.GRU: GRU}
    for m in model.modules():
        new = swap.get(type(m))
        if new is not None:
            m.__class__ = new
            m.num_threads = num_threads
    return model
