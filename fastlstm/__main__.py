"""Command line: ``python -m fastlstm train|evaluate`` (also the ``fastlstm`` console script).

    python -m fastlstm train --cell gru --data ~/mnist --save gru.npz --json gru.json
    python -m fastlstm evaluate --load gru.npz --data ~/mnist
    python -m fastlstm train --resume gru.npz --data ~/mnist     # after a crash or a kill
    python -m fastlstm export --load gru.npz --onnx gru.onnx     # needs the onnx package
    mpiexec -n 4 python -m fastlstm train --distributed --threads 1 --save 'ck-{rank}.npz'

Results go to stdout (one line per epoch), the progress bar to stderr (only on a terminal).
Bad data or checkpoint files end the program with a one-line message and exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import List, Optional

__all__ = ["main", "build_parser"]

PROG = "fastlstm"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _nonneg_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number > 0, got 0")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DIR", default=None,
                   help="folder with the four IDX files of MNIST, Fashion-MNIST or KMNIST, "
                        "recognised by their checksums (default: $FASTLSTM_DATA, then "
                        "./MNIST_data)")
    p.add_argument("--download", action="store_true",
                   help="download missing MNIST files into the data folder")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the checksums: read any data in the MNIST IDX format (magic "
                        "numbers, sizes and labels 0..9 are still checked)")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="threads for the kernels (default: OMP_NUM_THREADS or all cores)")
    p.add_argument("--test-limit", type=_positive_int, default=None, metavar="N",
                   help="evaluate on the first N test images only")
    p.add_argument("--eval-batch-size", type=_positive_int, default=1000, metavar="N",
                   help="images per forward pass when evaluating (default: %(default)s)")
    p.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON")


def build_parser() -> argparse.ArgumentParser:
    from .train import TrainConfig

    d = TrainConfig()
    parser = argparse.ArgumentParser(
        prog=PROG, description="Train and evaluate row-by-row MNIST classifiers on the "
                               "fastlstm C kernels.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,export}")

    t = sub.add_parser("train", help="train a classifier and report test accuracy per epoch",
                       description="Train a recurrent classifier on row-by-row MNIST; "
                                   "the defaults reach >= 98.5% test accuracy with either cell.")
    t.add_argument("--cell", choices=("lstm", "gru", "gru-tf1"), default=d.cell,
                   help="recurrent cell; gru-tf1 is TF1's GRUCell: the original GRU (reset "
                        "gate before the recurrent product) with its gate biases starting at "
                        "1.0 (default: %(default)s)")
    t.add_argument("--hidden", type=_positive_int, default=d.hidden, metavar="H",
                   help="hidden units per layer and direction (default: %(default)s)")
    t.add_argument("--layers", type=_positive_int, default=d.layers, metavar="L",
                   help="stacked recurrent layers (default: %(default)s)")
    t.add_argument("--bidirectional", action="store_true",
                   help="add a reverse-time direction to every layer")
    t.add_argument("--epochs", type=_positive_int, default=d.epochs, metavar="N",
                   help="passes over the training images (default: %(default)s)")
    t.add_argument("--steps", type=_positive_int, default=None, metavar="N",
                   help="train for exactly N optimizer steps instead of --epochs (the last "
                        "epoch stops part-way), as the tutorials' training_iters budgets")
    t.add_argument("--batch-size", type=_positive_int, default=d.batch_size, metavar="B",
                   help="images per optimizer step (default: %(default)s)")
    t.add_argument("--lr", type=_positive_float, default=None,
                   help="peak learning rate (default: 3e-3 for adam, 0.2 for sgd)")
    t.add_argument("--optimizer", choices=("adam", "sgd"), default=d.optimizer,
                   help="(default: %(default)s)")
    t.add_argument("--momentum", type=_nonneg_float, default=d.momentum, metavar="M",
                   help="SGD momentum, Nesterov when > 0 (default: %(default)s)")
    t.add_argument("--weight-decay", type=_nonneg_float, default=d.weight_decay, metavar="W",
                   help="L2 penalty added to the gradients (default: %(default)s)")
    t.add_argument("--schedule", choices=("constant", "cosine"), default=d.schedule,
                   help="learning rate after the warm-up (default: %(default)s)")
    t.add_argument("--warmup", type=_nonneg_float, default=d.warmup, metavar="EPOCHS",
                   help="linear learning-rate warm-up in epochs, fractions allowed "
                        "(default: %(default)s)")
    t.add_argument("--clip", type=_nonneg_float, default=d.clip, metavar="NORM",
                   help="clip the global gradient norm, 0 = off (default: %(default)s)")
    t.add_argument("--forget-bias", type=float, default=d.forget_bias, metavar="F",
                   help="LSTM: add F to the forget-gate biases at initialisation "
                        "(default: %(default)s)")
    t.add_argument("--gate-bias", type=float, default=None, metavar="F",
                   help="GRU: add F to the reset and update gate biases at initialisation "
                        "(default: 1.0 for gru-tf1, else 0)")
    t.add_argument("--input-proj", type=_positive_int, default=0, metavar="N",
                   help="a dense layer from the I pixels of a row to N features before the "
                        "recurrent stack (the TF1 tutorials' 28->128 'weights in')")
    t.add_argument("--proj-size", type=_positive_int, default=0, metavar="P",
                   help="LSTM: project h to P units (PyTorch's proj_size, LSTMP)")
    t.add_argument("--layer-norm", action="store_true",
                   help="layer-normalised cells (haste's LayerNormLSTM / LayerNormGRU)")
    t.add_argument("--dropout", type=_probability, default=d.dropout, metavar="P",
                   help="dropout between stacked layers (default: %(default)s)")
    t.add_argument("--recurrent-dropout", type=_probability, default=d.recurrent_dropout,
                   metavar="P", help="variational dropout on the recurrent state, one mask per "
                                     "sequence (default: %(default)s)")
    t.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="feed pixels in [0, 1] (the tutorials) instead of standardising them "
                        "with MNIST's mean and deviation")
    t.add_argument("--dtype", choices=("float32", "float64"), default=d.dtype,
                   help="(default: %(default)s)")
    t.add_argument("--seed", type=int, default=d.seed,
                   help="initialisation and shuffling; same seed, same numbers for any "
                        "--threads (default: %(default)s)")
    t.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="train on the first N training images only")
    t.add_argument("--save", metavar="PATH", default=None,
                   help="save the trained model to this .npz checkpoint (written atomically, "
                        "with the training state, after every --checkpoint-every epochs)")
    t.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N",
                   help="write the checkpoint every N epochs (default: every epoch when "
                        "--save or --resume is given) and at the end")
    t.add_argument("--resume", metavar="PATH", default=None,
                   help="continue the run whose checkpoint is PATH (its settings are used; "
                        "checkpoints go to --save, default PATH); ends bitwise identical to "
                        "an uninterrupted run")
    t.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar (it is only drawn when stderr is a terminal)")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over the MPI ranks (start with mpiexec -n N; needs "
                        "the [mpi] extra): each rank computes the gradient of its share of "
                        "every --batch-size batch, the gradients are summed in rank order, "
                        "all ranks apply the same update; rank 0 prints, evaluates and writes "
                        "--json; --save/--resume may contain {rank} for one checkpoint per "
                        "rank, else rank 0 alone writes; --threads is per rank (default: "
                        "the CPUs divided among the ranks on the machine)")
    _add_common(t)

    e = sub.add_parser("evaluate", help="evaluate a saved checkpoint on the MNIST test set",
                       description="Evaluate a checkpoint written by 'train --save'.")
    e.add_argument("--load", metavar="PATH", required=True, help="checkpoint written by --save")
    _add_common(e)

    x = sub.add_parser("export", help="write a saved checkpoint as an ONNX graph",
                       description="Write a checkpoint as an ONNX graph (standard LSTM/GRU "
                                   "operators, opset 14, float32; input x (batch, time, "
                                   "features), output logits; the checkpoint's input "
                                   "normalisation is part of the graph). Needs the onnx "
                                   "package: pip install 'fastlstm[onnx]'.")
    x.add_argument("--load", metavar="PATH", required=True, help="checkpoint written by --save")
    x.add_argument("--onnx", metavar="PATH", required=True,
                   help="the ONNX file to write (atomically)")
    return parser


def _write_json(path: str, obj: dict) -> None:
    from .model import write_atomic

    text = json.dumps(obj, indent=2) + "\n"
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def _explicit_options(argv: Optional[List[str]]) -> dict:
    """dest -> value of the options given on the command line (defaults left out)."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for a in sub._actions:
                    a.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def _option_name(key: str) -> str:
    """The command-line spelling of a TrainConfig setting."""
    return {"normalize": "--no-normalize",
            "linear_before_reset": "--cell gru-tf1"}.get(key, "--" + key.replace("_", "-"))


