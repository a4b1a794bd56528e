"""Training and evaluation loops for row-by-row MNIST (or any (N, T, I) sequence data).

Each image is a sequence of T=28 rows of I=28 pixels; the classifier reads it row by row and
predicts the digit from the last hidden state. Everything is seeded: the same ``seed`` gives
the same numbers whatever the thread count (the kernels are deterministic, and the NumPy parts
run on fixed shapes in a fixed order).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, TextIO, Tuple

import numpy as np

from .loss import softmax_cross_entropy
from .model import SequenceClassifier
from .optim import SGD, Adam, Optimizer, clip_grad_norm, make_schedule

__all__ = ["TrainConfig", "TrainingError", "build_model", "make_optimizer", "prepare_images",
           "evaluate", "fit", "Progress", "MNIST_MEAN", "MNIST_STD", "training_state",
           "check_resume_state", "RESUME_FIXED", "planned_steps", "input_normalisation"]

# Mean and standard deviation of the MNIST training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

DEFAULT_LR = {"adam": 3e-3, "sgd": 0.2}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class TrainingError(RuntimeError):
    """Training diverged (non-finite loss) or was given unusable settings."""


@dataclass
class TrainConfig:
    """Every setting of a training run (the CLI defaults are these defaults).

    The defaults reach >= 98.5% MNIST test accuracy with both cells in 10 epochs.
    ``warmup`` is in epochs (fractions allowed); ``lr=None`` means the optimizer's default
    (:data:`DEFAULT_LR`); ``limit`` / ``test_limit`` use only the first N images.
    ``steps``: train for exactly this many optimizer steps instead of ``epochs`` (the last
    epoch stops part-way; the tutorials' "training_iters" budgets). ``normalize=False`` feeds
    pixels in [0, 1] instead of standardising them with MNIST's mean and deviation. The model
    features (``input_proj``, ``proj_size``, ``layer_norm``, ``dropout``,
    ``recurrent_dropout``, ``linear_before_reset``, ``gate_bias``) are those of
    :class:`~fastlstm.SequenceClassifier`.
    """

    cell: str = "lstm"
    hidden: int = 128
    layers: int = 1
    bidirectional: bool = False
    epochs: int = 10
    batch_size: int = 128
    lr: Optional[float] = None
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup: float = 0.5
    clip: float = 1.0
    forget_bias: float = 0.0
    seed: int = 0
    limit: Optional[int] = None
    test_limit: Optional[int] = None
    eval_batch_size: int = 1000
    dtype: str = "float32"
    steps: Optional[int] = None
    normalize: bool = True
    input_proj: int = 0
    proj_size: int = 0
    layer_norm: bool = False
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    linear_before_reset: bool = True
    gate_bias: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        # the model features (also read back from checkpoints: checked for type, too)
        for name in ("input_proj", "proj_size"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.steps is not None and not _is_int(self.steps):
            raise ValueError(f"steps must be an integer, got {self.steps!r}")
        for name in ("layer_norm", "normalize", "linear_before_reset"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("forget_bias", "gate_bias", "dropout", "recurrent_dropout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        for name in ("dropout", "recurrent_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.dropout and self.layers == 1:
            raise ValueError("dropout acts between stacked layers (PyTorch's semantics): with "
                             "layers=1 it would do nothing; use recurrent_dropout, or layers >= 2")
        from .model import check_features
        check_features(dataclasses.asdict(self))
        for name in ("limit", "test_limit", "steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in DEFAULT_LR:
            raise ValueError(f"optimizer must be one of {tuple(DEFAULT_LR)}, "
                             f"got {self.optimizer!r}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup < 0 or self.clip < 0 or self.weight_decay < 0 or self.momentum < 0:
            raise ValueError("warmup, clip, weight_decay and momentum must be >= 0")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def build_model(config: TrainConfig, input_size: int = 28, num_classes: int = 10
                ) -> SequenceClassifier:
    """The classifier described by ``config``, initialised from ``config.seed``."""
    return SequenceClassifier(input_size, config.hidden, num_classes, cell=config.cell,
                              num_layers=config.layers, bidirectional=config.bidirectional,
                              dtype=config.dtype, seed=np.random.default_rng([config.seed, 0]),
                              forget_bias=config.forget_bias,
                              linear_before_reset=config.linear_before_reset,
                              gate_bias=config.gate_bias, dropout=config.dropout,
                              recurrent_dropout=config.recurrent_dropout,
                              layer_norm=config.layer_norm, proj_size=config.proj_size,
                              input_proj=config.input_proj)


def planned_steps(config: TrainConfig, n_train: int) -> Tuple[int, int]:
    """(epochs, optimizer steps) a run of ``config`` on ``n_train`` images makes: ``epochs``
    full passes, or with ``steps`` that many steps (the last epoch cut short)."""
    per_epoch = math.ceil(n_train / config.batch_size)
    if config.steps is None:
        return config.epochs, per_epoch * config.epochs
    return math.ceil(config.steps / per_epoch), config.steps


def input_normalisation(config: TrainConfig) -> Dict[str, float]:
    """The mean and deviation the pixels (scaled to [0, 1]) are standardised with."""
    if config.normalize:
        return {"mean": MNIST_MEAN, "std": MNIST_STD}
    return {"mean": 0.0, "std": 1.0}


def make_optimizer(model: SequenceClassifier, config: TrainConfig) -> Optimizer:
    if config.optimizer == "adam":
        return Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
               weight_decay=config.weight_decay, nesterov=config.momentum > 0)


def prepare_images(images: np.ndarray, dtype=np.float32, mean: float = MNIST_MEAN,
                   std: float = MNIST_STD) -> np.ndarray:
    """uint8 pixels (N, T, I) -> ``(pixels / 255 - mean) / std`` as ``dtype``.

    Float input is taken to be in [0, 1] already.
    """
    images = np.asarray(images)
    scale = 1.0 / std / (255.0 if images.dtype == np.uint8 else 1.0)
    x = images.astype(dtype)
    x *= np.asarray(scale, dtype)
    x -= np.asarray(mean / std, dtype)
    return x


class Progress:
    """A one-line progress bar on ``stream`` (stderr), redrawn at most 10 times a second.

    Disabled (every method a no-op) unless ``enabled`` and the stream is a TTY.
    """

    def __init__(self, total: int, desc: str, enabled: bool = True,
                 stream: Optional[TextIO] = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.enabled = bool(enabled) and isatty()
        self.total, self.desc = total, desc
        self.start = self._last = time.perf_counter()

    def update(self, done: int, images: int, loss: float) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        width = 24
        filled = int(width * done / self.total)
        eta = elapsed * (self.total - done) / max(done, 1)
        self.stream.write(f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{done}/{self.total} loss {loss:.4f} {images / elapsed:,.0f} img/s "
                          f"eta {eta:.0f}s ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _normalisation(model: SequenceClassifier) -> Tuple[float, float]:
    norm = model.metadata.get("normalize") or {}
    return float(norm.get("mean", MNIST_MEAN)), float(norm.get("std", MNIST_STD))


def evaluate(model: SequenceClassifier, images: np.ndarray, labels: np.ndarray, *,
             batch_size: int = 1000) -> Tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on raw ``images`` (N, T, I) and ``labels``.

    Images are normalised as recorded in ``model.metadata['normalize']`` (MNIST's by default).
    """
    n = len(images)
    if n == 0 or len(labels) != n:
        raise ValueError(f"need as many labels as images (>= 1), got {n} images, "
                         f"{len(labels)} labels")
    mean, std = _normalisation(model)
    loss_sum, correct = 0.0, 0
    for s in range(0, n, batch_size):
        x = prepare_images(images[s:s + batch_size], model.dtype, mean, std)
        y = np.asarray(labels[s:s + batch_size])
        logits = model.forward(x, training=False)
        loss, _ = softmax_cross_entropy(logits, y)
        loss_sum += loss * len(y)
        correct += int(np.count_nonzero(logits.argmax(axis=1) == y))
    return loss_sum / n, correct / n


def fit(model: SequenceClassifier, data: Any, config: TrainConfig, *, progress: bool = True,
        on_epoch: Optional[Callable[[Dict[str, Any]], None]] = None,
        resume: Optional[Dict[str, Any]] = None,
        on_checkpoint: Optional[Callable[[Dict[str, Any]], None]] = None,
        comm: Any = None) -> Dict[str, Any]:
    """Train ``model`` in place on ``data`` and evaluate on its test split after every epoch.

    Parameters
    ----------
    model : SequenceClassifier
    data : object with ``train_images`` (N, T, I) uint8, ``train_labels`` (N,), and
        ``test_images``, ``test_labels`` (e.g. the result of ``fastlstm.data.load_mnist``).
    config : TrainConfig
    progress : bool
        Draw a progress bar on stderr (only when it is a TTY).
    on_epoch : callable or None
        Called with each epoch's record as soon as it is complete.
    resume : dict or None
        A training state passed to ``on_checkpoint`` by an earlier run of the same config
        (``model`` holding that run's weights): training continues after its last epoch and
        ends bitwise identical to an uninterrupted run.
    on_checkpoint : callable or None
        Called after every epoch (after ``on_epoch``) with the training state:
        ``{"resume": <JSON-serialisable dict>, "optimizer": {slot: {name: array}}}``; see
        :func:`training_state`.
    comm : mpi4py communicator or None
        Data-parallel training over the ranks of ``comm`` (:mod:`fastlstm.distributed`;
        every rank calls ``fit`` with the same model, data and config). Every global batch
        of ``config.batch_size`` images is the same on all ranks (same shuffling seed); rank
        r computes the gradient of its rows only (:func:`~fastlstm.distributed.shard`), the
        gradients and losses are summed in rank order, weighted by each shard's share of
        the batch, and every rank clips and steps identically, so the weights stay bitwise
        equal on all ranks. Rank 0 evaluates and sends each epoch's record to the others
        (all ranks return the same history); ``on_epoch`` and ``progress`` apply on rank 0
        only, ``on_checkpoint`` on every rank.

    Returns
    -------
    dict
        ``{"cell", "hidden", ..., "epochs": [{"epoch", "train_loss", "test_loss",
        "test_accuracy", "seconds", "images_per_second", "lr"}], "final_test_accuracy", ...}``;
        ready for ``json.dump``.
    """
    X, Y = data.train_images, data.train_labels
    if config.limit is not None:
        X, Y = X[:config.limit], Y[:config.limit]
    Xt, Yt = data.test_images, data.test_labels
    if config.test_limit is not None:
        Xt, Yt = Xt[:config.test_limit], Yt[:config.test_limit]
    n, bs = len(X), config.batch_size
    if n == 0:
        raise TrainingError("no training images")
    steps_per_epoch = math.ceil(n / bs)
    n_epochs, total_steps = planned_steps(config, n)
    schedule = make_schedule(config.schedule, config.lr, total_steps,
                             round(config.warmup * steps_per_epoch))
    opt = make_optimizer(model, config)
    grads = model.grads
    norm = input_normalisation(config)
    model.metadata["normalize"] = norm
    rng = np.random.default_rng([config.seed, 1])
    dtype = model.dtype
    world, me = 1, 0
    if comm is not None:
        from . import distributed as dist

        if config.dropout or config.recurrent_dropout:
            # every rank's model draws the same masks for its own rows: the global batch
            # would see correlated masks, and N ranks would not match one process
            raise TrainingError("dropout and recurrent_dropout are not supported with "
                                "--distributed yet")

        world, me = comm.Get_size(), comm.Get_rank()
        dist.broadcast_parameters(model.parameters(), comm)  # equal anyway (same seed)
        reduced = dict(grads)
        loss_buf = np.zeros(1, dtype)  # the loss travels in the gradients' fused buffer
        reduced["loss"] = loss_buf
        progress = progress and me == 0

    history: Dict[str, Any] = {
        "cell": config.cell, "hidden": config.hidden, "layers": config.layers,
        "bidirectional": config.bidirectional, "num_parameters": model.num_parameters(),
        "train_images": n, "test_images": len(Xt), "config": config.to_dict(),
        "world_size": world, "epochs": [],
    }
    step, first_epoch, seconds_before = 0, 1, 0.0
    if resume is not None:
        done = _restore(resume, config, opt, rng, model, steps_per_epoch, total_steps)
        history["epochs"] = [dict(r) for r in resume["resume"]["history"]]
        step, first_epoch = min(done * steps_per_epoch, total_steps), done + 1
        seconds_before = float(resume["resume"]["seconds"])
    t_start = time.perf_counter()
    for epoch in range(first_epoch, n_epochs + 1):
        t0 = time.perf_counter()
        perm = rng.permutation(n)
        epoch_steps = min(steps_per_epoch, total_steps - step)
        bar = Progress(epoch_steps, f"epoch {epoch}/{n_epochs}", enabled=progress)
        loss_sum, seen = 0.0, 0
        for k in range(epoch_steps):
            idx = perm[k * bs:(k + 1) * bs]
            if comm is None:
                x = prepare_images(X[idx], dtype, norm["mean"], norm["std"])
                y = Y[idx]
                model.zero_grad()
                loss, grad_logits = softmax_cross_entropy(model.forward(x), y)
            else:  # this rank's rows of the global batch only
                mine = idx[dist.shard(len(idx), comm)]
                model.zero_grad()
                loss_buf[0] = 0
                if len(mine):
                    loss_buf[0], grad_logits = softmax_cross_entropy(
                        model.forward(prepare_images(X[mine], dtype, norm["mean"], norm["std"])),
                        Y[mine])
                    model.backward(grad_logits)
                dist.allreduce_gradients(reduced, comm, weight=len(mine) / len(idx))
                loss = float(loss_buf[0])  # the global batch's mean, the same on every rank
            if not math.isfinite(loss):
                bar.close()
                raise TrainingError(f"loss became {loss} at epoch {epoch}, step {k + 1}; "
                                    "try a smaller --lr or a --clip value")
            if comm is None:
                model.backward(grad_logits)
            if config.clip:
                clip_grad_norm(grads, config.clip)
            opt.lr = schedule(step)
            opt.step(grads)
            step += 1
            loss_sum += loss * len(idx)
            seen += len(idx)
            bar.update(k + 1, seen, loss_sum / seen)
        bar.close()
        train_seconds = time.perf_counter() - t0
        record = None
        if me == 0:
            test_loss, test_acc = evaluate(model, Xt, Yt, batch_size=config.eval_batch_size)
            record = {"epoch": epoch, "train_loss": loss_sum / seen, "test_loss": test_loss,
                      "test_accuracy": test_acc, "seconds": time.perf_counter() - t0,
                      "train_seconds": train_seconds, "images_per_second": seen / train_seconds,
                      "lr": opt.lr, "steps": step}
        seconds = seconds_before + time.perf_counter() - t_start
        if comm is not None:  # rank 0's record and clock, so that every rank saves the same
            record, seconds = comm.bcast((record, seconds), root=0)
        history["epochs"].append(record)
        if on_epoch is not None and me == 0:
            on_epoch(record)
        if on_checkpoint is not None:
            state = training_state(config, epoch, opt, rng, history["epochs"], seconds, model)
            state["final"] = epoch == n_epochs
            on_checkpoint(state)
    history["final_test_accuracy"] = history["epochs"][-1]["test_accuracy"]
    history["final_test_loss"] = history["epochs"][-1]["test_loss"]
    history["total_seconds"] = seconds_before + time.perf_counter() - t_start
    if comm is not None:
        history["total_seconds"] = comm.bcast(history["total_seconds"], root=0)
    return history


# ----------------------------------------------------------------------------------------------
# Resumable training state
# ----------------------------------------------------------------------------------------------

#: Settings that change what training computes; a resumed run must use the checkpoint's.
RESUME_FIXED = ("cell", "hidden", "layers", "bidirectional", "epochs", "batch_size", "lr",
                "optimizer", "momentum", "weight_decay", "schedule", "warmup", "clip",
                "forget_bias", "seed", "limit", "dtype", "steps", "normalize", "input_proj",
                "proj_size", "layer_norm", "dropout", "recurrent_dropout",
                "linear_before_reset", "gate_bias")


def training_state(config: TrainConfig, epoch: int, opt: Optimizer, rng: np.random.Generator,
                   epochs: Any, seconds: float,
                   model: Optional[SequenceClassifier] = None) -> Dict[str, Any]:
    """Everything needed to continue training after ``epoch`` exactly as if never stopped:
    ``{"resume": {...JSON...}, "optimizer": {slot: {name: array}}}``. The JSON part holds the
    format, the config, the epoch counter, the optimizer's step count and learning rate, the
    shuffling generator's ``bit_generator.state``, the per-epoch history and the time spent;
    the weights are the model's, and the optimizer arrays (Adam moments, SGD momentum) are
    saved next to them. With dropout, the model's own generator (its masks) is saved too."""
    st = opt.state_dict()
    resume = {"format": 1, "config": config.to_dict(), "epoch": int(epoch),
              "optimizer": {"kind": config.optimizer, "step_count": st["step_count"],
                            "lr": st["lr"]},
              "rng": rng.bit_generator.state,
              "history": [dict(r) for r in epochs], "seconds": float(seconds)}
    if model is not None and (config.dropout or config.recurrent_dropout):
        resume["model_rng"] = model.rnn._rng.bit_generator.state
    return {"resume": resume, "optimizer": st["slots"]}


def check_resume_state(state: Any, config: Optional[TrainConfig] = None) -> TrainConfig:
    """Validate the JSON part of a training state (as read back from a checkpoint); return
    the config it was written with. Raises :class:`~fastlstm.model.CheckpointError`."""
    from .model import CheckpointError

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"invalid training state in the checkpoint ({why})")

    if not isinstance(state, dict) or state.get("format") != 1:
        raise bad("unknown format")
    try:
        stored = TrainConfig(**state["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"config: {e}") from None
    for k in ("hidden", "layers", "epochs", "batch_size", "seed"):
        if not isinstance(getattr(stored, k), int) or isinstance(getattr(stored, k), bool):
            raise bad(f"config.{k} must be an integer")
    epoch = state.get("epoch")
    most = stored.epochs if stored.steps is None else stored.steps  # an epoch is >= 1 step
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 1 <= epoch <= most:
        raise bad(f"epoch must be in 1..{most}, got {epoch!r}")
    o = state.get("optimizer")
    if not isinstance(o, dict) or o.get("kind") != stored.optimizer:
        raise bad("optimizer does not match the config")
    hist = state.get("history")
    if not isinstance(hist, list) or len(hist) != epoch or not all(
            isinstance(r, dict) and r.get("epoch") == i + 1 for i, r in enumerate(hist)):
        raise bad("history does not match the epoch counter")
    if not isinstance(state.get("seconds"), (int, float)):
        raise bad("seconds must be a number")
    rng = np.random.default_rng(0)
    for key in ("rng", "model_rng") if "model_rng" in state else ("rng",):
        try:
            rng.bit_generator.state = state.get(key)
        except (TypeError, ValueError, KeyError, OverflowError) as e:
            raise bad(f"{key}: {e}") from None
    if config is not None:
        diff = [k for k in RESUME_FIXED if getattr(config, k) != getattr(stored, k)]
        if diff:
            raise bad("it was written with other settings: " + ", ".join(
                f"{k}={getattr(stored, k)!r} (now {getattr(config, k)!r})" for k in diff))
    return stored


def _restore(resume: Dict[str, Any], config: TrainConfig, opt: Optimizer,
             rng: np.random.Generator, model: SequenceClassifier, steps_per_epoch: int,
             total_steps: int) -> int:
    """Put ``opt``, ``rng`` and the model's dropout generator where the run that wrote
    ``resume`` was; the epochs done."""
    from .model import CheckpointError

    state = resume["resume"]
    check_resume_state(state, config)
    done = state["epoch"]
    o = state["optimizer"]
    expected = min(done * steps_per_epoch, total_steps)
    if o["step_count"] != expected:
        raise CheckpointError(f"invalid training state in the checkpoint (optimizer step "
                              f"{o['step_count']!r}, expected {expected} after "
                              f"{done} epochs of {steps_per_epoch} steps)")
    if (config.dropout or config.recurrent_dropout) and "model_rng" not in state:
        raise CheckpointError("invalid training state in the checkpoint (a run with dropout "
                              "needs the state of its masks' generator, model_rng)")
    try:
        opt.load_state_dict({"step_count": o["step_count"], "lr": o["lr"],
                             "slots": resume.get("optimizer") or {}})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"invalid training state in the checkpoint ({e})") from None
    rng.bit_generator.state = state["rng"]
    if "model_rng" in state:
        model.rnn._rng.bit_generator.state = state["model_rng"]
    return done
