"""Optimizers (``Adam``, ``SGD``), ``clip_grad_norm`` and learning-rate schedules.

Optimizers hold references to the parameter arrays and update them **in place**; ``step`` takes
the gradients, keyed like the parameters (a dict such as ``model.grads``) or in the same order
(a sequence). The update rules are PyTorch's (``torch.optim.Adam`` / ``torch.optim.SGD``), so the
same hyperparameters mean the same thing. Set ``opt.lr`` between steps to follow a schedule::

    sched = CosineSchedule(1e-3, total_steps=n_steps, warmup_steps=200)
    for step in range(n_steps):
        ...
        opt.lr = sched(step)
        opt.step(model.grads)
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, Mapping, Tuple, Union

import numpy as np

__all__ = ["Optimizer", "Adam", "SGD", "clip_grad_norm",
           "ConstantSchedule", "CosineSchedule", "make_schedule", "SCHEDULES"]

Arrays = Union[Mapping[str, np.ndarray], Iterable[np.ndarray]]


def _as_dict(arrays: Arrays, what: str) -> Dict[str, np.ndarray]:
    if isinstance(arrays, Mapping):
        return dict(arrays)
    return {str(i): a for i, a in enumerate(arrays)}


class Optimizer:
    """Base class: keeps the parameter dict and checks gradients against it."""

    def __init__(self, params: Arrays, lr: float) -> None:
        self.params = _as_dict(params, "params")
        if not self.params:
            raise ValueError("params is empty")
        for k, p in self.params.items():
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise TypeError(f"parameter {k!r} must be a floating-point numpy array")
            if not p.flags.writeable:
                raise ValueError(f"parameter {k!r} is read-only; optimizers update in place")
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        self.lr = float(lr)
        self.step_count = 0

    def _grads(self, grads: Arrays) -> Dict[str, np.ndarray]:
        g = _as_dict(grads, "grads")
        missing = [k for k in self.params if k not in g]
        if missing:
            raise ValueError(f"grads is missing {missing}")
        for k, p in self.params.items():
            if np.shape(g[k]) != p.shape:
                raise ValueError(f"grad {k!r} must have shape {p.shape}, got {np.shape(g[k])}")
        return g

    def step(self, grads: Arrays) -> None:
        raise NotImplementedError

    def _slots(self) -> Dict[str, Dict[str, np.ndarray]]:
        """Per-parameter state arrays by slot name (empty for a stateless optimizer)."""
        return {}

    def state_dict(self) -> Dict[str, object]:
        """``{"step_count", "lr", "slots": {slot: {name: array copy}}}``: everything
        :meth:`load_state_dict` needs to continue exactly where this optimizer is."""
        return {"step_count": self.step_count, "lr": self.lr,
                "slots": {s: {k: v.copy() for k, v in d.items()}
                          for s, d in self._slots().items()}}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore :meth:`state_dict` output (names and shapes checked before any change)."""
        slots = state.get("slots") or {}
        mine = self._slots()
        step_count, lr = state.get("step_count"), state.get("lr")
        if not isinstance(step_count, int) or isinstance(step_count, bool) or step_count < 0:
            raise ValueError(f"step_count must be an integer >= 0, got {step_count!r}")
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr >= 0:
            raise ValueError(f"lr must be a number >= 0, got {lr!r}")
        for slot, arrays in slots.items():
            if slot not in mine:
                raise ValueError(f"{type(self).__name__} has no state {slot!r}")
            for k, a in arrays.items():
                if k not in self.params or np.shape(a) != self.params[k].shape:
                    raise ValueError(f"state {slot}.{k} does not match a parameter")
        for slot in self._required_slots():
            missing = [k for k in self.params if k not in slots.get(slot, {})]
            if missing and step_count:
                raise ValueError(f"state {slot!r} is missing {missing}")
        for slot, arrays in slots.items():
            for k, a in arrays.items():
                if k in mine[slot]:
                    mine[slot][k][...] = a
                else:
                    mine[slot][k] = np.array(a, dtype=self.params[k].dtype)
        self.step_count, self.lr = int(step_count), float(lr)

    def _required_slots(self) -> Tuple[str, ...]:
        return ()


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba), as ``torch.optim.Adam``.

    ``m = b1 m + (1-b1) g``; ``v = b2 v + (1-b2) g^2``;
    ``p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``.

    ``weight_decay`` adds ``weight_decay * p`` to the gradient (L2, PyTorch's Adam); with
    ``decoupled_weight_decay=True`` the parameter is instead shrunk by ``lr * weight_decay``
    before the update (AdamW).
    """

    def __init__(self, params: Arrays, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled_weight_decay: bool = False) -> None:
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if not eps >= 0 or not weight_decay >= 0:
            raise ValueError("eps and weight_decay must be >= 0")
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        self.m = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.v = {k: np.zeros_like(p) for k, p in self.params.items()}

    def _slots(self) -> Dict[str, Dict[str, np.ndarray]]:
        return {"m": self.m, "v": self.v}

    def _required_slots(self) -> Tuple[str, ...]:
        return ("m", "v")

    def step(self, grads: Arrays) -> None:
        """Apply one update to every parameter, in place."""
        grads = self._grads(grads)
        self.step_count += 1
        b1, b2 = self.betas
        t = self.step_count
        step_size = self.lr / (1 - b1 ** t)
        sqrt_bc2 = math.sqrt(1 - b2 ** t)
        wd = self.weight_decay
        for k, p in self.params.items():
            g = np.asarray(grads[k])
            m, v = self.m[k], self.v[k]
            if wd:
                if self.decoupled_weight_decay:
                    p *= 1 - self.lr * wd
                else:
                    g = g + wd * p
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * np.square(g)
            denom = np.sqrt(v)
            denom /= sqrt_bc2
            denom += self.eps
            p -= step_size * (m / denom)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum / Nesterov, as ``torch.optim.SGD``.

    ``g += weight_decay * p``; ``buf = momentum * buf + (1 - dampening) * g`` (``buf = g`` on
    the first step); ``g = g + momentum * buf`` if ``nesterov`` else ``buf``; ``p -= lr * g``.
    """

    def __init__(self, params: Arrays, lr: float = 1e-2, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params, lr)
        if not momentum >= 0 or not weight_decay >= 0:
            raise ValueError("momentum and weight_decay must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov requires momentum > 0 and dampening = 0")
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)
        self.buf: Dict[str, np.ndarray] = {}

    def _slots(self) -> Dict[str, Dict[str, np.ndarray]]:
        return {"buf": self.buf}      # filled on the first step with momentum

    def step(self, grads: Arrays) -> None:
        """Apply one update to every parameter, in place."""
        grads = self._grads(grads)
        self.step_count += 1
        mu = self.momentum
        for k, p in self.params.items():
            g = np.asarray(grads[k])
            if self.weight_decay:
                g = g + self.weight_decay * p
            if mu:
                buf = self.buf.get(k)
                if buf is None:
                    buf = self.buf[k] = np.array(g, dtype=p.dtype)
                else:
                    buf *= mu
                    buf += (1 - self.dampening) * g
                g = g + mu * buf if self.nesterov else buf
            p -= self.lr * g