def _resume_config(args, explicit: dict):
    """The TrainConfig of the run checkpointed in ``args.resume`` and its training state;
    an option given now that contradicts the checkpoint is an error."""
    from .model import CheckpointError, read_header
    from .train import RESUME_FIXED, check_resume_state

    header = read_header(args.resume)
    state = header["metadata"].get("resume")
    if state is None:
        raise CheckpointError(f"{args.resume}: has no training state to resume from "
                              "(written without --save during training, or by an older "
                              "fastlstm)")
    try:
        stored = check_resume_state(state)
    except CheckpointError as e:
        raise CheckpointError(f"{args.resume}: {e}") from None
    if explicit.get("cell") in ("gru", "gru-tf1"):  # the CLI's cell names carry the variant
        explicit = dict(explicit, cell="gru",
                        linear_before_reset=explicit["cell"] == "gru")
    conflicts = []
    for key in RESUME_FIXED:
        if key in explicit and explicit[key] != getattr(stored, key):
            if key == "lr" and explicit[key] is not None and float(explicit[key]) == stored.lr:
                continue
            conflicts.append(f"{_option_name(key)} {explicit[key]} (checkpoint: "
                             f"{getattr(stored, key)})")
    if conflicts:
        raise CheckpointError(f"{args.resume}: cannot resume with other settings: "
                              + ", ".join(conflicts) + "; a resumed run takes "
                              + ", ".join(_option_name(k) for k in RESUME_FIXED)
                              + " from the checkpoint")
    for key in ("test_limit", "eval_batch_size"):
        if key in explicit:
            setattr(stored, key, explicit[key])
    return stored, state


