"""flow_prior and its PnP-Flow sampler: OT coupling, the task operators, tiling invariance, data consistency."""

import itertools

import numpy as np
import pytest
import torch

from flowrestore.errors import InputError
from flowrestore.inference.engine import Restorer
from flowrestore.inference.keyed_noise import gaussian
from flowrestore.inference.sampling import SamplingConfig
from flowrestore.inference.tiling import make_plan
from flowrestore.methods import get_method
from flowrestore.models.nets import NetConfig
from flowrestore.physics import AreaDownsample, Compose, GaussianBlur, adjointness_error
from flowrestore.physics.tasks import task_operator


class GaussianPriorField(torch.nn.Module):
    """The exact velocity E[x1 - x0 | x_t] of the path x_t = (1 - t) x0 + t x1 for x1 ~ N(mu, s^2 I),
    x0 ~ N(0, I) (Gaussian conditioning: x_t ~ N(t mu, (1 - t)^2 + t^2 s^2)). Elementwise, so a tile's
    output does not depend on its batch: an independent stand-in for a trained prior."""

    def __init__(self, mu: float, s: float, dims: int = 2):
        super().__init__()
        self.mu, self.s, self.config = mu, s, NetConfig(dims=dims, in_channels=1)

    def forward(self, x, t):
        t = t.view(-1, *[1] * (x.ndim - 1))
        var = (1 - t) ** 2 + t**2 * self.s**2
        d = x - t * self.mu
        return self.mu + (t * self.s**2 - (1 - t)) / var * d


def test_ot_coupling_is_the_cheapest_permutation():
    method = get_method("flow_prior", {"coupling": "ot"})
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(5, 1, 4, 4, generator=g), torch.randn(5, 1, 4, 4, generator=g)
    paired = method.couple(x0, x1)
    cost = lambda p: sum(float(((p[i] - x1[i]) ** 2).sum()) for i in range(5))  # noqa: E731
    best = min(cost(x0[list(perm)]) for perm in itertools.permutations(range(5)))
    assert cost(paired) == pytest.approx(best)
    assert sorted(map(tuple, paired.flatten(1).tolist())) == sorted(map(tuple, x0.flatten(1).tolist()))


@pytest.mark.parametrize("options", [{"task": "super_resolution", "factor": 4},
                                     {"task": "super_resolution", "factor": 2, "sigma": 1.5},
                                     {"task": "deblur", "sigma": 2.0}, {"task": "denoise"}])
@pytest.mark.parametrize("dims", [2, 3])
def test_task_operators_are_adjoint_pairs(options, dims):
    op = task_operator(get_method("flow_prior", options).options, dims)
    assert adjointness_error(op, (8, 16, 24)[-dims:]) < 1e-12


def test_super_resolution_with_blur_is_blur_then_integration():
    op = task_operator(get_method("flow_prior", {"task": "super_resolution", "factor": 2, "sigma": 1.0}).options, 2)
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    expected = AreaDownsample(2).double().A(GaussianBlur(1.0).double().A(x))
    torch.testing.assert_close(op.double().A(x), expected)
    assert isinstance(op, Compose) and op.grid_factor(2) == (2, 2)


@pytest.mark.parametrize("options,problem", [({"task": "deblur"}, "needs a PSF"),
                                             ({"task": "super_resolution", "factor": 1}, "factor of at least 2")])
def test_a_task_without_its_settings_is_refused(options, problem):
    with pytest.raises(InputError, match=problem):
        get_method("flow_prior", options)


def test_psf_file_is_read_and_normalised(tmp_path):
    import tifffile

    psf = np.zeros((5, 5), np.float32)
    psf[2, 1:4] = [1, 2, 1]
    tifffile.imwrite(tmp_path / "psf.tif", psf)
    op = task_operator(get_method("flow_prior", {"task": "deblur", "psf": str(tmp_path / "psf.tif")}).options, 2)
    assert float(op.psf.sum()) == pytest.approx(1.0)
    tifffile.imwrite(tmp_path / "even.tif", np.ones((4, 4), np.float32))
    with pytest.raises(InputError, match="odd"):
        get_method("flow_prior", {"task": "deblur", "psf": str(tmp_path / "even.tif")})