def clip_grad_norm(grads: Arrays, max_norm: float, eps: float = 1e-6) -> float:
    """Scale all gradients in place so that their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping (as ``torch.nn.utils.clip_grad_norm_``: the scale is
    ``max_norm / (norm + eps)``, applied only when it is below 1).
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    arrays = list(_as_dict(grads, "grads").values())
    total = math.sqrt(sum(float(np.vdot(g, g).real) for g in arrays))
    scale = max_norm / (total + eps)
    if scale < 1:
        for g in arrays:
            g *= scale
    return total


# ----------------------------------------------------------------------------------------------
# Learning-rate schedules: callables step (0-based) -> learning rate
# ----------------------------------------------------------------------------------------------

class ConstantSchedule:
    """``lr``, after a linear warm-up from ``lr / warmup_steps`` over ``warmup_steps`` steps."""

    def __init__(self, lr: float, warmup_steps: int = 0) -> None:
        if not lr >= 0 or warmup_steps < 0:
            raise ValueError("lr and warmup_steps must be >= 0")
        self.lr, self.warmup_steps = float(lr), int(warmup_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        return self.lr

    def __repr__(self) -> str:
        return f"ConstantSchedule(lr={self.lr}, warmup_steps={self.warmup_steps})"


class CosineSchedule(ConstantSchedule):
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr`` at ``total_steps``.

    ``lr(s) = min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2`` with
    ``p = (s - warmup_steps) / (total_steps - warmup_steps)`` clipped to [0, 1].
    """

    def __init__(self, lr: float, total_steps: int, warmup_steps: int = 0,
                 min_lr: float = 0.0) -> None:
        super().__init__(lr, warmup_steps)
        if total_steps < 1 or not 0 <= min_lr <= lr:
            raise ValueError("need total_steps >= 1 and 0 <= min_lr <= lr")
        self.total_steps, self.min_lr = int(total_steps), float(min_lr)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return super().__call__(step)
        span = max(1, self.total_steps - self.warmup_steps)
        p = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * p))

    def __repr__(self) -> str:
        return (f"CosineSchedule(lr={self.lr}, total_steps={self.total_steps}, "
                f"warmup_steps={self.warmup_steps}, min_lr={self.min_lr})")


SCHEDULES = ("constant", "cosine")


def make_schedule(name: str, lr: float, total_steps: int, warmup_steps: int = 0):
    """Build the schedule called ``name`` (one of :data:`SCHEDULES`)."""
    if name == "constant":
        return ConstantSchedule(lr, warmup_steps)
    if name == "cosine":
        return CosineSchedule(lr, total_steps, warmup_steps)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
