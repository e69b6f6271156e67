"""The method interface: one contract test over every registered method, the schema's method list,
settings that refuse unknown keys, and an output grid finer than the input's."""

import inspect

import numpy as np
import pytest
import torch

from flowrestore.analysis import calibration, evaluate
from flowrestore.config import defaults, schema, settings
from flowrestore.data.io import open_image, write_ome_zarr
from flowrestore.data.pairing import check_pair
from flowrestore.errors import InputError
from flowrestore.inference import solvers
from flowrestore.inference.engine import Restorer
from flowrestore.inference.predict import predict, prepare, read_prediction
from flowrestore.inference.sampling import SamplingConfig
from flowrestore.inference.tiling import make_plan
from flowrestore.methods import METHODS, Method, get_method
from flowrestore.models.checkpoint import load_model, save_checkpoint
from flowrestore.models.nets import NetConfig, UNet
from flowrestore.physics import AreaDownsample
from flowrestore.training.loop import TRAIN_DEFAULTS


def _net(method: Method, dims: int = 2) -> UNet:
    torch.manual_seed(0)
    return UNet(NetConfig(dims=dims, in_channels=method.in_channels(1), channels=8, multipliers=[1, 2],
                          norm=method.net_norm, time=method.time_input))


def _restore(method, net, seed: int, y: torch.Tensor) -> torch.Tensor:
    plan = make_plan(tuple(y.shape), (16, 16), (4, 4), (32, 32), (32, 32), 2)
    block = plan.blocks()[0]
    restorer = Restorer(method, net, SamplingConfig(samples=2, nfe=2, seed=seed, keep_samples=1), torch.device("cpu"))
    return restorer.restore(y, block, plan).mean


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_contract(name, tmp_path):
    method = get_method(name)
    net = _net(method)
    g = torch.Generator().manual_seed(1)
    target, degraded = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    loss = method.loss(net, target, degraded, generator=torch.Generator().manual_seed(2))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)

    x, t = torch.rand(2, 1, 16, 16, generator=g), torch.tensor([0.3, 0.7])
    with torch.no_grad():
        assert method.velocity(net, t, x, degraded).shape == x.shape

    y = torch.rand(32, 32, generator=g)
    with torch.no_grad():
        a, b, a2 = _restore(method, net, 0, y), _restore(method, net, 1, y), _restore(method, net, 0, y)
    assert torch.equal(a, a2)  # same seed, same bytes
    assert (not torch.equal(a, b)) == method.stochastic  # other seed: another sample only when stochastic

    identity = {"name": "m", **method.identity(), "grid_factor": list(method.grid_factor(2)), "net": net.config.to_dict()}
    save_checkpoint(tmp_path / "m.pt", {"identity": identity, "ema": net.state_dict(), "method_state": method.state_dict()})
    loaded, loaded_net, _ = load_model(tmp_path / "m.pt")
    assert type(loaded) is type(method) and loaded.options == method.options
    for key, value in method.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    for key, value in net.state_dict().items():
        assert torch.equal(loaded_net.state_dict()[key], value)
    with torch.no_grad():  # (the engine made `net` channels-last: same weights, other rounding)
        torch.testing.assert_close(loaded.velocity(loaded_net, t, x, degraded), method.velocity(net.eval(), t, x, degraded))


def test_schema_lists_exactly_the_registered_methods():
    model = schema()["properties"]["models"]["additionalProperties"]["properties"]["method"]
    assert sorted(model["enum"]) == sorted(METHODS) == sorted(schema()["$defs"]["methods"])


def test_method_options_refuse_an_unknown_key_by_name():
    with pytest.raises(InputError, match="time_distrib'.*did you mean 'time_distribution'"):
        get_method("guided_cfm", {"time_distrib": "uniform"})
    with pytest.raises(InputError, match="regression takes no settings"):
        get_method("regression", {"steps": 3})
    assert get_method("guided_cfm", {"time_distribution": "logit_normal"}).options["time_distribution"] == "logit_normal"