def _dataset_name(data) -> str:
    """The recognised dataset (MNIST, Fashion-MNIST, KMNIST) or what --no-verify read."""
    return data.dataset or "unverified IDX data (--no-verify)"


def _threads(args) -> int:
    import fastlstm

    if args.threads is not None:
        fastlstm.set_num_threads(args.threads)
    return fastlstm.get_num_threads()


def _config(args, cls):
    tf1 = args.cell == "gru-tf1"
    gate_bias = args.gate_bias if args.gate_bias is not None else (1.0 if tf1 else 0.0)
    return cls(cell="gru" if tf1 else args.cell, hidden=args.hidden, layers=args.layers,
               bidirectional=args.bidirectional, epochs=args.epochs, batch_size=args.batch_size,
               lr=args.lr, optimizer=args.optimizer, momentum=args.momentum,
               weight_decay=args.weight_decay, schedule=args.schedule, warmup=args.warmup,
               clip=args.clip, forget_bias=args.forget_bias, seed=args.seed, limit=args.limit,
               test_limit=args.test_limit, eval_batch_size=args.eval_batch_size, dtype=args.dtype,
               steps=args.steps, normalize=args.normalize, input_proj=args.input_proj,
               proj_size=args.proj_size, layer_norm=args.layer_norm, dropout=args.dropout,
               recurrent_dropout=args.recurrent_dropout, linear_before_reset=not tf1,
               gate_bias=gate_bias)


def _rank_path(path: Optional[str], rank: int) -> Optional[str]:
    return path.replace("{rank}", str(rank)) if path else path


