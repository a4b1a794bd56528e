"""Data-parallel training over MPI (fastlstm.distributed, ``train --distributed``).

The MPI tests start ``mpiexec -n 2`` (1 kernel thread per rank) and skip, saying why, where
mpi4py (the ``[mpi]`` extra) or an ``mpiexec`` is missing. ``mpiexec`` is looked for first
beside this Python (a virtual environment with MPICH's wheel has it in its bin folder), then
on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from fastlstm.distributed import shard_bounds
from testkit import child_env, mnist_dir

RANKS = 2


def _mpiexec():
    here = os.path.dirname(sys.executable)
    return shutil.which("mpiexec", path=here) or shutil.which("mpiexec")


def _mpi_missing():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install \"fastlstm[mpi]\")"
    if _mpiexec() is None:
        return "no mpiexec beside this Python or on PATH (pip install mpich, or a system MPI)"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


MNIST_DIR = mnist_dir()
needs_mnist = pytest.mark.skipif(MNIST_DIR is None,
                                 reason="MNIST not found: set FASTLSTM_DATA to its folder")


def _env():
    env = child_env()
    env["OMP_NUM_THREADS"] = "1"
    env.setdefault("OMP_WAIT_POLICY", "passive")
    return env


def _launcher(n=RANKS):
    exe = _mpiexec()
    cmd = [exe, "-n", str(n)]
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    if "Open MPI" in version or "OpenRTE" in version:  # MPICH's hydra needs neither
        cmd += ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return cmd


def _run(args, cwd, timeout=150, n=RANKS, **kw):
    p = subprocess.run(_launcher(n) + args, cwd=cwd, env=_env(), capture_output=True,
                       text=True, timeout=timeout, **kw)
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def _script(tmp_path, body, name="script.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


# -- no MPI needed ----------------------------------------------------------------------------

def test_importing_fastlstm_does_not_import_mpi4py(tmp_path):
    code = ("import sys, fastlstm, fastlstm.train, fastlstm.__main__, fastlstm.distributed\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'\n")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), check=True)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 64, 128, 1000])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shards_cover_the_batch_in_rank_order(n, size):
    bounds = [shard_bounds(n, r, size) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_shard_bounds_refuses_a_bad_rank():
    with pytest.raises(ValueError):
        shard_bounds(10, 2, 2)


def test_distributed_without_mpi4py_is_a_clear_error(tmp_path):
    # A child where "import mpi4py" fails, as without the [mpi] extra.
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "mpi4py.py").write_text("raise ImportError('No module named mpi4py')\n")
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), env["PYTHONPATH"]])
    p = subprocess.run([sys.executable, "-m", "fastlstm", "train", "--distributed"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "pip install \"fastlstm[mpi]\"" in p.stderr, p.stderr


# -- mpiexec -n 2 -----------------------------------------------------------------------------

@needs_mpi
def test_fused_allreduce_is_the_rank_ordered_weighted_sum(tmp_path):
    script = _script(tmp_path, """
        import numpy as np
        from fastlstm import distributed as dist

        comm = dist.init()
        me, n = comm.Get_rank(), comm.Get_size()
        assert n == 2, f"world size {n}: is mpiexec from mpi4py's MPI?"
        weights = [0.3, 0.7]
        for dtype in (np.float32, np.float64):
            def arrays(r):
                g = np.random.default_rng([7, r])
                return {"w": g.standard_normal((5, 3)).astype(dtype),
                        "b": g.standard_normal(11).astype(dtype),
                        "s": g.standard_normal(()).astype(dtype),
                        "big": g.standard_normal(10001).astype(dtype)}  # odd: uneven chunks
            mine = arrays(me)
            out = dist.allreduce_gradients(mine, comm, weight=weights[me])
            assert out is mine
            for k, got in mine.items():
                want = arrays(0)[k] * dtype(weights[0])
                for r in range(1, n):
                    want = want + arrays(r)[k] * dtype(weights[r])   # rank order
                assert got.dtype == dtype and got.shape == want.shape
                assert got.tobytes() == want.tobytes(), k
            mean = arrays(me)
            dist.allreduce_gradients(mean, comm)               # default: the mean
            for k, got in mean.items():
                want = arrays(0)[k] * dtype(0.5) + arrays(1)[k] * dtype(0.5)
                assert got.tobytes() == want.tobytes(), k
            # every rank ends with the same bytes
            blob = b"".join(a.tobytes() for a in mine.values())
            assert comm.allgather(blob) == [blob] * n
        p = {"a": np.full(4, float(me)), "b": np.full((2, 2), 10.0 + me)}
        dist.broadcast_parameters(p, comm)
        assert (p["a"] == 0).all() and (p["b"] == 10).all()
        shards = comm.gather(dist.shard(9, comm))
        if me == 0:  # one printer: the ranks' lines could interleave
            print("ok", shards)
    """)
    out = _run([sys.executable, script], tmp_path).stdout
    assert "ok [slice(0, 4, None), slice(4, 9, None)]" in out


@needs_mpi
def test_distributed_gradient_equals_the_global_batch_gradient(tmp_path):
    # float64; batch sizes 7 (shards 3 + 4), 2 and 1 (rank 0 has no rows)
    script = _script(tmp_path, """
        import numpy as np
        import fastlstm
        from fastlstm import SequenceClassifier, distributed as dist
        from fastlstm.loss import softmax_cross_entropy

        fastlstm.set_num_threads(1)
        comm = dist.init()
        me = comm.Get_rank()
        for cell in ("lstm", "gru"):
            model = SequenceClassifier(5, 6, 4, cell=cell, dtype="float64",
                                       seed=np.random.default_rng(3))
            g = np.random.default_rng(11)
            x = g.standard_normal((7, 9, 5))
            y = g.integers(0, 4, 7)
            for B in (7, 2, 1):
                model.zero_grad()
                loss, gl = softmax_cross_entropy(model.forward(x[:B], ), y[:B])
                model.backward(gl)
                full = {k: v.copy() for k, v in model.grads.items()}

                rows = np.arange(B)[dist.shard(B, comm)]
                model.zero_grad()
                part_loss = np.zeros(1)
                if len(rows):
                    part_loss[0], gl = softmax_cross_entropy(model.forward(x[rows]), y[rows])
                    model.backward(gl)
                grads = dict(model.grads, loss=part_loss)
                dist.allreduce_gradients(grads, comm, weight=len(rows) / B)
                np.testing.assert_allclose(part_loss[0], loss, rtol=1e-13)
                for k, v in full.items():
                    np.testing.assert_allclose(model.grads[k], v, rtol=1e-11, atol=1e-15,
                                               err_msg=f"{cell} B={B} {k}")
        done = comm.gather(me)
        if me == 0:
            print("ok", done)
    """)
    out = _run([sys.executable, script], tmp_path).stdout
    assert "ok [0, 1]" in out


TRAIN = ["train", "--data", str(MNIST_DIR), "--limit", "2000", "--epochs", "2", "--batch-size", "64",
         "--test-limit", "500", "--threads", "1", "--quiet"]


def _params(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "__fastlstm__"}


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("single")
    p = subprocess.run([sys.executable, "-m", "fastlstm"] + TRAIN
                       + ["--save", "single.npz", "--json", "single.json"],
                       cwd=d, env=_env(), capture_output=True, text=True, timeout=150)
    assert p.returncode == 0, p.stderr
    return d


@needs_mpi
@needs_mnist
def test_train_distributed_cli(tmp_path, single_run):
    args = [sys.executable, "-m", "fastlstm"] + TRAIN + ["--distributed",
                                                          "--save", "ck-{rank}.npz",
                                                          "--json", "out.json"]
    first = _run(args, tmp_path)
    # rank 0 alone prints
    assert first.stdout.count("final test accuracy") == 1, first.stdout
    assert "2 MPI ranks" in first.stdout
    h = json.loads((tmp_path / "out.json").read_text())
    assert h["world_size"] == 2 and len(h["epochs"]) == 2
    ck0, ck1 = _params(tmp_path / "ck-0.npz"), _params(tmp_path / "ck-1.npz")
    assert _same(ck0, ck1), "the ranks' weights differ"
    # the whole files: the same weights, optimizer state, history and header bytes
    assert (tmp_path / "ck-0.npz").read_bytes() == (tmp_path / "ck-1.npz").read_bytes()

    # a rerun with the same N: bitwise the same weights and losses
    again = tmp_path / "again"
    again.mkdir()
    _run(args, again)
    assert _same(ck0, _params(again / "ck-0.npz"))
    h2 = json.loads((again / "out.json").read_text())
    assert [r["train_loss"] for r in h2["epochs"]] == [r["train_loss"] for r in h["epochs"]]
    assert h2["final_test_accuracy"] == h["final_test_accuracy"]

    # the same run in one process: the same global batches, so nearly the same accuracy
    single = json.loads((single_run / "single.json").read_text())
    assert single["world_size"] == 1
    print(f"accuracy: 2 ranks {100 * h['final_test_accuracy']:.2f}%, "
          f"1 process {100 * single['final_test_accuracy']:.2f}%")
    assert abs(h["final_test_accuracy"] - single["final_test_accuracy"]) <= 0.01
    for a, b in zip(h["epochs"], single["epochs"]):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.01 * b["train_loss"]


@needs_mpi
@needs_mnist
def test_distributed_with_one_rank_is_the_single_process_run(tmp_path, single_run):
    _run([sys.executable, "-m", "fastlstm"] + TRAIN + ["--distributed", "--save", "one.npz"],
         tmp_path, n=1)
    assert _same(_params(tmp_path / "one.npz"), _params(single_run / "single.npz"))


def _epoch_of(path):
    from fastlstm.model import read_header
    try:
        return read_header(path)["metadata"]["resume"]["epoch"]
    except Exception:
        return 0


@needs_mpi
@needs_mnist
def test_killed_distributed_run_resumes_bitwise_identical(tmp_path):
    args = [sys.executable, "-m", "fastlstm", "train", "--data", str(MNIST_DIR), "--limit", "1500", "--epochs", "3",
            "--batch-size", "64", "--test-limit", "200", "--threads", "1", "--quiet",
            "--distributed"]
    ref = tmp_path / "ref"
    ref.mkdir()
    _run(args + ["--save", "ck-{rank}.npz"], ref)
    run = tmp_path / "run"
    run.mkdir()
    p = subprocess.Popen(_launcher() + args + ["--save", "ck-{rank}.npz"], cwd=run, env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _epoch_of(run / "ck-0.npz") < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # mpiexec and both ranks
        p.wait()
    killed_at = _epoch_of(run / "ck-0.npz")
    if killed_at >= 3:
        pytest.skip("the run finished before it could be killed")
    # every rank from rank 0's checkpoint (the ranks' files may be an epoch apart)
    r = _run(args + ["--resume", "ck-0.npz", "--save", "ck-{rank}.npz"], run)
    assert "resuming ck-0.npz after epoch" in r.stdout, r.stdout
    for k in (0, 1):
        assert _same(_params(run / f"ck-{k}.npz"), _params(ref / f"ck-{k}.npz"))