def test_logit_normal_times_follow_their_law():
    method = get_method("guided_cfm", {"time_distribution": "logit_normal"})
    t = method.draw_t(200_000, torch.Generator().manual_seed(0), "cpu", torch.float64)
    z = torch.logit(t)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01


def test_library_defaults_are_the_schemas():
    assert TRAIN_DEFAULTS == defaults("train")
    sampling = SamplingConfig()
    predict_defaults = defaults("predict")
    for field in sampling.__dataclass_fields__:
        assert getattr(sampling, field) == predict_defaults[field], field
    net, net_defaults = NetConfig(), defaults("$defs.net")
    assert (net.channels, net.multipliers, net.blocks) == (net_defaults["channels"], net_defaults["multipliers"],
                                                          net_defaults["blocks"])
    cal = defaults("calibrate")
    for fn in (calibration.fit, calibration.calibrate_model):
        assert inspect.signature(fn).parameters["method"].default == cal["method"]
        assert inspect.signature(fn).parameters["bins"].default == cal["bins"]
    assert inspect.signature(calibration.judge_model).parameters["max_pixels"].default == cal["max_pixels"]
    assert inspect.signature(check_pair).parameters["registration_tolerance"].default == \
        defaults("data")["registration_tolerance"]
    assert inspect.signature(evaluate.example_panels).parameters["size"].default == defaults("evaluate")["crop"]
    assert solvers.time_grid("euler", 4) == solvers.time_grid("euler", 4, predict_defaults["schedule"])


@pytest.mark.parametrize("section,key", [("train", "step"), ("predict", "nfes"), ("$defs.net", "channel")])
def test_settings_refuse_unknown_keys_by_name(section, key):
    with pytest.raises(InputError, match=f"unknown setting '{key}'"):
        settings(section, {key: 1})


def test_predict_refuses_a_misspelt_setting_before_writing(tmp_path):
    method = get_method("regression")
    net = _net(method)
    identity = {"name": "m", **method.identity(), "net": net.config.to_dict()}
    save_checkpoint(tmp_path / "m.pt", {"identity": identity, "ema": net.state_dict()})
    write_ome_zarr(tmp_path / "in.ome.zarr", np.random.default_rng(0).random((32, 32), dtype=np.float32), "YX", (0.1, 0.1))
    with pytest.raises(InputError, match="nfes"):
        predict(tmp_path / "m.pt", tmp_path / "in.ome.zarr", tmp_path / "out.ome.zarr", {"nfes": 4})
    assert not any(p.name.startswith(".out") or p.name == "out.ome.zarr" for p in tmp_path.iterdir())


class _Replicate(Method):
    """A toy super-resolution 'method': its estimate is the input on a grid twice as fine."""

    name = "replicate_x2"
    stochastic = False
    start = "zeros"
    time_input = False

    def __init__(self, options=None, source=None):
        torch.nn.Module.__init__(self)
        self.options = {}

    def in_channels(self, channels=1):
        return channels

    def grid_factor(self, dims):
        return (2,) * dims

    def velocity(self, net, t, x, degraded):
        return degraded + 0 * net(degraded)

    def integrate(self, field, x0, sampling):
        return x0 + field(torch.zeros(x0.shape[0]), x0)


