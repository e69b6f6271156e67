"""The restored image does not depend on `predict.tile`, wherever the network's reach allows.

A convolutional network whose normalisation has no statistics over the tile (`net.norm` channel
or none) and whose tiles start on multiples of its down-sampling factor is translation-equivariant:
a tile's output at a voxel farther than the receptive-field radius R from the tile's edges inside
the image is the whole image's output there, exactly (up to float summation order). R is measured
here independently, as the support of the output's gradient. A voxel all of whose tiles hold it
that far from their inner edges is therefore the same for any tile size; after n solver steps
of "tile" stitching the reach is n R (each step feeds the previous one's output back in).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowrestore.config import defaults
from flowrestore.data.io import write_ome_zarr
from flowrestore.data.normalize import Normalization
from flowrestore.inference.predict import predict, read_prediction
from flowrestore.inference.tiling import make_plan
from flowrestore.models import checkpoint
from flowrestore.models.nets import NetConfig, UNet
from flowrestore.training.loop import train_model

from fixtures import TINY_NET, make_acquisitions

SHAPE = (161, 150)  # not multiples of the factor: the last tile passes the end and is padded


def randomised(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight drawn at random (the zero-initialised last convolutions too), so that every
    path through the network carries signal and its receptive field is the architecture's."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 1:  # weights at the scale of a default initialisation
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:  # biases near 0, normalisation scales near 1
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net.eval()


def receptive_radius(net: UNet, size: int = 96) -> int:
    """Largest Chebyshev distance at which an input voxel changes an output voxel (gradient support)."""
    radius = 0
    for centre in (size // 2, size // 2 + 1):  # both phases of the down-sampling
        x = torch.randn(1, net.config.in_channels, size, size, requires_grad=True)
        t = torch.full((1,), 0.5) if net.config.time else None
        net(x, t)[0, 0, centre, centre].backward()
        ys, xs = np.nonzero(x.grad.abs().sum((0, 1)).numpy())
        radius = max(radius, int(max(np.abs(ys - centre).max(), np.abs(xs - centre).max())))
    assert radius < size // 2 - 2, (f"one output voxel depends on inputs {radius} voxels away, the whole {size}^2 "
                                    "probe: statistics over the tile (GroupNorm)?")
    return radius


def exact_mask(shape, tile: int, overlap: int, factor: int, border: int, reach: int) -> np.ndarray:
    """Voxels that every tile covering them holds at least `reach` from its inner edges: all but the
    first tile's start and the last one's end, which lie at the same place (beyond the border) in any
    tiling."""
    plan = make_plan(shape, (tile,) * len(shape), (overlap,) * len(shape), shape, shape, factor, border=border)
    masks = []
    for length, starts in zip(shape, plan.starts):
        ok = np.ones(length, bool)
        for s in starts:
            covered = np.arange(max(s, 0), min(s + tile, length))
            for e in (s, s + tile):
                if starts[0] < e < starts[-1] + tile:
                    ok[covered[np.abs(covered - e) < reach]] = False
        masks.append(ok)
    return np.multiply.outer(*masks)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A regression and a guided_cfm checkpoint (1 training step) with randomised weights."""
    root = tmp_path_factory.mktemp("tiles")
    data = make_acquisitions(root / "data", n=2, shape=SHAPE)
    fast = dict(steps=1, batch_size=1, patch_size=32, val_every=1, checkpoint_every=1, val_batches=1)
    out = {}
    for method in ("regression", "guided_cfm"):  # guided_cfm's net.norm auto is group, tile-dependent by choice
        path = train_model(method, method, TINY_NET | {"norm": "channel"}, fast, data[:1], data[1:], root / method)
        payload = torch.load(path, weights_only=True)
        _, net, _ = checkpoint.load_model(path)
        payload["ema"] = randomised(net.requires_grad_(True)).state_dict()
        torch.save(payload, path)
        out[method] = path
    return root, data, out


@pytest.mark.parametrize("method", ["regression", "guided_cfm"])
def test_network_output_does_not_depend_on_the_tile(models, method):
    _, _, paths = models
    _, net, identity = checkpoint.load_model(paths[method])
    net.requires_grad_(True)
    radius = receptive_radius(net)
    factor = net.config.factor
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, net.config.in_channels, 128, 128, generator=g)
    t = torch.full((1,), 0.3) if net.config.time else None
    with torch.no_grad():
        whole = net(x, t)[0, 0]
        top, left = 5 * factor, 9 * factor  # a tile at an aligned position, inner edges on all four sides
        size = 2 * radius + 4 * factor
        part = net(x[..., top:top + size, left:left + size], t)[0, 0]
    inner = (slice(radius, size - radius),) * 2
    reference = whole[top:top + size, left:left + size][inner]
    span = float(whole.max() - whole.min())
    assert torch.allclose(part[inner], reference, atol=1e-5 * span), float((part[inner] - reference).abs().max())


