"""What the benchmarks share: shapes, FLOP counts, the peers, thread control, checks, machine.

Used by the pytest benchmarks (through the fixture in ``conftest.py``), ``compare.py``,
``epoch_compare.py`` and ``report.py``. Nothing here imports pytest; torch, onnx and
onnxruntime are imported only when their peer is built (all three are optional).

Shapes: T steps, B batch, I input, H hidden; all problems are float32, time-major (T, B, I).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import platform
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

import fastlstm
from fastlstm import reference

SHAPES: Dict[str, tuple] = {
    "seed": (28, 128, 28, 128),     # row-by-row MNIST, batch 128
    "long": (200, 64, 64, 256),
    "single": (28, 1, 28, 128),     # B=1: latency, little to parallelise
}
CELLS = ("lstm", "gru")
MODES = ("forward", "train")
THREADS = (1, 2)
IMPLS = ("fastlstm", "numpy_ref", "torch", "onnxruntime")
# Peers that only run inference: no "train" mode (ONNX Runtime's CPU build has no training).
FORWARD_ONLY = ("onnxruntime",)
GATES = {"lstm": 4, "gru": 3}
WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")

# The float32 row of tests/conftest.py's TOL (float32 result vs the float64 reference of the
# same inputs), with atol scaled by max(1, max|expected|) as the tests do.
CHECK_TOL = dict(rtol=1e-5, atol=1e-6)
# Batch rows are independent, so the check runs the float64 reference on a few rows only
# (the reference takes ~10 s per call at the long shape); see check().
CHECK_ROWS = 4


def flops(cell: str, shape: str, mode: str) -> float:
    """The standard count: forward 2*T*B*(I+H)*G*H (G = 4 LSTM, 3 GRU); train = 3x forward."""
    T, B, I, H = SHAPES[shape]
    fwd = 2.0 * T * B * (I + H) * GATES[cell] * H
    return 3.0 * fwd if mode == "train" else fwd


def shape_label(shape: str) -> str:
    T, B, I, H = SHAPES[shape]
    return f"{shape} ({T},{B},{I},{H})"


@functools.lru_cache(maxsize=None)
def problem(cell: str, shape: str) -> Dict[str, np.ndarray]:
    """Random float32 inputs: x (T, B, I), PyTorch-initialised weights, upstream dy (T, B, H).

    Cached: every peer and every thread count sees the same arrays. Don't modify them.
    """
    T, B, I, H = SHAPES[shape]
    G = GATES[cell] * H
    rng = np.random.default_rng([T, B, I, H, GATES[cell]])
    k = 1.0 / np.sqrt(H)
    p = {"x": rng.uniform(-1, 1, (T, B, I)).astype(np.float32)}
    for name, s in zip(WEIGHTS, ((G, I), (G, H), (G,), (G,))):
        p[name] = rng.uniform(-k, k, s).astype(np.float32)
    p["dy"] = rng.standard_normal((T, B, H)).astype(np.float32)
    return p


# ----------------------------------------------------------------------------------------------
# Peers: each gives a zero-argument callable doing one forward or one train step
# ----------------------------------------------------------------------------------------------

def _importable(*modules: str) -> bool:
    try:
        for name in modules:
            importlib.import_module(name)
    except ImportError:
        return False
    return True


def torch_available() -> bool:
    return _importable("torch")


def use_torch(no_torch: bool) -> bool:
    """Whether to time PyTorch as the peer: not when ``--no-torch`` was given, nor when it is
    not installed (said on stderr, then fastlstm is timed alone)."""
    if no_torch:
        return False
    if not torch_available():
        print("PyTorch is not installed (pip install .[bench]): timing fastlstm alone",
              file=sys.stderr)
        return False
    return True


def onnxruntime_available() -> bool:
    """onnxruntime and onnx (which builds the graph) both importable."""
    return _importable("onnx", "onnxruntime")


def impl_modes(impl: str) -> tuple:
    """The modes ``impl`` can run: every mode, or "forward" for an inference-only peer."""
    return ("forward",) if impl in FORWARD_ONLY else MODES


def onnx_rnn_model(cell: str, p: Dict[str, np.ndarray]):
    """A one-layer, forward-direction ONNX ``LSTM``/``GRU`` graph holding a problem's weights.

    Opset 14 like ``fastlstm.onnx``; W, R, B from ``fastlstm.convert.to_onnx`` (PyTorch layout
    to ONNX gate order); GRU with ``linear_before_reset=1`` (PyTorch's GRU, as fastlstm's).
    Input ``x`` float32 (time, batch, I); outputs ``Y`` (time, 1, batch, H), ``Y_h`` (1, batch,
    H) and, for the LSTM, ``Y_c``: what fastlstm's ``output``, ``h_n``, ``c_n`` hold.
    """
    from onnx import TensorProto, helper, numpy_helper

    from fastlstm import convert
    from fastlstm.onnx import IR_VERSION, OPSET

    H = p["weight_hh"].shape[1]
    I = p["weight_ih"].shape[1]
    W, R, B = convert.to_onnx([{n: p[n] for n in WEIGHTS}], cell=cell)
    inits = [numpy_helper.from_array(np.ascontiguousarray(a, np.float32), name)
             for name, a in (("W", W), ("R", R), ("B", B))]
    outs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    attrs: Dict[str, Any] = dict(hidden_size=H, direction="forward")
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    node = helper.make_node("LSTM" if cell == "lstm" else "GRU", ["x", "W", "R", "B"], outs,
                            name=cell, **attrs)
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [node], f"bench_{cell}",
        [helper.make_tensor_value_info("x", f32, ["time", "batch", I])],
        [helper.make_tensor_value_info("Y", f32, ["time", 1, "batch", H]),
         helper.make_tensor_value_info("Y_h", f32, [1, "batch", H])]
        + ([helper.make_tensor_value_info("Y_c", f32, [1, "batch", H])] if cell == "lstm" else []),
        initializer=inits)
    model = helper.make_model(graph, producer_name="fastlstm-bench",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


class OrtRNN:
    """An ONNX Runtime ``InferenceSession`` (CPU provider) of :func:`onnx_rnn_model`.

    ``threads`` intra-op threads (the caller's thread is one of them), one inter-op thread,
    sequential execution, default graph optimisation and thread spinning. ``threads=None``:
    the count of the enclosing :func:`thread_count`, else 1.
    """

    def __init__(self, cell: str, p: Dict[str, np.ndarray], threads: Optional[int] = None) -> None:
        import onnxruntime as ort

        self.threads = threads if threads is not None else (_THREADS[-1] if _THREADS else 1)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(onnx_rnn_model(cell, p).SerializeToString(), so,
                                            providers=["CPUExecutionProvider"])
        self.feed = {"x": p["x"]}

    def forward(self):
        """``[Y, Y_h]`` (+ ``Y_c`` for the LSTM), freshly allocated, as fastlstm's outputs are."""
        return self.session.run(None, self.feed)


class TorchRNN:
    """``torch.nn.LSTM`` / ``nn.GRU`` (one layer, time-major) holding a problem's weights."""

    def __init__(self, cell: str, p: Dict[str, np.ndarray]) -> None:
        import torch

        self.torch = torch
        H = p["weight_hh"].shape[1]
        I = p["weight_ih"].shape[1]
        self.module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H)
        self.params = [getattr(self.module, name + "_l0") for name in WEIGHTS]
        with torch.no_grad():
            for name, param in zip(WEIGHTS, self.params):
                param.copy_(torch.from_numpy(p[name]))
        self.x = torch.from_numpy(p["x"])
        self.x_train = self.x.clone().requires_grad_(True)
        self.dy = torch.from_numpy(p["dy"])

    def forward(self):
        with self.torch.no_grad():
            return self.module(self.x)

    def train(self, dy=None):
        """Forward + backward from dy into x and every weight; h_n gets no gradient.

        Gradients are set to None first, so each step allocates fresh ones (as fastlstm does)
        instead of accumulating.
        """
        self.x_train.grad = None
        for param in self.params:
            param.grad = None
        y, _ = self.module(self.x_train)
        y.backward(self.dy if dy is None else dy)
        return y