def test_an_output_grid_twice_as_fine(tmp_path, monkeypatch):
    """Shape and pixel size follow the grid factor, tiles start on whole input pixels, and
    integrating the output over each 2x2 block gives back the input exactly."""
    monkeypatch.setitem(METHODS, _Replicate.name, _Replicate)
    method = _Replicate()
    net = _net(method)
    identity = {"name": "sr", **method.identity(), "grid_factor": [2, 2], "net": net.config.to_dict()}
    save_checkpoint(tmp_path / "m.pt", {"identity": identity, "ema": net.state_dict()})
    image = (np.random.default_rng(0).random((45, 38)) * 1000).astype(np.float32)
    write_ome_zarr(tmp_path / "in.ome.zarr", image, "YX", (0.2, 0.3), (16, 16))
    plan = prepare(tmp_path / "m.pt", tmp_path / "in.ome.zarr", tmp_path / "out.ome.zarr",
                   {"tile": 24, "overlap": 6, "block": [32, 32]})
    assert plan["shape"] == [90, 76] and plan["pixel_size"] == pytest.approx([0.1, 0.15])
    predict(tmp_path / "m.pt", tmp_path / "in.ome.zarr", tmp_path / "out.ome.zarr",
            {"tile": 24, "overlap": 6, "block": [32, 32]})
    out = read_prediction(tmp_path / "out.ome.zarr")["mmse"]
    assert out.shape == (90, 76)
    assert open_image(tmp_path / "out.ome.zarr").pixel_size == pytest.approx((0.1, 0.15))
    back = AreaDownsample(2).A(torch.from_numpy(out.astype(np.float64))[None, None])[0, 0].numpy()
    np.testing.assert_allclose(back, image, rtol=1e-5)


def test_relative_flow_curriculum_is_the_authors_and_a_function_of_the_step():
    """[0.2, 0.2] at the start, ends moved by 0.9 per epoch, 30 epochs: 0.2 * 0.9^29 and 0.2 / 0.9^29 at the end."""
    method = get_method("relative_flow")
    assert method.delta_range(0, 1000) == (0.2, 0.2)
    lo, hi = method.delta_range(1000, 1000)
    assert lo == pytest.approx(0.0094, abs=1e-4) and hi == pytest.approx(4.25, abs=0.01)
    assert method.delta_range(500, 1000) == (lo, hi)  # widen_until 0.5: full range from half-way on
    ranges = [method.delta_range(s, 1000) for s in range(0, 1001, 10)]
    assert all(a[0] >= b[0] and a[1] <= b[1] for a, b in zip(ranges, ranges[1:]))  # only ever widens
    assert get_method("relative_flow").delta_range(123, 1000) == method.delta_range(123, 1000)  # no hidden state
    method.schedule(0, 1000)
    delta = []
    net = lambda x, t: delta.append(t) or torch.zeros_like(x)  # noqa: E731
    method.loss(net, torch.rand(64, 1, 4, 4) + 1, None, torch.Generator().manual_seed(0))
    assert torch.allclose(delta[0], torch.tensor(0.2))  # drawn per sample, here from [0.2, 0.2]


@pytest.mark.parametrize("step_size,length", [("delta", 0.2 + 0.1 + 0.05),
                                              ("exact", np.expm1(0.2) + np.expm1(0.1) + np.expm1(0.05))])
def test_relative_flow_steps_are_its_own_grid(step_size, length):
    """x <- x + f(delta_k) v: a constant field of 1 moves x by sum f(delta_k), with t = delta_k at each step."""
    method = get_method("relative_flow", {"step_size": step_size})
    seen = []
    states = method.trajectory(lambda t, x: seen.append(float(t[0])) or torch.ones_like(x), torch.zeros(2, 1, 4, 4))
    assert seen == pytest.approx([0.2, 0.1, 0.05]) and len(states) == 3
    x = method.integrate(lambda t, x: torch.ones_like(x), torch.zeros(2, 1, 4, 4), None)
    torch.testing.assert_close(x, torch.full((2, 1, 4, 4), length, dtype=torch.float32))


def test_relative_flow_target_is_the_scaled_difference_to_the_noisier_copy():
    """A net that returns the exact target has zero loss: u = (x - D(x)) / (e^delta - 1), D(x) the net's input,
    with delta the net's time input (Gaussian operator, where D(x) - x is the added noise)."""
    method = get_method("relative_flow", {"operator": "gaussian", "sigma": 5.0})
    x = torch.rand(8, 1, 8, 8) * 3
    net = lambda noisier, delta: torch.clamp((x - noisier) / torch.expm1(delta).view(-1, 1, 1, 1), -10, 10)  # noqa: E731
    assert float(method.loss(net, x, None, torch.Generator().manual_seed(0))) == 0.0
    wrong = lambda noisier, delta: (x - noisier) / delta.view(-1, 1, 1, 1)  # noqa: E731
    assert float(method.loss(wrong, x, None, torch.Generator().manual_seed(0))) > 0


