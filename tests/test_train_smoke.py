"""End to end: a short MNIST training run must beat a stated accuracy; same seed, same numbers
for any thread count; the CLI trains, saves, evaluates and fails cleanly on bad input."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from testkit import child_env, mnist_dir

from fastlstm.__main__ import main
from fastlstm.model import load
from fastlstm.train import Progress, TrainConfig, build_model, fit

# 4000 training images x 3 epochs at batch 32 (375 steps) reach ~91% on the first 2000 test
# images with either cell (measured with the defaults otherwise); 85% leaves room for seeds.
SMOKE = dict(limit=4000, epochs=3, batch_size=32, test_limit=2000)
SMOKE_MIN_ACCURACY = 0.85


MNIST_DIR = mnist_dir()
needs_mnist = pytest.mark.skipif(MNIST_DIR is None,
                                 reason="MNIST not found: set FASTLSTM_DATA to its folder")


@pytest.fixture(scope="module")
def mnist():
    from fastlstm.data import load_mnist

    return load_mnist(MNIST_DIR)


@needs_mnist
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_short_training_run_beats_stated_accuracy(cell, mnist):
    config = TrainConfig(cell=cell, **SMOKE)
    history = fit(build_model(config), mnist, config, progress=False)
    losses = [e["train_loss"] for e in history["epochs"]]
    print(cell, [round(e["test_accuracy"], 4) for e in history["epochs"]], losses)
    assert all(a > b for a, b in zip(losses, losses[1:])), losses
    assert history["final_test_accuracy"] >= SMOKE_MIN_ACCURACY
    assert history["test_images"] == SMOKE["test_limit"]


@needs_mnist
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_same_seed_same_numbers_for_any_thread_count(cell, mnist, num_threads):
    config = TrainConfig(cell=cell, limit=320, epochs=2, batch_size=64, test_limit=300, seed=5)
    runs = []
    for threads in (1, 2):
        num_threads(threads)
        model = build_model(config)
        h = fit(model, mnist, config, progress=False)
        runs.append(([(e["train_loss"], e["test_loss"], e["test_accuracy"]) for e in h["epochs"]],
                     model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for k, v in runs[0][1].items():
        np.testing.assert_array_equal(v, runs[1][1][k], err_msg=k)
    other = TrainConfig(cell=cell, limit=320, epochs=1, batch_size=64, test_limit=300, seed=6)
    h = fit(build_model(other), mnist, other, progress=False)
    assert h["epochs"][0]["train_loss"] != runs[0][0][0][0]


def test_fit_on_synthetic_sequences_learns_and_reports():
    """No MNIST needed: the class is the row holding the brightest pixels."""
    rng = np.random.default_rng(0)

    def make(n):
        labels = rng.integers(0, 4, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 8, 6)).astype(np.uint8)
        images[np.arange(n), 2 * labels] = 255
        return images, labels

    (xi, yi), (xt, yt) = make(512), make(200)
    data = SimpleNamespace(train_images=xi, train_labels=yi, test_images=xt, test_labels=yt)
    config = TrainConfig(cell="gru", hidden=16, epochs=4, batch_size=32, lr=1e-2, warmup=0.25)
    seen = []
    history = fit(build_model(config, input_size=6, num_classes=4), data, config,
                  progress=False, on_epoch=seen.append)
    assert seen == history["epochs"] and len(seen) == 4
    assert set(seen[0]) >= {"epoch", "train_loss", "test_accuracy", "seconds",
                            "images_per_second"}
    assert history["final_test_accuracy"] > 0.9
    json.dumps(history)   # serialisable as is


def test_progress_bar_only_on_a_terminal():
    class TTY(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = TTY(), io.StringIO()
    for stream in (tty, pipe):
        bar = Progress(10, "epoch 1/1", stream=stream)
        bar.update(10, 1280, 0.5)
        bar.close()
    assert "10/10" in tty.getvalue() and "loss 0.5000" in tty.getvalue()
    assert pipe.getvalue() == ""
    quiet = TTY()
    Progress(10, "x", enabled=False, stream=quiet).update(10, 1, 0.1)
    assert quiet.getvalue() == ""


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fastlstm", *args], cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=300)


@needs_mnist
def test_cli_train_save_evaluate(tmp_path):
    ckpt, train_json, eval_json = tmp_path / "m.npz", tmp_path / "t.json", tmp_path / "e.json"
    r = _cli("train", "--cell", "gru", "--hidden", "32", "--limit", "256", "--epochs", "2",
             "--batch-size", "64", "--test-limit", "300", "--threads", "1", "--data",
             str(MNIST_DIR), "--save", str(ckpt), "--json", str(train_json), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""                       # no progress bar when stderr is not a TTY
    lines = [line for line in r.stdout.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and "test acc" in lines[0] and "img/s" in lines[0]
    t = json.loads(train_json.read_text())
    assert t["cell"] == "gru" and t["hidden"] == 32 and len(t["epochs"]) == 2
    assert [e["epoch"] for e in t["epochs"]] == [1, 2]
    for key in ("train_loss", "test_accuracy", "seconds"):
        assert all(math.isfinite(e[key]) for e in t["epochs"])
    assert t["final_test_accuracy"] == t["epochs"][-1]["test_accuracy"]

    r = _cli("evaluate", "--load", str(ckpt), "--data", str(MNIST_DIR), "--test-limit", "300",
             "--json", str(eval_json), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    e = json.loads(eval_json.read_text())
    assert e["test_accuracy"] == t["final_test_accuracy"]
    assert f"{100 * e['test_accuracy']:.2f}%" in r.stdout
    model = load(ckpt)
    assert model.config()["cell"] == "gru" and model.config()["hidden_size"] == 32
    assert model.metadata["train"]["final_test_accuracy"] == t["final_test_accuracy"]


def test_cli_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastlstm: error: ") and err.count("\n") == 1 and "nowhere" in err

    bad = tmp_path / "bad.npz"
    bad.write_text("not a checkpoint")
    assert main(["evaluate", "--load", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err == f"fastlstm: error: {bad}: not a fastlstm checkpoint (not an .npz file)\n"

    assert main(["evaluate", "--load", str(tmp_path / "missing.npz")]) == 1
    assert "missing.npz: No such file or directory" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "0"])
    assert exc.value.code == 2
    assert "--epochs" in capsys.readouterr().err


def test_cli_data_error_via_subprocess(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"")
    r = _cli("train", "--data", str(tmp_path), "--quiet", cwd=tmp_path)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("fastlstm: error: ") and r.stderr.count("\n") == 1