def make_runner(impl: str, cell: str, mode: str, p: Dict[str, np.ndarray],
                threads: Optional[int] = None) -> Callable[[], Any]:
    """One forward (``mode="forward"``) or forward+backward (``"train"``) of ``impl`` on ``p``.

    ``threads`` matters only for onnxruntime, whose thread count is fixed when its session is
    built (default: that of the enclosing :func:`thread_count`); the others follow
    :func:`thread_count` at call time.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if impl in FORWARD_ONLY and mode != "forward":
        raise ValueError(f"{impl} is an inference peer: mode must be 'forward', got {mode!r}")
    if impl == "onnxruntime":
        return OrtRNN(cell, p, threads).forward
    args = (p["x"],) + tuple(p[name] for name in WEIGHTS)
    dy = p["dy"]
    if impl == "torch":
        rnn = TorchRNN(cell, p)
        return rnn.forward if mode == "forward" else rnn.train
    if impl == "fastlstm":
        f = getattr(fastlstm, cell)
        if mode == "forward":
            return lambda: f(*args, training=False)
        return lambda: f(*args).backward(grad_output=dy)
    if impl == "numpy_ref":
        r = getattr(reference, cell)
        if mode == "forward":
            return lambda: r(*args)
        return lambda: r(*args).backward(grad_output=dy)
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


# ----------------------------------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------------------------------

# The counts of the thread_count() blocks being run, innermost last (for OrtRNN's default).
_THREADS: List[int] = []


def _blas_limits(n: int):
    """threadpoolctl's BLAS limit (a context manager), or None when threadpoolctl is missing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n, user_api="blas")