def test_relative_flow_reads_images_on_one_photon_scale():
    method = get_method("relative_flow", {"gain": 2.0, "offset": 100.0, "scale": 50.0})
    norm = method.normalization()
    assert (norm.low, norm.high) == (100.0, 200.0)  # 50 photo-electrons = 100 ADU above the offset read as 1
    assert method.identity()["normalization"] == {"low": 100.0, "high": 200.0}
    assert get_method("guided_cfm").normalization() is None and "normalization" not in get_method("guided_cfm").identity()
    with pytest.raises(InputError, match="sigma"):
        get_method("relative_flow", {"operator": "rician"})


def test_data_prediction_follows_the_straight_path_to_the_predicted_image():
    """x-prediction: v = (x1_hat - x_t) / (1 - t) is the path's velocity given x1_hat, so the solver's last
    step lands on the network's prediction, and the loss is the MSE of the prediction against x1."""
    from flowrestore.inference import solvers

    clean = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    class Oracle(torch.nn.Module):  # predicts `clean` whatever it sees
        def forward(self, x, t):
            return clean.expand(x.shape[0], *clean.shape[1:])

    method = get_method("guided_cfm", {"prediction": "data"})
    degraded = torch.zeros_like(clean)
    x0 = torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    for solver in ("euler", "midpoint"):
        x1 = solvers.integrate(solver, method.field(Oracle(), degraded), x0, 8)
        torch.testing.assert_close(x1, clean)
    target = clean + 0.5
    assert float(method.loss(Oracle(), target, degraded)) == pytest.approx(0.25)
    assert float(get_method("guided_cfm").loss(Oracle(), clean, degraded)) > 0.1  # velocity target x1 - x0


@pytest.mark.parametrize("prediction, loss", [("data", "velocity"), ("velocity", "data"), ("data", "auto"),
                                              ("velocity", "auto")])
def test_guided_loss_is_the_mse_in_the_space_it_names(prediction, loss):
    """The MSE of the same output taken on x1 or on the velocity: x1_hat = x_t + (1 - t) v (the straight
    path), so the two differ by (1 - t)^2, floored at 0.05 for x-prediction's v-loss (Li & He's t_eps)."""
    target = torch.rand(256, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    out = torch.full_like(target, 0.3)

    class Constant(torch.nn.Module):
        def forward(self, x, t):
            return out

    method = get_method("guided_cfm", {"prediction": prediction, "loss": loss})
    got = float(method.loss(Constant(), target, torch.zeros_like(target), torch.Generator().manual_seed(5)))
    g = torch.Generator().manual_seed(5)  # the draws of the loss, in its order: noise, then times
    x0 = torch.randn(target.shape, generator=g)
    gap = 1 - torch.rand(target.shape[0], generator=g).view(-1, 1, 1, 1)
    xt = gap * x0 + (1 - gap) * target
    x1_hat = out if prediction == "data" else xt + gap * out
    v_hat = (x1_hat - xt) / gap.clamp_min(0.05)
    v_true = (target - xt) / gap.clamp_min(0.05)
    space = prediction if loss == "auto" else loss
    want = torch.mean((x1_hat - target) ** 2) if space == "data" else torch.mean((v_hat - v_true) ** 2)
    if prediction == "velocity" and space == "velocity":
        want = torch.mean((out - (target - x0)) ** 2)  # unfloored: the velocity itself is the output
    assert got == pytest.approx(float(want), rel=1e-5)
    assert (gap < 0.05).any()  # the floor was exercised
