#!/usr/bin/env python
"""Row-by-row MNIST in plain PyTorch, with the recurrent layer from fastlstm.torch.

An ordinary torch training loop (nn.Module, DataLoader-free batching, Adam, cross-entropy):
the only fastlstm line is ``fastlstm.torch.convert(model)``. ``--torch`` keeps nn.LSTM/nn.GRU,
for comparison (same seed, same batches, so the same curve up to float rounding).

    python bench/torch_mnist.py --data ../shared/datasets/mnist                 # LSTM, 3 epochs
    python bench/torch_mnist.py --data ../shared/datasets/mnist --cell gru --epochs 1
    python bench/torch_mnist.py --data ../shared/datasets/mnist --torch         # nn.LSTM
    python bench/torch_mnist.py --data ../shared/datasets/mnist --limit 6400    # a smoke test
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from torch import nn

import fastlstm.torch
from fastlstm.data import load_mnist
from fastlstm.train import prepare_images


class RowClassifier(nn.Module):
    """Each 28x28 image read as 28 steps of 28 pixels; classify from the last hidden state."""

    def __init__(self, cell: str, hidden: int = 128):
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(28, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="MNIST folder ($FASTLSTM_DATA, ./MNIST_data)")
    p.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use the first N training images")
    p.add_argument("--torch", action="store_true", help="keep torch's nn.LSTM/nn.GRU")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    mnist = load_mnist(args.data)
    x_train = torch.from_numpy(prepare_images(mnist.train_images[:args.limit]))
    y_train = torch.from_numpy(mnist.train_labels[:args.limit].astype(np.int64))
    x_test = torch.from_numpy(prepare_images(mnist.test_images))
    y_test = torch.from_numpy(mnist.test_labels.astype(np.int64))

    torch.manual_seed(args.seed)
    model = RowClassifier(args.cell)
    if not args.torch:
        fastlstm.torch.convert(model)            # nn.LSTM/nn.GRU inside now run fastlstm
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"{type(model.rnn).__module__}.{type(model.rnn).__name__}, "
          f"{torch.get_num_threads()} threads, {mnist.dataset}, {len(x_train)} images")

    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        t0, total, n = time.perf_counter(), 0.0, 0
        for k in range(0, len(order), args.batch_size):
            idx = order[k:k + args.batch_size]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            n += len(idx)
        seconds = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(x_test[k:k + 1000]).argmax(1) == y_test[k:k + 1000]).sum())
                          for k in range(0, len(x_test), 1000))
        print(f"epoch {epoch}: train loss {total / n:.4f}, test accuracy "
              f"{100 * correct / len(x_test):.2f}%, {seconds:.1f} s training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