@contextmanager
def thread_count(n: int) -> Iterator[Dict[str, Any]]:
    """Run fastlstm, torch (if already imported) and NumPy's BLAS with ``n`` threads.

    Everything is restored on exit. Yields what was set, e.g. ``{"fastlstm": 2, "torch": 2,
    "blas": 2}``; ``"blas"`` is a note instead of a number when threadpoolctl is not installed.
    ONNX Runtime's count belongs to a session: runners built inside take ``n``
    (``"onnxruntime"`` is in the dict when it is installed).
    """
    old_fl = fastlstm.get_num_threads()
    torch = sys.modules.get("torch")
    old_torch = torch.get_num_threads() if torch is not None else None
    done: Dict[str, Any] = {}
    with ExitStack() as stack:
        _THREADS.append(n)
        stack.callback(_THREADS.pop)
        fastlstm.set_num_threads(n)
        stack.callback(fastlstm.set_num_threads, old_fl)
        done["fastlstm"] = fastlstm.get_num_threads()  # 1 when built without OpenMP
        if torch is not None:
            torch.set_num_threads(n)
            stack.callback(torch.set_num_threads, old_torch)
            done["torch"] = n
        blas = _blas_limits(n)
        if blas is None:
            done["blas"] = "not controlled (threadpoolctl not installed)"
        else:
            stack.enter_context(blas)
            done["blas"] = n
        if "onnxruntime" in sys.modules:
            done["onnxruntime"] = n  # intra_op_num_threads of the sessions built inside
        yield done


# ----------------------------------------------------------------------------------------------
# Correctness (checked once, outside any timed call)
# ----------------------------------------------------------------------------------------------

@dataclass
class Check:
    ok: bool
    max_err: float          # max |a - e| / max(1, max|e|) over every compared quantity
    worst: str              # the quantity with that error
    against: str

    def as_dict(self) -> Dict[str, Any]:
        return {"correct": self.ok, "max_err": self.max_err, "worst": self.worst,
                "checked_against": self.against}


def check_rows(B: int) -> List[int]:
    return sorted({int(r) for r in np.linspace(0, B - 1, min(B, CHECK_ROWS)).round()})


@functools.lru_cache(maxsize=None)
def _expected(cell: str, shape: str) -> Dict[str, np.ndarray]:
    """The float64 reference on the check rows: outputs, and gradients for dy on those rows."""
    p = problem(cell, shape)
    rows = check_rows(p["x"].shape[1])
    out = getattr(reference, cell)(p["x"][:, rows], *(p[n] for n in WEIGHTS))
    g = out.backward(grad_output=p["dy"][:, rows])
    e = {"output": out.output, "h_n": out.h_n, "grad_x": g.x, "grad_h0": g.h0}
    if cell == "lstm":
        e.update(c_n=out.c_n, grad_c0=g.c0)
    e.update({"grad_" + n: getattr(g, n) for n in WEIGHTS})
    return e


def _compare(actual: Dict[str, np.ndarray], expected: Dict[str, np.ndarray], against: str) -> Check:
    ok, max_err, worst = True, 0.0, ""
    for name, a in actual.items():
        e = expected[name]
        a = np.asarray(a, dtype=np.float64)
        scale = max(1.0, float(np.max(np.abs(e))))
        err = np.abs(a - e)
        if not np.all(np.isfinite(a)) or np.any(err > CHECK_TOL["atol"] * scale
                                                 + CHECK_TOL["rtol"] * np.abs(e)):
            ok = False
        rel = float(np.max(err)) / scale if np.all(np.isfinite(a)) else float("inf")
        if rel >= max_err:
            max_err, worst = rel, name
    return Check(ok, max_err, worst, against)


