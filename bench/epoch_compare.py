#!/usr/bin/env python
"""One MNIST training epoch: fastlstm's trainer vs the same model in PyTorch, in one process.

The fastlstm side is ``fastlstm.train.fit`` itself (what ``python -m fastlstm train`` runs) at
the trainer's defaults: row-by-row MNIST, hidden 128, batch 128, Adam 3e-3 with the cosine
schedule, gradient clipping 1.0. The PyTorch side is the same model (``nn.LSTM``/``nn.GRU``,
batch_first, then ``nn.Linear`` on h_n) started from the same weights, fed the same batches in
the same order through the same NumPy preprocessing, with the same optimizer, schedule and
clipping. Each repeat trains both from scratch, alternately; the time is the training loop
only (``fit``'s ``train_seconds``; its evaluation after the epoch is not counted).

    python bench/epoch_compare.py --data ../shared/datasets/mnist               # LSTM, 2 threads
    python bench/epoch_compare.py --data DIR --cells lstm gru --repeats 3 --markdown
    python bench/epoch_compare.py --data DIR --limit 1280                       # 10 batches: a smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np


import fastlstm  # noqa: E402
from fastlstm.data import load_mnist  # noqa: E402
from fastlstm.optim import make_schedule  # noqa: E402
from fastlstm.train import TrainConfig, build_model, fit, prepare_images  # noqa: E402

import common  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", metavar="DIR", default=None,
                   help="MNIST folder (default: as the trainer: $FASTLSTM_DATA, then ./MNIST_data)")
    p.add_argument("--cells", nargs="+", choices=common.CELLS, default=["lstm"])
    p.add_argument("--threads", type=int, default=2,
                   help="fastlstm.set_num_threads and torch.set_num_threads")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="limit NumPy's BLAS (the dense layer, Adam) to this many threads with "
                        "threadpoolctl; default: leave it as the trainer does")
    p.add_argument("--repeats", type=int, default=1, help="epochs of each, alternating")
    p.add_argument("--limit", type=int, default=None,
                   help="train on the first N images only (a quick check, not an epoch)")
    p.add_argument("--no-torch", action="store_true", help="time fastlstm alone")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--markdown", action="store_true")
    return p


def fastlstm_epoch(config: TrainConfig, data) -> Dict[str, Any]:
    model = build_model(config, input_size=data.train_images.shape[2])
    history = fit(model, data, config, progress=False)
    e = history["epochs"][0]
    return {"seconds": e["train_seconds"], "train_loss": e["train_loss"],
            "images": history["train_images"]}


def torch_epoch(config: TrainConfig, data) -> Dict[str, Any]:
    """The body of fastlstm.train.fit's epoch loop, with torch doing the model and optimizer."""
    import torch
    import torch.nn.functional as F

    class Classifier(torch.nn.Module):
        def __init__(self, cell: str, input_size: int, hidden: int, classes: int) -> None:
            super().__init__()
            rnn = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
            self.rnn = rnn(input_size, hidden, config.layers, batch_first=True,
                           bidirectional=config.bidirectional)
            self.fc = torch.nn.Linear(hidden * (2 if config.bidirectional else 1), classes)

        def forward(self, x):
            _, state = self.rnn(x)
            h_n = state[0] if isinstance(state, tuple) else state
            feat = torch.cat([h_n[-2], h_n[-1]], 1) if config.bidirectional else h_n[-1]
            return self.fc(feat)

    X, Y = data.train_images, data.train_labels
    if config.limit is not None:
        X, Y = X[:config.limit], Y[:config.limit]
    reference_model = build_model(config, input_size=X.shape[2])  # same seed, same weights
    model = Classifier(config.cell, X.shape[2], config.hidden, reference_model.fc.out_features)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in reference_model.state_dict().items()})
    if config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay, nesterov=config.momentum > 0)
    n, bs = len(X), config.batch_size
    steps = math.ceil(n / bs)
    schedule = make_schedule(config.schedule, config.lr, steps * config.epochs,
                             round(config.warmup * steps))
    rng = np.random.default_rng([config.seed, 1])  # fit's batch order
    loss_sum = 0.0
    t0 = time.perf_counter()
    perm = rng.permutation(n)
    for k in range(steps):
        idx = perm[k * bs:(k + 1) * bs]
        x = torch.from_numpy(prepare_images(X[idx], np.float32))
        y = torch.from_numpy(Y[idx].astype(np.int64))
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        value = loss.item()
        if not math.isfinite(value):
            raise RuntimeError(f"PyTorch loss became {value} at step {k + 1}")
        loss.backward()
        if config.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        for group in opt.param_groups:
            group["lr"] = schedule(k)
        opt.step()
        loss_sum += value * len(idx)
    return {"seconds": time.perf_counter() - t0, "train_loss": loss_sum / n, "images": n}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    with_torch = common.use_torch(args.no_torch)
    data = load_mnist(args.data)
    machine = common.machine_info()
    if not with_torch:
        machine["torch"] = "not used"
    results = []
    with ExitStack() as stack:
        old = fastlstm.get_num_threads()
        fastlstm.set_num_threads(args.threads)
        stack.callback(fastlstm.set_num_threads, old)
        if with_torch:
            import torch

            old_torch = torch.get_num_threads()
            torch.set_num_threads(args.threads)
            stack.callback(torch.set_num_threads, old_torch)
        blas = "default (not limited)"
        if args.blas_threads is not None:
            limits = common._blas_limits(args.blas_threads)
            if limits is None:
                blas = "default (--blas-threads needs threadpoolctl)"
            else:
                stack.enter_context(limits)
                blas = args.blas_threads
        for cell in args.cells:
            config = TrainConfig(cell=cell, epochs=1, limit=args.limit, test_limit=1000)
            runs: Dict[str, List[Dict[str, Any]]] = {"fastlstm": [], "torch": []}
            # Untimed: start the thread pools and fault in the buffers before the first epoch.
            warm = dataclasses.replace(config, limit=2 * config.batch_size)
            fastlstm_epoch(warm, data)
            if with_torch:
                torch_epoch(warm, data)
            for r in range(args.repeats):
                runs["fastlstm"].append(fastlstm_epoch(config, data))
                if with_torch:
                    runs["torch"].append(torch_epoch(config, data))
                print(f"  {cell} repeat {r + 1}: " + ", ".join(
                    f"{k} {v[-1]['seconds']:.2f} s (loss {v[-1]['train_loss']:.4f})"
                    for k, v in runs.items() if v), file=sys.stderr, flush=True)
            row: Dict[str, Any] = {"cell": cell, "config": config.to_dict(), "runs": runs}
            for k, v in runs.items():
                if v:
                    row[k] = {"median_s": statistics.median(x["seconds"] for x in v),
                              "train_loss": v[-1]["train_loss"], "images": v[-1]["images"]}
            if with_torch:
                row["ratio"] = row["fastlstm"]["median_s"] / row["torch"]["median_s"]
            results.append(row)

    headers = ["cell", "images", "threads", "fastlstm s", "fastlstm img/s"]
    headers += ["PyTorch s", "PyTorch img/s", "fastlstm/PyTorch"] if with_torch else []
    headers += ["train loss fastlstm" + (" / PyTorch" if with_torch else "")]
    rows = []
    for row in results:
        fl, th = row["fastlstm"], row.get("torch")
        line = [row["cell"], fl["images"], args.threads, f"{fl['median_s']:.2f}",
                f"{fl['images'] / fl['median_s']:.0f}"]
        if th:
            line += [f"{th['median_s']:.2f}", f"{th['images'] / th['median_s']:.0f}",
                     f"{row['ratio']:.2f}"]
        line.append(f"{fl['train_loss']:.4f}" + (f" / {th['train_loss']:.4f}" if th else ""))
        rows.append(line)
    bullet = "- " if args.markdown else ""
    print(f"{bullet}machine: {machine['cpu']}, {machine['cores']} cores, load average at start "
          f"{' '.join(map(str, machine['load_average'] or []))}; fastlstm {machine['fastlstm']} "
          f"(ISA {machine['fastlstm_isa']}); PyTorch {machine['torch'] or 'not installed'}; "
          f"NumPy BLAS {machine['blas']}, BLAS threads {blas}")
    print(f"{bullet}one epoch of the trainer's defaults (hidden 128, batch 128, Adam, clip 1.0), "
          f"median of {args.repeats} alternating repeat(s), training loop only; {machine['date']}")
    print()
    print(common.format_table(headers, rows, args.markdown))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"kind": "fastlstm-epoch-compare", "command": " ".join(sys.argv),
                       "machine": machine, "threads": args.threads, "blas_threads": blas,
                       "repeats": args.repeats, "results": results}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
