from dataclasses import replace

import pandas as pd
import pytest
import torch

from flowrestore.training import loop as train_module
from flowrestore.models.checkpoint import load_checkpoint, load_model
from flowrestore.errors import InputError
from flowrestore.methods import get_method
from flowrestore.training.loop import TrainingDiverged, lr_factor, train_model

from fixtures import TINY_NET, make_acquisitions

FAST = dict(steps=6, batch_size=4, patch_size=32, val_every=3, checkpoint_every=3, val_batches=1, warmup=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_acquisitions(tmp_path_factory.mktemp("data"), n=3)


def _weights(path):
    return load_checkpoint(path)["ema"]


def _references_only(acquisitions):
    """The acquisitions without their input role: what a user with noisy references alone has."""
    return [replace(a, input_path=None) for a in acquisitions]


@pytest.mark.parametrize("method", ["guided_cfm", "regression", "relative_flow", "reference_regression", "flow_prior"])
def test_training_writes_checkpoint_metrics_and_curve(tmp_path, data, method):
    if get_method(method).data == "targets":
        data = _references_only(data)
    train_model("m", method, TINY_NET, FAST, data[:2], data[2:], tmp_path)
    assert (tmp_path / "loss.png").stat().st_size > 1000
    metrics = pd.read_csv(tmp_path / "metrics.tsv", sep="\t")
    assert list(metrics["step"]) == [3, 6]
    assert metrics["val_loss"].notna().all()
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 6 and "optimizer" not in ckpt  # the final checkpoint carries weights, not state
    m, net, identity = load_model(tmp_path / "checkpoint.pt")
    assert identity["method"] == method and not net.training


def test_loss_decreases(tmp_path, data):
    untrained = FAST | dict(steps=1, val_every=1, checkpoint_every=1, lr=1e-12)
    train_model("m", "regression", TINY_NET, untrained, data[:2], data[2:], tmp_path / "untrained")
    trained = FAST | dict(steps=40, val_every=40, checkpoint_every=40, lr=3e-3)
    train_model("m", "regression", TINY_NET, trained, data[:2], data[2:], tmp_path / "trained")
    before, after = (pd.read_csv(tmp_path / d / "metrics.tsv", sep="\t")["val_loss"].iloc[-1] for d in ("untrained", "trained"))
    assert after < 0.5 * before


# relative_flow: references only, and a curriculum that widens at every step (3 epochs over the 6 steps)
RESUMED = {"guided_cfm": {}, "relative_flow": {"epochs": 3, "widen_until": 1.0}}


@pytest.mark.parametrize("method", sorted(RESUMED))
def test_interrupted_training_resumes_to_the_same_weights(tmp_path, data, monkeypatch, method):
    options = RESUMED[method]
    if get_method(method).data == "targets":
        data = _references_only(data)
    train_model("m", method, TINY_NET, FAST, data[:2], data[2:], tmp_path / "straight", method_options=options)

    calls = {"n": 0}
    real_clip = torch.nn.utils.clip_grad_norm_

    def crash_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated kill")
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_model("m", method, TINY_NET, FAST, data[:2], data[2:], tmp_path / "resumed", method_options=options)
    assert load_checkpoint(tmp_path / "resumed" / "work" / "last.pt")["step"] == 3
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
    train_model("m", method, TINY_NET, FAST, data[:2], data[2:], tmp_path / "resumed", method_options=options)

    a, b = _weights(tmp_path / "straight" / "checkpoint.pt"), _weights(tmp_path / "resumed" / "checkpoint.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = pd.read_csv(tmp_path / "resumed" / "metrics.tsv", sep="\t")["step"].tolist()
    assert steps == [3, 6]


def test_changed_config_starts_afresh(tmp_path, data):
    train_model("m", "regression", TINY_NET, FAST, data[:2], data[2:], tmp_path)
    train_model("m", "regression", TINY_NET, FAST | {"lr": 1e-4, "steps": 3}, data[:2], data[2:], tmp_path)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3


def test_diverging_training_stops_and_keeps_last_good_state(tmp_path, data, monkeypatch):
    method_loss = train_module.get_method("guided_cfm").__class__.loss
    calls = {"n": 0}

    def nan_at_step_5(self, *args, **kwargs):
        calls["n"] += 1
        loss = method_loss(self, *args, **kwargs)
        return loss * float("nan") if calls["n"] >= 5 and torch.is_grad_enabled() else loss

    monkeypatch.setattr(train_module.get_method("guided_cfm").__class__, "loss", nan_at_step_5)
    with pytest.raises(TrainingDiverged, match="lower train.lr"):
        train_model("m", "guided_cfm", TINY_NET, FAST, data[:2], data[2:], tmp_path)
    assert load_checkpoint(tmp_path / "work" / "last.pt")["step"] == 3
    assert not (tmp_path / "checkpoint.pt").exists()


def test_patch_larger_than_image_is_refused(tmp_path, data):
    with pytest.raises(InputError, match="smaller than the patch size"):
        train_model("m", "regression", TINY_NET, FAST | {"patch_size": 128}, data[:2], data[2:], tmp_path)


def test_patch_not_multiple_of_downsampling_is_refused(tmp_path, data):
    with pytest.raises(InputError, match="multiple of 2"):
        train_model("m", "regression", TINY_NET, FAST | {"patch_size": 33}, data[:2], data[2:], tmp_path)


def test_learning_rate_schedule():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5, abs=0.02)
    assert lr_factor(100, 10, 100) == pytest.approx(0.0, abs=1e-9)


def test_budget_steps_spends_the_rest_of_the_budget_at_the_probed_rate():
    # 20 steps took 6 s: 0.3 s a step; 54 s of a 1-minute budget remain, 180 more steps
    assert train_module.budget_steps(1.0, 20, 6.0, 20, 10_000) == 200
    assert train_module.budget_steps(1.0, 20, 6.0, 20, 150) == 150  # train.steps caps it
    assert train_module.budget_steps(0.05, 20, 6.0, 20, 10_000) == 20  # the probe overran the budget


def _fake_clock(monkeypatch, seconds_per_call):
    calls = {"n": 0}

    def clock():
        calls["n"] += 1
        return seconds_per_call * (calls["n"] - 1)

    monkeypatch.setattr(train_module, "_clock", clock)


def test_minutes_budget_trains_the_steps_it_allows_and_resumes_exactly(tmp_path, data, monkeypatch):
    # The probe of 2 steps (inside the warm-up, so its learning rates do not depend on the total) takes
    # 10 s on the fake clock: 5 s a step, 20 s left of 0.5 minutes, 4 more steps: 6 steps in all, which
    # must give the weights of train.steps = 6 bit for bit, straight or interrupted and resumed.
    budget = FAST | {"steps": 100, "minutes": 0.5, "probe_steps": 2}
    train_model("m", "regression", TINY_NET, FAST, data[:2], data[2:], tmp_path / "steps")
    _fake_clock(monkeypatch, 10.0)
    train_model("m", "regression", TINY_NET, budget, data[:2], data[2:], tmp_path / "minutes")
    assert load_checkpoint(tmp_path / "minutes" / "checkpoint.pt")["step"] == 6
    assert pd.read_csv(tmp_path / "minutes" / "metrics.tsv", sep="\t")["step"].tolist() == [3, 6]

    real_clip, calls = torch.nn.utils.clip_grad_norm_, {"n": 0}

    def crash_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated kill")
        return real_clip(*args, **kwargs)

    _fake_clock(monkeypatch, 10.0)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_model("m", "regression", TINY_NET, budget, data[:2], data[2:], tmp_path / "resumed")
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
    _fake_clock(monkeypatch, 1000.0)  # a slower machine on resume: the recorded total holds
    train_model("m", "regression", TINY_NET, budget, data[:2], data[2:], tmp_path / "resumed")
    for run in ("minutes", "resumed"):
        a, b = _weights(tmp_path / "steps" / "checkpoint.pt"), _weights(tmp_path / run / "checkpoint.pt")
        assert all(torch.equal(a[k], b[k]) for k in a), run