def _restore_image(method, net, y_fine: torch.Tensor, block, cfg: SamplingConfig, tile=(32, 32), overlap=(8, 8)):
    """The whole image restored block by block through the engine (cores stitched), mean and std."""
    f = method.grid_factor(2)
    plan = make_plan(tuple(y_fine.shape), tile, overlap, block, block, 4, f)
    mean, var = torch.zeros(y_fine.shape), torch.zeros(y_fine.shape)
    restorer = Restorer(method, net, cfg, torch.device("cpu"))
    for b in plan.blocks():
        result = restorer.restore(y_fine[b.outer], b, plan)
        mean[b.core], var[b.core] = result.mean, result.var
    return mean, var.sqrt()


def _sr_case(seed=0, shape=(16, 24), sigma=0.05):
    """x ~ N(0.5, 0.3^2) on the fine grid, y = area(x) + N(0, sigma^2), y repeated onto the fine grid."""
    g = torch.Generator().manual_seed(seed)
    x = 0.5 + 0.3 * torch.randn(1, 1, shape[0] * 4, shape[1] * 4, generator=g)
    y = AreaDownsample(4).A(x) + sigma * torch.randn(1, 1, *shape, generator=g)
    return x, y, y.repeat_interleave(4, 2).repeat_interleave(4, 3)[0, 0]


@pytest.mark.parametrize("stitching", ["tile", "step"])
def test_pnp_flow_does_not_depend_on_the_blocks(stitching):
    # (With "step", a network that mixes neighbouring voxels would make each block a chain of its own
    # near its edges; this prior is per voxel, so what is checked is the keyed noise and the data step.)
    method = get_method("flow_prior", {"task": "super_resolution", "factor": 4, "steps": 12})
    net = GaussianPriorField(0.5, 0.3)
    _, _, y_fine = _sr_case()
    cfg = SamplingConfig(samples=3, group=2, batch=5, stitching=stitching, seed=3, keep_samples=0, prefix_means=False)
    one, one_std = _restore_image(method, net, y_fine, (64, 96), cfg)
    many, many_std = _restore_image(method, net, y_fine, (16, 32), cfg)
    torch.testing.assert_close(many, one, rtol=0, atol=1e-6)
    torch.testing.assert_close(many_std, one_std, rtol=0, atol=1e-6)
    assert float(one_std.mean()) > 0.01  # the samples differ: fresh noise at every step


def test_pnp_flow_step_noise_is_fresh_and_keyed_to_the_voxel():
    a = gaussian(3, 1, (8, 4), (16, 16), step=5)
    assert torch.equal(a[4:, 4:], gaussian(3, 1, (12, 8), (12, 12), step=5))
    assert not torch.equal(a, gaussian(3, 1, (8, 4), (16, 16), step=6))
    assert not torch.equal(a, gaussian(3, 1, (8, 4), (16, 16)))  # nor the starting noise x0
    assert abs(float(torch.corrcoef(torch.stack([a.flatten(), gaussian(3, 1, (8, 4), (16, 16), step=6).flatten()]))[0, 1])) < 0.1


@pytest.mark.parametrize("stitching", ["step", "tile"])
def test_pnp_flow_fits_the_data_to_the_noise_level(stitching):
    """||A x_hat - y|| / sqrt(n) of the MMSE within 1.5x the simulated noise std."""
    sigma = 0.05
    x, y, y_fine = _sr_case(seed=1, sigma=sigma)
    method = get_method("flow_prior", {"task": "super_resolution", "factor": 4, "steps": 50})
    cfg = SamplingConfig(samples=4, group=4, batch=8, stitching=stitching, seed=0, keep_samples=0, prefix_means=False)
    mmse, _ = _restore_image(method, GaussianPriorField(0.5, 0.3), y_fine, (64, 96), cfg)
    residual = float((AreaDownsample(4).A(mmse[None, None]) - y).pow(2).mean().sqrt())
    assert residual < 1.5 * sigma