def _train(args, explicit: Optional[dict] = None, comm=None) -> int:
    from .data import load_mnist
    from .model import CheckpointError, ensure_writable, load_with_state, save
    from .train import TrainConfig, build_model, fit, planned_steps

    writes = True
    if comm is not None:  # --distributed: {rank} in the paths; rank 0 alone writes the rest
        rank = comm.Get_rank()
        writes = rank == 0 or "{rank}" in (args.save or args.resume or "")
        args.resume = _rank_path(args.resume, rank)
        args.save = _rank_path(args.save, rank)
        if rank != 0:
            args.json = None
    save_path = args.save or args.resume
    if args.checkpoint_every is not None and not save_path:
        print(f"{PROG} train: error: --checkpoint-every needs --save or --resume",
              file=sys.stderr)
        return 2
    if not writes:
        save_path = None
    # Prove every output can be written before any work (a run must not be lost at the end).
    for path, what in ((save_path, "checkpoint"), (args.json, "--json file")):
        if path:
            ensure_writable(path, what)
    resume = None
    if args.resume:
        config, state = _resume_config(args, explicit or {})
    else:
        try:
            config = _config(args, TrainConfig)
        except ValueError as e:
            print(f"{PROG} train: error: {e}", file=sys.stderr)
            return 2
    if comm is not None and args.threads is None:
        from .distributed import default_threads
        args.threads = default_threads(comm)
    threads = _threads(args)
    data = load_mnist(args.data, download=args.download, verify=args.verify)
    print(f"data: {_dataset_name(data)} in {data.path}", flush=True)
    if args.resume:
        model, slots = load_with_state(args.resume)
        try:
            expected = build_model(config, input_size=data.train_images.shape[2],
                                   num_classes=model.config()["num_classes"]).config()
        except ValueError as e:
            raise CheckpointError(f"{args.resume}: invalid training settings ({e})") from None
        if model.config() != expected:
            raise CheckpointError(f"{args.resume}: the model does not match its training "
                                  f"settings")
        resume = {"resume": state, "optimizer": slots}
        if comm is not None:
            epochs = comm.allgather(state["epoch"])
            if len(set(epochs)) > 1:
                raise CheckpointError(
                    "the ranks' checkpoints were written after different epochs ("
                    + ", ".join(f"rank {r}: {e}" for r, e in enumerate(epochs))
                    + "); resume every rank from the same file (--resume without {rank})")
        print(f"resuming {args.resume} after epoch {state['epoch']}/{config.epochs} "
              f"(settings from the checkpoint)", flush=True)
    else:
        model = build_model(config, input_size=data.train_images.shape[2])
    n_train = len(data.train_images) if config.limit is None else min(config.limit,
                                                                         len(data.train_images))
    n_epochs, n_steps = planned_steps(config, n_train)
    print(f"{config.cell.upper()} hidden {config.hidden} x{config.layers}"
          f"{' bidirectional' if config.bidirectional else ''}, "
          f"{model.num_parameters():,} parameters, {n_train} training images, "
          f"{config.optimizer} lr {config.lr:g} {config.schedule}, batch {config.batch_size}, "
          f"{threads} thread{'s' if threads != 1 else ''}"
          + (f" per rank, {comm.Get_size()} MPI ranks" if comm is not None else "")
          + (f", {n_steps} step{'s' if n_steps != 1 else ''}" if config.steps is not None
             else ""),
          flush=True)

    def report(r: dict) -> None:
        print(f"epoch {r['epoch']:3d}  train loss {r['train_loss']:.4f}  "
              f"test acc {100 * r['test_accuracy']:6.2f}%  {r['seconds']:6.1f} s  "
              f"{r['images_per_second']:8.0f} img/s", flush=True)

    every = args.checkpoint_every or 1
    last_state: dict = dict(resume) if resume else {}

    def checkpoint(state: dict) -> None:
        state = dict(state)
        final = state.pop("final", False)  # the run's last epoch (with --steps, maybe partial)
        last_state.update(state)
        epoch = state["resume"]["epoch"]
        if save_path and (epoch % every == 0 or final):
            model.metadata["train"] = {"config": config.to_dict(), "epochs_done": epoch}
            model.metadata["resume"] = state["resume"]
            save(model, save_path, optimizer_state=state["optimizer"])

    if resume is not None and resume["resume"]["epoch"] >= n_epochs:
        print(f"{args.resume}: the run is already complete ({n_epochs} epochs)")
    history = fit(model, data, config, progress=not args.quiet, on_epoch=report,
                  resume=resume, on_checkpoint=checkpoint, comm=comm)
    history["threads"] = threads
    history["dataset"] = _dataset_name(data)
    history["data_dir"] = os.path.abspath(data.path)
    print(f"final test accuracy {100 * history['final_test_accuracy']:.2f}% "
          f"({history['test_images']} images, {history['total_seconds']:.1f} s total)")
    if save_path:
        model.metadata["train"] = {"config": config.to_dict(),
                                   "final_test_accuracy": history["final_test_accuracy"]}
        if last_state:
            model.metadata["resume"] = last_state["resume"]
        save(model, save_path, optimizer_state=last_state.get("optimizer"))
        history["checkpoint"] = os.path.abspath(save_path)
        print(f"saved {save_path}")
    if args.json:
        _write_json(args.json, history)
    return 0


