"""Time fastlstm.distributed.allreduce_gradients on the MNIST model's gradients.

    mpiexec -n 2 python bench/mpi_allreduce.py [--hidden 128] [--repeat 500]

Prints, on rank 0, the median and the quartiles of one call (the fused buffer of every
gradient of ``SequenceClassifier(28, hidden, 10)``, float32, plus the loss) over the ranks.
"""

import argparse
import time

import numpy as np

from fastlstm import SequenceClassifier, distributed as dist


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--cell", default="lstm")
    p.add_argument("--repeat", type=int, default=500)
    a = p.parse_args()
    comm = dist.init()
    model = SequenceClassifier(28, a.hidden, 10, cell=a.cell, seed=np.random.default_rng(0))
    grads = dict(model.grads, loss=np.zeros(1, np.float32))
    n = sum(g.size for g in grads.values())
    times = []
    for i in range(a.repeat + 20):
        comm.Barrier()
        t0 = time.perf_counter()
        dist.allreduce_gradients(grads, comm, weight=0.5)
        t = time.perf_counter() - t0
        if i >= 20:
            times.append(t)
    worst = comm.gather(times)
    if comm.Get_rank() == 0:
        slowest = np.max(np.array(worst), axis=0)  # a step waits for the slowest rank
        q1, med, q3 = np.percentile(slowest * 1e3, [25, 50, 75])
        print(f"{comm.Get_size()} ranks, {n} float32 ({4 * n / 1e3:.0f} kB): allreduce "
              f"median {med:.3f} ms (quartiles {q1:.3f}-{q3:.3f}) over {a.repeat} calls")


if __name__ == "__main__":
    main()