def test_pnp_flow_through_the_sharded_predict_path(tmp_path):
    """A flow_prior trained on targets alone restores ×4 onto the fine grid, with the pixel size / 4 in
    the OME metadata and the same bytes from 1 or 2 shards."""
    import zarr

    from fixtures import TINY_NET, make_acquisitions
    from flowrestore.data.io import write_ome_zarr
    from flowrestore.inference.predict import finalize, prepare, read_prediction, run_shard
    from flowrestore.training.loop import train_model

    data = make_acquisitions(tmp_path / "data", n=2, shape=(64, 64))
    options = {"task": "super_resolution", "factor": 4, "steps": 3}
    fast = dict(steps=2, batch_size=2, patch_size=32, val_every=2, checkpoint_every=2, val_batches=1)
    train_model("sr", "flow_prior", TINY_NET, fast, data[:1], data[1:], tmp_path / "sr", method_options=options)
    image = (np.random.default_rng(0).random((20, 12)) * 500).astype(np.float32)
    write_ome_zarr(tmp_path / "in.ome.zarr", image, "YX", (0.4, 0.4), (8, 8))
    settings = {"samples": 2, "tile": 32, "overlap": 8, "block": [32, 32], "stitching": "step", "keep_samples": 0}
    outs = []
    for shards in (1, 2):
        out = tmp_path / f"out{shards}.ome.zarr"
        prepare(tmp_path / "sr" / "checkpoint.pt", tmp_path / "in.ome.zarr", out, settings)
        for shard in range(shards):
            run_shard(tmp_path / "sr" / "checkpoint.pt", out, shard, shards)
        finalize(out)
        outs.append(zarr.open_group(str(out), mode="r")["0"][...])
    assert outs[0].tobytes() == outs[1].tobytes()
    pred = read_prediction(tmp_path / "out1.ome.zarr")
    assert pred["mmse"].shape == (80, 48) and np.isfinite(pred["mmse"]).all()
    scale = zarr.open_group(str(tmp_path / "out1.ome.zarr"), mode="r").attrs["multiscales"][0]["datasets"][0]
    assert scale["coordinateTransformations"][0]["scale"][-2:] == pytest.approx([0.1, 0.1])


# ----------------------------------------------------------------------------- isotropic 3D


@pytest.mark.parametrize("options", [{"task": "isotropic", "factor": 4}, {"task": "isotropic", "factor": 2, "sigma": 1.0}])
def test_isotropic_operators_are_adjoint_pairs(options):
    op = task_operator(get_method("flow_prior", options).options, 3)
    assert adjointness_error(op, (16, 8, 12)) < 1e-12
    assert op.grid_factor(3) == (options["factor"], 1, 1)
    x = torch.rand(1, 1, 8, 4, 4, dtype=torch.float64)
    if "sigma" not in options:  # axial integration: each output plane is the mean of a slab of `factor` planes
        torch.testing.assert_close(op.double().A(x)[0, 0, 1], x[0, 0, 4:8].mean(0))


def test_isotropic_needs_stacks():
    with pytest.raises(InputError, match="ZYX stacks"):
        task_operator(get_method("flow_prior", {"task": "isotropic"}).options, 2)
    with pytest.raises(InputError, match="ZYX stacks"):
        get_method("flow_prior", {"task": "isotropic"}).net_dims(2)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_2d_prior_sees_every_plane_across_the_axis(axis):
    """The plane-wise velocity of a (non-elementwise) 2D U-Net equals the U-Net on each plane, one by one."""
    from flowrestore.methods.flow_prior import _planewise
    from flowrestore.models.nets import UNet

    torch.manual_seed(0)
    net = UNet(NetConfig(dims=2, in_channels=1, channels=4, multipliers=[1, 2], blocks=1, norm="group")).eval()
    x, t = torch.randn(2, 1, 8, 12, 16), torch.tensor([0.3, 0.7])
    with torch.no_grad():
        v = _planewise(net, t, x, axis)
        for b in range(2):
            for i in range(x.shape[2 + axis]):
                plane = x[b:b + 1].select(2 + axis, i)
                torch.testing.assert_close(v[b:b + 1].select(2 + axis, i), net(plane, t[b:b + 1]), rtol=1e-5, atol=1e-5)


def _restore_stack(method, net, y_fine, block, cfg, tile=(16, 16, 16), overlap=(4, 4, 4)):
    plan = make_plan(tuple(y_fine.shape), tile, overlap, block, block, 4, method.grid_factor(3))
    mean, var = torch.zeros(y_fine.shape), torch.zeros(y_fine.shape)
    restorer = Restorer(method, net, cfg, torch.device("cpu"))
    for b in plan.blocks():
        result = restorer.restore(y_fine[b.outer], b, plan)
        mean[b.core], var[b.core] = result.mean, result.var
    return mean, var.sqrt()


def _axial_case(seed=0, shape=(6, 16, 20), sigma=0.05):
    """x ~ N(0.5, 0.3^2) on a grid 4x finer in Z, y = slab means of x + N(0, sigma^2), repeated onto it."""
    from flowrestore.physics import AxialDownsample

    g = torch.Generator().manual_seed(seed)
    x = 0.5 + 0.3 * torch.randn(1, 1, shape[0] * 4, *shape[1:], generator=g)
    y = AxialDownsample(4).A(x) + sigma * torch.randn(1, 1, *shape, generator=g)
    return x, y, y.repeat_interleave(4, 2)[0, 0]


