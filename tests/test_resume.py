"""--resume: a run killed mid-epoch and resumed ends bitwise identical to an uninterrupted one;
--save / --json are proven writable before training; resume refuses other settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from testkit import child_env

from fastlstm import model as model_mod
from fastlstm.__main__ import main
from fastlstm.model import CheckpointError, load_with_state, read_header, save
from fastlstm.train import TrainConfig, build_model, fit

from test_train_smoke import MNIST_DIR, needs_mnist

TIMING = {"seconds", "train_seconds", "images_per_second", "total_seconds", "threads"}




def _without_timing(history):
    out = {k: v for k, v in history.items() if k not in TIMING}
    out["epochs"] = [{k: v for k, v in e.items() if k not in TIMING} for e in history["epochs"]]
    return out


def _same_arrays(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def _synthetic(n=192, n_test=64, seed=0):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        train_images=rng.integers(0, 256, (n, 6, 5), dtype=np.uint8),
        train_labels=rng.integers(0, 3, n), test_images=rng.integers(0, 256, (n_test, 6, 5),
                                                                     dtype=np.uint8),
        test_labels=rng.integers(0, 3, n_test))


class _Killed(Exception):
    pass


@pytest.mark.parametrize("optimizer,extra", [("adam", {"weight_decay": 1e-3}),
                                             ("sgd", {"momentum": 0.9}),
                                             ("sgd", {"momentum": 0.0, "schedule": "constant"})])
def test_fit_resumed_after_an_interruption_is_bitwise_identical(tmp_path, num_threads,
                                                                optimizer, extra):
    num_threads(1)
    data = _synthetic()
    config = TrainConfig(cell="gru", hidden=6, epochs=4, batch_size=20, optimizer=optimizer,
                         warmup=1.5, seed=5, eval_batch_size=50, **extra)
    full_model = build_model(config, input_size=5, num_classes=3)
    full = fit(full_model, data, config, progress=False)

    path = tmp_path / "run.npz"
    model = build_model(config, input_size=5, num_classes=3)

    def checkpoint(state):
        model.metadata["resume"] = state["resume"]
        save(model, path, optimizer_state=state["optimizer"])
        if state["resume"]["epoch"] == 2:
            raise _Killed

    with pytest.raises(_Killed):
        fit(model, data, config, progress=False, on_checkpoint=checkpoint)
    resumed_model, slots = load_with_state(path)
    state = resumed_model.metadata["resume"]
    assert state["epoch"] == 2 and json.loads(json.dumps(state)) == state
    resumed = fit(resumed_model, data, config, progress=False,
                  resume={"resume": state, "optimizer": slots})
    _same_arrays(full_model.parameters(), resumed_model.parameters())
    assert _without_timing(full) == _without_timing(resumed)


def test_fit_refuses_a_state_written_with_other_settings():
    data = _synthetic()
    config = TrainConfig(hidden=4, epochs=2, batch_size=64)
    states = []
    model = build_model(config, input_size=5, num_classes=3)
    fit(model, data, config, progress=False, on_checkpoint=states.append)
    other = TrainConfig(hidden=4, epochs=2, batch_size=32)
    with pytest.raises(CheckpointError, match=r"batch_size=64 \(now 32\)"):
        fit(model, data, other, progress=False, resume=states[0])


# -- the CLI --------------------------------------------------------------------------------------

COMMON = ["--cell", "lstm", "--hidden", "32", "--limit", "1000", "--batch-size", "10",
          "--epochs", "4", "--test-limit", "200", "--quiet"]


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "fastlstm", *args], capture_output=True,
                          text=True, timeout=300, env=child_env(), cwd="/", **kw)


def _epoch_of(path):
    try:
        return read_header(path)["metadata"]["resume"]["epoch"]
    except (FileNotFoundError, CheckpointError):
        return 0


@needs_mnist
def test_killed_run_resumes_bitwise_identical(tmp_path):
    data = ["--data", str(MNIST_DIR)]
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    r = _cli("train", *COMMON, *data, "--threads", "1", "--save", str(a), "--json",
             str(tmp_path / "a.json"))
    assert r.returncode == 0, r.stderr

    p = subprocess.Popen([sys.executable, "-m", "fastlstm", "train", *COMMON, *data,
                          "--threads", "1", "--save", str(b)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
                         cwd="/")
    try:
        deadline = time.monotonic() + 240
        while _epoch_of(b) < 2 and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL)           # a real kill, during epoch 3
    finally:
        p.wait()
    assert p.returncode == -signal.SIGKILL
    killed_at = _epoch_of(b)
    print("killed after the epoch-%d checkpoint" % killed_at)
    assert 2 <= killed_at < 4

    r = _cli("train", "--resume", str(b), *data, "--threads", "2", "--quiet", "--json",
             str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    assert f"resuming {b} after epoch {killed_at}/4" in r.stdout
    ma, sa = load_with_state(a)
    mb, sb = load_with_state(b)
    _same_arrays(ma.parameters(), mb.parameters())
    assert sorted(sa) == sorted(sb) == ["m", "v"]
    for slot in sa:
        _same_arrays(sa[slot], sb[slot])
    ra, rb = ma.metadata["resume"], mb.metadata["resume"]
    assert ra["rng"] == rb["rng"] and ra["optimizer"] == rb["optimizer"] and ra["epoch"] == 4
    ja = json.loads((tmp_path / "a.json").read_text())
    jb = json.loads((tmp_path / "b.json").read_text())
    ja.pop("checkpoint"), jb.pop("checkpoint")
    assert _without_timing(ja) == _without_timing(jb)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporaries left

    # Other settings are refused, naming them and what the checkpoint decides.
    r = _cli("train", "--resume", str(b), *data, "--hidden", "64", "--cell", "gru")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "--cell gru (checkpoint: lstm), --hidden 64 (checkpoint: 32)" in r.stderr
    assert "takes --cell, --hidden" in r.stderr
    # The same values as the checkpoint are fine; a finished run has nothing left to do.
    r = _cli("train", "--resume", str(b), *data, "--hidden", "32", "--quiet")
    assert r.returncode == 0 and "already complete" in r.stdout, r.stderr


def test_resume_errors_are_one_line(tmp_path, capsys):
    m = build_model(TrainConfig(hidden=4), input_size=28)
    plain = tmp_path / "plain.npz"
    save(m, plain)
    assert main(["train", "--resume", str(plain)]) == 1
    err = capsys.readouterr().err
    assert "has no training state" in err and err.count("\n") == 1
    m.metadata["resume"] = {"format": 1, "config": {"hidden": "x"}}
    save(m, tmp_path / "bad.npz")
    assert main(["train", "--resume", str(tmp_path / "bad.npz")]) == 1
    err = capsys.readouterr().err
    assert "invalid training state" in err and err.count("\n") == 1
    assert main(["train", "--checkpoint-every", "2"]) == 2
    assert "--checkpoint-every needs --save" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing-folder", "a-folder", "unwritable", "json"])
def test_outputs_are_proven_writable_before_training(tmp_path, capsys, monkeypatch, case):
    # --data points nowhere: reaching the data (or training) would give a different error.
    args = ["train", "--data", str(tmp_path / "no-data"), "--quiet"]
    if case == "missing-folder":
        args += ["--save", str(tmp_path / "missing" / "m.npz")]
        expect = "no such folder for the checkpoint"
    elif case == "a-folder":
        args += ["--save", str(tmp_path)]
        expect = "the checkpoint path is a folder"
    elif case == "unwritable":
        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(model_mod.tempfile, "mkstemp", refuse)
        args += ["--save", str(tmp_path / "m.npz")]
        expect = f"cannot create files in {tmp_path} for the checkpoint (Permission denied)"
    else:
        args += ["--json", str(tmp_path / "j.json" / "x")]
        expect = "no such folder for the --json file"
    assert main(args) == 1
    out = capsys.readouterr()
    assert "epoch" not in out.out
    assert out.err.startswith("fastlstm: error: ") and expect in out.err, out.err
    assert out.err.count("\n") == 1
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_unwritable_folder_for_real(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    assert main(["train", "--save", str(ro / "m.npz"), "--data", str(tmp_path)]) == 1
    assert "cannot create files" in capsys.readouterr().err