def _evaluate(args) -> int:
    from .data import load_mnist
    from .model import CheckpointError, load
    from .train import evaluate

    if args.json:
        from .model import ensure_writable
        ensure_writable(args.json, "--json file")
    model = load(args.load)
    threads = _threads(args)
    data = load_mnist(args.data, download=args.download, verify=args.verify, splits=("test",))
    images, labels = data.test_images, data.test_labels
    if args.test_limit is not None:
        images, labels = images[:args.test_limit], labels[:args.test_limit]
    if images.shape[2] != model.rnn.input_size:
        raise CheckpointError(f"{args.load} expects rows of {model.rnn.input_size} values, "
                         f"the data has {images.shape[2]}")
    loss, acc = evaluate(model, images, labels, batch_size=args.eval_batch_size)
    cfg = model.config()
    print(f"{args.load}: {cfg['cell'].upper()} hidden {cfg['hidden_size']}: test accuracy "
          f"{100 * acc:.2f}%  loss {loss:.4f}  ({len(labels)} images, {_dataset_name(data)})")
    if args.json:
        _write_json(args.json, {"checkpoint": os.path.abspath(args.load), "config": cfg,
                                "test_images": len(labels), "test_loss": loss,
                                "test_accuracy": acc, "threads": threads,
                                "dataset": _dataset_name(data),
                                "data_dir": os.path.abspath(data.path)})
    return 0


def _export(args) -> int:
    from .model import ensure_writable, load

    try:
        from . import onnx as fonnx
        fonnx._onnx()
    except ImportError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    ensure_writable(args.onnx, "ONNX file")
    model = load(args.load)
    try:
        fonnx.export(model, args.onnx)
    except ValueError as e:  # a model the ONNX operators cannot express
        print(f"{PROG} export: error: {args.load}: {e}", file=sys.stderr)
        return 1
    cfg = model.config()
    norm = model.metadata.get("normalize")
    print(f"wrote {args.onnx}: {cfg['cell'].upper()} hidden {cfg['hidden_size']} "
          f"x{cfg['num_layers']}{' bidirectional' if cfg['bidirectional'] else ''}; input x "
          f"(batch, time, {cfg['input_size']}) float32"
          + (f", normalised in the graph (mean {norm['mean']:g}, std {norm['std']:g})"
             if norm else "") + f"; output logits (batch, {cfg['num_classes']})")
    return 0


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename and e.strerror:
        return f"{e.filename}: {e.strerror}"
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    out = lines[0] if lines else type(e).__name__
    for prev, line in zip(lines, lines[1:]):
        out += (" " if prev.endswith(":") else "; ") + line
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 data/checkpoint/training error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .data import DatasetError
    from .model import CheckpointError
    from .train import TrainingError

    comm = None
    if args.command == "train" and args.distributed:
        from .distributed import init
        try:
            comm = init()
        except ImportError as e:
            print(f"{PROG} train: error: --distributed: {e}", file=sys.stderr)
            return 2
    try:
        if comm is not None and comm.Get_rank() != 0:
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                return _train(args, _explicit_options(argv) if args.resume else None, comm)
        if args.command == "train":
            return _train(args, _explicit_options(argv) if args.resume else None, comm)
        if args.command == "export":
            return _export(args)
        return _evaluate(args)
    except (DatasetError, CheckpointError, TrainingError, OSError) as e:
        print(f"{PROG}: error: {_rank(comm)}{_one_line(e)}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        status = 130
    except BaseException as e:
        if comm is None or comm.Get_size() == 1 or isinstance(e, SystemExit):
            raise
        import traceback
        traceback.print_exc()
        status = 1
    if comm is not None and comm.Get_size() > 1:
        # the other ranks may be waiting in a collective for this one: end them all
        sys.stderr.flush()
        comm.Abort(status)
    return status


def _rank(comm) -> str:
    return f"rank {comm.Get_rank()}: " if comm is not None and comm.Get_size() > 1 else ""


if __name__ == "__main__":
    sys.exit(main())