@pytest.mark.parametrize("method, steps", [("regression", 1), ("guided_cfm", 1)])
def test_prediction_does_not_depend_on_the_tile_size(models, method, steps):
    root, data, paths = models
    _, net, _ = checkpoint.load_model(paths[method])
    reach = steps * receptive_radius(net.requires_grad_(True))
    settings = dict(samples=2, group=2, solver="euler", nfe=steps, overlap=8, keep_samples=0, prefix_means=False,
                    seed=4, block=[256, 256])
    out = {}
    for tile in (64, 96, 256):
        path = root / f"{method}-{tile}.ome.zarr"
        predict(paths[method], data[1].input_path, path, settings | {"tile": tile}, normalization=data[1].input_norm,
                device="cpu")
        out[tile] = read_prediction(path)["mmse"]
    span = float(out[256].max() - out[256].min())
    for tile in (64, 96):
        mask = exact_mask(SHAPE, tile, 8, net.config.factor, defaults("predict")["border"], reach)
        assert mask.mean() > 0.1, "the test would check too few voxels"
        diff = np.abs(out[tile] - out[256])[mask]
        assert diff.max() <= 1e-5 * span, (tile, diff.max() / span)


def test_a_checkpoint_from_before_the_norm_setting_loads_as_the_network_that_wrote_it(models, tmp_path):
    _, _, paths = models
    payload = torch.load(paths["regression"], weights_only=True)
    for key in ("norm", "padding"):
        payload["identity"]["net"].pop(key)
    old = tmp_path / "checkpoint.pt"
    torch.save(payload, old)
    _, net, _ = checkpoint.load_model(old)
    config = {**payload["identity"]["net"], "norm": "group", "padding": "zeros"}
    reference = UNet(NetConfig(**config))
    reference.load_state_dict(payload["ema"])
    x = torch.randn(1, net.config.in_channels, 32, 32)
    assert isinstance(net.head[0], torch.nn.GroupNorm)
    assert torch.equal(net(x), reference.eval()(x))


def test_net_norm_auto_is_the_methods_choice(tmp_path):
    """The default network of every method but guided_cfm does not depend on the tile (README, bench/tiling.py)."""
    assert defaults("$defs.net")["norm"] == "auto"
    data = make_acquisitions(tmp_path / "data", n=2, shape=(64, 64))
    fast = dict(steps=1, batch_size=1, patch_size=32, val_every=1, checkpoint_every=1, val_batches=1)
    for method, norm in (("regression", "channel"), ("guided_cfm", "group")):
        path = train_model(method, method, TINY_NET, fast, data[:1], data[1:], tmp_path / method)
        _, net, identity = checkpoint.load_model(path)
        assert identity["net"]["norm"] == norm
        assert isinstance(net.head[0], torch.nn.GroupNorm) == (norm == "group")
    with pytest.raises(ValueError, match="method's choice"):
        UNet(NetConfig(norm="auto"))


class PaddingShy(torch.nn.Module):
    """A velocity that widens the samples next to its convolutions' zero padding, as a flow model
    learns to from training patches whose edges lack context: dx/dt = 3 (1 - P) x, with P the
    9 x 9 mean of ones, zero-padded (1 inside, 5/9 on an edge row). Its reach is 4 voxels."""

    def __init__(self):
        super().__init__()
        self.config = NetConfig(dims=2, channels=8, multipliers=[1, 2])

    def forward(self, z: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        x = z[:, :1]
        return 3 * (1 - F.avg_pool2d(torch.ones_like(x), 9, stride=1, padding=4)) * x


def test_std_is_not_inflated_at_the_image_border(models, monkeypatch):
    """One Euler step from keyed noise, in one tile: x1 = (1 + 3 (1 - P)) x0, with P = 1 at voxels
    farther than 4 from the tile's edges. The tile reaches `predict.border` (>= 4) voxels past the
    image on every side, so at every image voxel the std is that of x0, 1, up to Monte Carlo error:
    K = 16 samples give each voxel's std a relative error of 1/sqrt(2 (K - 1)) = 0.18, independent
    from voxel to voxel; over the ring's 252 voxels 0.012, so 0.05 is four standard errors. With the
    tile's edge at the image's (no border) the edge ring's std is 1 + 3 (4/9) = 2.3 times the inside's.
    (Many tiles: their inner edges are the tile-independence tests' concern.)"""
    root, _, paths = models
    real = checkpoint.load_model

    def load_stand_in(path, device="cpu"):
        method, _, identity = real(path, device)
        return method, PaddingShy().to(device), identity

    monkeypatch.setattr(checkpoint, "load_model", load_stand_in)
    image = root / "data" / "uniform.ome.zarr"
    write_ome_zarr(image, np.full((64, 64), 100, np.uint16), "YX", (0.1, 0.1))
    settings = dict(samples=16, group=16, solver="euler", nfe=1, tile=256, overlap=16, keep_samples=0,
                    prefix_means=False, seed=2)
    out = root / "uniform.ome.zarr"
    predict(paths["guided_cfm"], image, out, settings, normalization=Normalization(0.0, 200.0), device="cpu")
    std = read_prediction(out)["std_raw"] / 200.0  # in units of the normalised image, where x0 has std 1
    ring = np.concatenate([std[0], std[-1], std[1:-1, 0], std[1:-1, -1]]).mean()
    assert abs(ring / std[16:-16, 16:-16].mean() - 1) < 0.05, ring / std[16:-16, 16:-16].mean()