@pytest.mark.parametrize("stitching", ["tile", "step"])
def test_isotropic_pnp_flow_does_not_depend_on_the_blocks(stitching):
    method = get_method("flow_prior", {"task": "isotropic", "factor": 4, "steps": 9})
    _, _, y_fine = _axial_case()
    cfg = SamplingConfig(samples=2, group=2, batch=3, stitching=stitching, seed=3, keep_samples=0, prefix_means=False)
    net = GaussianPriorField(0.5, 0.3, dims=2)
    one, one_std = _restore_stack(method, net, y_fine, (24, 16, 20), cfg)
    many, many_std = _restore_stack(method, net, y_fine, (8, 8, 12), cfg)
    torch.testing.assert_close(many, one, rtol=0, atol=1e-6)
    torch.testing.assert_close(many_std, one_std, rtol=0, atol=1e-6)
    assert float(one_std.mean()) > 0.01


def test_isotropic_pnp_flow_fits_the_data_to_the_noise_level():
    from flowrestore.physics import AxialDownsample

    sigma = 0.05
    x, y, y_fine = _axial_case(seed=1, sigma=sigma)
    method = get_method("flow_prior", {"task": "isotropic", "factor": 4, "steps": 60})
    cfg = SamplingConfig(samples=4, group=4, batch=8, stitching="step", seed=0, keep_samples=0, prefix_means=False)
    mmse, _ = _restore_stack(method, GaussianPriorField(0.5, 0.3, dims=2), y_fine, (24, 16, 20), cfg)
    residual = float((AxialDownsample(4).A(mmse[None, None]) - y).pow(2).mean().sqrt())
    assert residual < 1.5 * sigma


def test_isotropic_prior_trains_on_xy_planes_and_restores_onto_the_fine_z_grid(tmp_path):
    """A 2D prior trained on the XY planes of stacks restores an 8-plane stack onto 32 planes, with the Z
    voxel size / 4 in the OME metadata and the same bytes from 1 or 2 shards."""
    import json

    import zarr

    from fixtures import TINY_NET, make_acquisitions
    from flowrestore.data.io import write_ome_zarr
    from flowrestore.inference.predict import finalize, prepare, read_prediction, run_shard
    from flowrestore.training.loop import train_model

    data = make_acquisitions(tmp_path / "data", n=2, shape=(16, 32, 32))
    options = {"task": "isotropic", "factor": 4, "steps": 3}
    fast = dict(steps=2, batch_size=2, patch_size=16, val_every=2, checkpoint_every=2, val_batches=1)
    train_model("iso", "flow_prior", TINY_NET, fast, data[:1], data[1:], tmp_path / "iso", method_options=options)
    identity = json.loads((tmp_path / "iso" / "model.json").read_text())
    assert identity["net"]["dims"] == 2 and identity["dims"] == 3 and identity["grid_factor"] == [4, 1, 1]
    image = (np.random.default_rng(0).random((8, 20, 12)) * 500).astype(np.float32)
    write_ome_zarr(tmp_path / "in.ome.zarr", image, "ZYX", (0.4, 0.1, 0.1), (4, 8, 8))
    settings = {"samples": 2, "tile": 16, "overlap": 4, "block": [16, 16, 16], "stitching": "step", "keep_samples": 0}
    outs = []
    for shards in (1, 2):
        out = tmp_path / f"out{shards}.ome.zarr"
        prepare(tmp_path / "iso" / "checkpoint.pt", tmp_path / "in.ome.zarr", out, settings)
        for shard in range(shards):
            run_shard(tmp_path / "iso" / "checkpoint.pt", out, shard, shards)
        finalize(out)
        outs.append(zarr.open_group(str(out), mode="r")["0"][...])
    assert outs[0].tobytes() == outs[1].tobytes()
    pred = read_prediction(tmp_path / "out1.ome.zarr")
    assert pred["mmse"].shape == (32, 20, 12) and np.isfinite(pred["mmse"]).all()
    scale = zarr.open_group(str(tmp_path / "out1.ome.zarr"), mode="r").attrs["multiscales"][0]["datasets"][0]
    assert scale["coordinateTransformations"][0]["scale"][-3:] == pytest.approx([0.1, 0.1, 0.1])
