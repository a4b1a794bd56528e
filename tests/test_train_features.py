"""The trainer's model options: --steps, --no-normalize, --input-proj, the TF1 GRU, dropout
(and its resume), and checkpoints of models that use the features."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastlstm.__main__ import main
from fastlstm.model import CheckpointError, load, load_with_state, parameter_shapes, save
from fastlstm.train import TrainConfig, build_model, fit, planned_steps

from test_resume import _Killed, _same_arrays, _synthetic, _without_timing
from test_train_smoke import MNIST_DIR, needs_mnist


def test_steps_budget_cuts_the_last_epoch(num_threads):
    num_threads(1)
    data = _synthetic()                      # 192 images, batch 20: 10 steps an epoch
    config = TrainConfig(cell="gru", hidden=6, batch_size=20, steps=23, epochs=99, seed=1,
                         eval_batch_size=64)
    assert planned_steps(config, 192) == (3, 23)
    states = []
    model = build_model(config, input_size=5, num_classes=3)
    hist = fit(model, data, config, progress=False, on_checkpoint=states.append)
    assert [e["steps"] for e in hist["epochs"]] == [10, 20, 23]
    assert [s["final"] for s in states] == [False, False, True]
    assert states[-1]["resume"]["optimizer"]["step_count"] == 23


def test_no_normalize_feeds_pixels_in_0_1_and_is_recorded(tmp_path, num_threads):
    num_threads(1)
    data = _synthetic()
    seen = []
    config = TrainConfig(hidden=4, epochs=1, batch_size=64, normalize=False, eval_batch_size=64)
    model = build_model(config, input_size=5, num_classes=3)
    forward = model.forward
    model.forward = lambda x, **kw: (seen.append(np.array(x)), forward(x, **kw))[1]
    fit(model, data, config, progress=False)
    assert model.metadata["normalize"] == {"mean": 0.0, "std": 1.0}
    train_inputs = np.concatenate([s.reshape(-1) for s in seen[:3]])
    assert train_inputs.min() >= 0 and train_inputs.max() <= 1 and train_inputs.max() > 0.9
    path = tmp_path / "m.npz"
    save(model, path)
    assert load(path).metadata["normalize"] == {"mean": 0.0, "std": 1.0}


FEATURE_CONFIGS = [
    dict(input_proj=7), dict(cell="gru", linear_before_reset=False, gate_bias=1.0, input_proj=3),
    dict(dropout=0.2, layers=2, bidirectional=True),
    dict(proj_size=3, layer_norm=True, recurrent_dropout=0.2, layers=2, bidirectional=True),
    dict(cell="gru", layer_norm=True, recurrent_dropout=0.3, dropout=0.1, layers=2)]


@pytest.mark.parametrize("kw", FEATURE_CONFIGS)
def test_feature_models_round_trip_through_checkpoints(tmp_path, kw):
    config = TrainConfig(hidden=5, **kw)
    model = build_model(config, input_size=5, num_classes=3)
    shapes = {k: v.shape for k, v in model.parameters().items()}
    assert shapes == parameter_shapes(model.config())
    path = tmp_path / "m.npz"
    save(model, path)
    back = load(path)
    assert back.config() == model.config()
    _same_arrays(model.parameters(), back.parameters())
    x = np.random.default_rng(0).standard_normal((4, 6, 5)).astype(np.float32)
    np.testing.assert_array_equal(back.forward(x, training=False),
                                  model.forward(x, training=False))


@pytest.mark.parametrize("kw", FEATURE_CONFIGS)
def test_every_feature_trains_and_its_gradients_are_exact(kw):
    """A few steps of training lower the loss; the classifier's gradient (through the input
    projection, the features' kernels and the projection into fc) matches finite differences
    for the masks drawn (the model's generator rewound before each evaluation)."""
    from fastlstm.loss import softmax_cross_entropy
    data = _synthetic()
    config = TrainConfig(hidden=5, epochs=3, batch_size=32, dtype="float64", seed=2,
                         eval_batch_size=64, **kw)
    model = build_model(config, input_size=5, num_classes=3)
    hist = fit(model, data, config, progress=False)
    assert hist["epochs"][-1]["train_loss"] < hist["epochs"][0]["train_loss"]
    x = np.random.default_rng(1).standard_normal((4, 6, 5))
    y = np.array([0, 1, 2, 1])
    gen = model.rnn._rng.bit_generator
    state = gen.state

    def loss():
        gen.state = state
        return softmax_cross_entropy(model.forward(x), y)[0]

    gen.state = state
    model.zero_grad()
    _, g = softmax_cross_entropy(model.forward(x), y)
    model.backward(g)
    grads = {k: v.copy() for k, v in model.grads.items()}
    rng = np.random.default_rng(3)
    for name, p in model.parameters().items():
        idx = tuple(rng.integers(0, n) for n in p.shape)
        old = p[idx]
        p[idx] = old + 1e-6
        lp = loss()
        p[idx] = old - 1e-6
        lm = loss()
        p[idx] = old
        assert grads[name][idx] == pytest.approx((lp - lm) / 2e-6, rel=1e-5, abs=1e-8), name


def test_a_config_with_a_refused_combination_is_a_checkpoint_error(tmp_path):
    model = build_model(TrainConfig(hidden=4, cell="gru"), input_size=5, num_classes=3)
    path = tmp_path / "m.npz"
    save(model, path)
    import zipfile
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    header = json.loads(np.load(path)["__fastlstm__"].item())
    header["config"]["proj_size"] = 3
    import io
    buf = io.BytesIO()
    np.save(buf, np.array(json.dumps(header)))
    members["__fastlstm__.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(CheckpointError, match=r"proj_size \(--proj-size\) applies to the LSTM"):
        load(path)


def test_dropout_run_resumes_bitwise(tmp_path, num_threads):
    """The masks come from the model's own generator; the training state carries it."""
    num_threads(1)
    data = _synthetic()
    config = TrainConfig(hidden=6, layers=2, dropout=0.3, epochs=3, batch_size=20, seed=4,
                         steps=25, eval_batch_size=64)
    full_model = build_model(config, input_size=5, num_classes=3)
    full = fit(full_model, data, config, progress=False)
    model = build_model(config, input_size=5, num_classes=3)
    path = tmp_path / "run.npz"

    def checkpoint(state):
        model.metadata["resume"] = state["resume"]
        save(model, path, optimizer_state=state["optimizer"])
        if state["resume"]["epoch"] == 2:
            raise _Killed

    with pytest.raises(_Killed):
        fit(model, data, config, progress=False, on_checkpoint=checkpoint)
    resumed_model, slots = load_with_state(path)
    state = resumed_model.metadata["resume"]
    assert "model_rng" in state
    resumed = fit(resumed_model, data, config, progress=False,
                  resume={"resume": state, "optimizer": slots})
    _same_arrays(full_model.parameters(), resumed_model.parameters())
    assert _without_timing(full) == _without_timing(resumed)
    del state["model_rng"]
    with pytest.raises(CheckpointError, match="model_rng"):
        fit(build_model(config, input_size=5, num_classes=3), data, config, progress=False,
            resume={"resume": state, "optimizer": slots})


@needs_mnist
def test_cli_tf1_gru_with_the_tutorial_options(tmp_path, capsys):
    path = tmp_path / "tf1.npz"
    rc = main(["train", "--cell", "gru-tf1", "--hidden", "16", "--input-proj", "12",
               "--no-normalize", "--steps", "15", "--batch-size", "50", "--limit", "500",
               "--test-limit", "100", "--data", str(MNIST_DIR), "--save", str(path),
               "--quiet", "--json", str(tmp_path / "h.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "15 steps" in out
    model = load(path)
    cfg = model.config()
    assert cfg["cell"] == "gru" and cfg["linear_before_reset"] is False
    assert cfg["input_proj"] == 12
    assert model.metadata["normalize"] == {"mean": 0.0, "std": 1.0}
    hist = json.loads((tmp_path / "h.json").read_text())
    assert [e["steps"] for e in hist["epochs"]] == [10, 15]
    assert hist["config"]["gate_bias"] == 1.0


@pytest.mark.parametrize("args, message", [
    (["--cell", "gru", "--proj-size", "4"], "proj_size (--proj-size) applies to the LSTM"),
    (["--cell", "gru-tf1", "--layer-norm"], "not available for the GRU with "),
    (["--cell", "lstm", "--gate-bias", "1"], "gate_bias (--gate-bias) applies to the GRU"),
    (["--cell", "gru", "--forget-bias", "1"], "forget_bias (--forget-bias) applies to the LSTM"),
    (["--cell", "gru", "--gate-bias", "nan"], "gate_bias must be a finite number"),
    (["--forget-bias", "inf"], "forget_bias must be a finite number"),
    (["--dropout", "0.3"], "dropout acts between stacked layers")])
def test_cli_refuses_a_feature_combination_in_one_line(args, message, capsys):
    assert main(["train", *args, "--data", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("field, value", [("gate_bias", float("nan")), ("gate_bias", "x"),
                                          ("input_proj", 2.5), ("steps", 2.5),
                                          ("layer_norm", "yes"), ("proj_size", -1),
                                          ("normalize", 1)])
def test_a_tampered_training_state_is_a_checkpoint_error(field, value):
    from fastlstm.train import check_resume_state
    states = []
    config = TrainConfig(hidden=4, epochs=1, batch_size=64)
    fit(build_model(config, input_size=5, num_classes=3), _synthetic(), config,
        progress=False, on_checkpoint=states.append)
    state = json.loads(json.dumps(states[0]["resume"]))
    check_resume_state(state)
    state["config"][field] = value
    with pytest.raises(CheckpointError, match=field):
        check_resume_state(state)


def test_dropout_is_refused_with_mpi_and_warned_about_with_one_layer():
    class OneRankComm:  # stands for an mpi4py communicator; the check comes first
        def Get_size(self):
            return 2

        def Get_rank(self):
            return 0

    from fastlstm.train import TrainingError
    config = TrainConfig(hidden=4, layers=2, epochs=1, dropout=0.2)
    with pytest.raises(TrainingError, match="not supported with --distributed"):
        fit(build_model(config, input_size=5, num_classes=3), _synthetic(), config,
            progress=False, comm=OneRankComm())
    from fastlstm import LSTM
    with pytest.warns(UserWarning, match="num_layers=1"):
        LSTM(3, 4, dropout=0.5)