def check(impl: str, cell: str, shape: str, mode: str) -> Check:
    """Compare ``impl`` on the full problem with the float64 reference on a few batch rows.

    Forward: output, h_n (c_n) on the check rows. Train: the backward gets ``dy`` on the check
    rows and zero elsewhere, so every gradient, the weight gradients included, must equal the
    reference's for the problem restricted to those rows. Call inside ``thread_count``.
    """
    if impl == "numpy_ref":
        return Check(True, 0.0, "", "itself (the oracle)")
    p = problem(cell, shape)
    rows = check_rows(p["x"].shape[1])
    expected = _expected(cell, shape)
    args = (p["x"],) + tuple(p[n] for n in WEIGHTS)
    dy = np.zeros_like(p["dy"])
    dy[:, rows] = p["dy"][:, rows]
    against = f"float64 reference, batch rows {rows}"
    if impl == "fastlstm":
        f = getattr(fastlstm, cell)
        if mode == "forward":
            out = f(*args, training=False)
            actual = {"output": out.output[:, rows], "h_n": out.h_n[rows]}
            if cell == "lstm":
                actual["c_n"] = out.c_n[rows]
            return _compare(actual, expected, against)
        out = f(*args)
        g = out.backward(grad_output=dy)
        actual = {"output": out.output[:, rows], "grad_x": g.x[:, rows], "grad_h0": g.h0[rows]}
        if cell == "lstm":
            actual["grad_c0"] = g.c0[rows]
        actual.update({"grad_" + n: getattr(g, n) for n in WEIGHTS})
        return _compare(actual, expected, against)
    if impl == "torch":
        rnn = TorchRNN(cell, p)
        if mode == "forward":
            y, state = rnn.forward()
            h_n = state[0] if cell == "lstm" else state
            actual = {"output": y.numpy()[:, rows], "h_n": h_n[0].numpy()[rows]}
            if cell == "lstm":
                actual["c_n"] = state[1][0].numpy()[rows]
            return _compare(actual, expected, against)
        y = rnn.train(rnn.torch.from_numpy(dy))
        actual = {"output": y.detach().numpy()[:, rows],
                  "grad_x": rnn.x_train.grad.numpy()[:, rows]}
        actual.update({"grad_" + n: q.grad.numpy() for n, q in zip(WEIGHTS, rnn.params)})
        return _compare(actual, expected, against)
    if impl == "onnxruntime":
        if mode != "forward":
            raise ValueError(f"{impl} is an inference peer: mode must be 'forward', got {mode!r}")
        outs = OrtRNN(cell, p).forward()
        actual = {"output": outs[0][:, 0][:, rows], "h_n": outs[1][0][rows]}
        if cell == "lstm":
            actual["c_n"] = outs[2][0][rows]
        return _compare(actual, expected, against)
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


# ----------------------------------------------------------------------------------------------
# Machine and matmul peak
# ----------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> List[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in ("avx2", "fma", "avx512f", "avx512vl", "avx512_bf16")
                            if f in have]
    except OSError:
        pass
    return []


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(f"{i.get('internal_api')} {i.get('version')} "
                     f"({i.get('threading_layer')}, {i.get('architecture')})" for i in libs) or "none found"


def machine_info() -> Dict[str, Any]:
    """CPU, cores, load, and the versions of everything measured (torch is not imported)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count()
    torch = sys.modules.get("torch")
    return {
        "cpu": cpu_model(), "cpu_flags": _cpu_flags(), "cores": os.cpu_count(),
        "cores_available": available,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "fastlstm": fastlstm.__version__, "fastlstm_isa": fastlstm.isa(),
        "fastlstm_openmp": fastlstm.openmp_enabled(),
        "numpy": np.__version__, "blas": blas_info(),
        "torch": torch.__version__ if torch is not None else _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "python": platform.python_version(), "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def matmul_peak(threads: int, n: int = 2048, repeats: int = 5) -> Dict[str, Any]:
    """NumPy float32 ``(n, n) @ (n, n)`` GFLOP/s at ``threads`` BLAS threads (best of repeats).

    The "% of peak" columns divide by this: what the machine's BLAS reaches on a large
    square matmul, not a theoretical FMA count.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    with thread_count(threads) as set_to:
        np.matmul(a, b, out=out)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - t0)
    return {"threads": threads, "n": n, "repeats": repeats, "seconds": best,
            "gflops": 2.0 * n ** 3 / best / 1e9, "blas_threads": set_to["blas"]}


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------

def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False) -> str:
    """Rows as a Markdown table, or as plain text with aligned columns."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |",
                 "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells[1:]])
