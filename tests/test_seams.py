"""No seams at tile (or block) edges in the std and MMSE maps of an image several tiles across.

A seam is a step between the outputs of two overlapping tiles: it shows as a line of large
neighbour differences exactly at a tile's edge. The network here is a tiny deterministic
stand-in that makes tiles disagree the way a U-Net does, only more: it normalises the guide by
the statistics of the whole tile (like GroupNorm) and zero-pads its smoothing at tile edges. It
also pulls each sample toward a smoothed copy of its noise, so the std map is smooth and
non-trivial and a step in it stands out. A control test checks that the measure does see the
seams when the blending weights are flat.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowrestore.models import checkpoint
from flowrestore.inference import engine
from flowrestore.models.nets import NetConfig
from flowrestore.inference.predict import predict, read_prediction
from flowrestore.inference.tiling import make_plan
from flowrestore.training.loop import train_model

from fixtures import TINY_NET, make_acquisitions

SHAPE, TILE, OVERLAP, BLOCK = (192, 160), 48, 12, 64  # 5 x 5 tiles, 3 x 3 blocks
# Euler with small steps: the stand-in's field is stiff (rate 4), which large Heun steps would amplify.
SETTINGS = dict(samples=4, group=4, solver="euler", nfe=8, schedule=1.0, tile=TILE, overlap=OVERLAP,
                block=[BLOCK, BLOCK], batch=16, keep_samples=0, prefix_means=False, seed=1)


class TileDependentNet(torch.nn.Module):
    """dx/dt = (4 + 2 tanh(g)) S(x) - 4x + g, with g the guide normalised over the tile and S a
    zero-padded 17-pixel smoothing: fine noise decays, smooth noise is scaled per tile."""

    def __init__(self):
        super().__init__()
        self.config = NetConfig(dims=2, channels=8, multipliers=[1, 2])

    def forward(self, z: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        x, y = z[:, :1], z[:, 1:2]
        g = (y - y.mean((2, 3), keepdim=True)) / (y.std((2, 3), keepdim=True) + 1e-3)
        smooth = F.avg_pool2d(F.avg_pool2d(x, 9, stride=1, padding=4), 9, stride=1, padding=4)
        return (4 + 2 * torch.tanh(g)) * smooth - 4 * x + g


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("seams")
    data = make_acquisitions(root / "data", n=2, shape=SHAPE, chunks=(BLOCK, BLOCK))
    # A real checkpoint for predict's bookkeeping; its network is swapped for the stand-in below.
    fast = dict(steps=1, batch_size=1, patch_size=32, val_every=1, checkpoint_every=1, val_batches=1)
    train_model("m", "guided_cfm", TINY_NET, fast, data[:1], data[1:], root / "m")
    return root, data


def _predict(setup, monkeypatch, name: str, stitching: str) -> dict[str, np.ndarray]:
    root, data = setup
    real = checkpoint.load_model

    def load_stand_in(path, device="cpu"):
        method, _, identity = real(path, device)
        return method, TileDependentNet().to(device), identity

    monkeypatch.setattr(checkpoint, "load_model", load_stand_in)
    out = root / f"{name}.ome.zarr"
    predict(root / "m" / "checkpoint.pt", data[1].input_path, out, SETTINGS | {"stitching": stitching},
            normalization=data[1].input_norm, device="cpu")
    return read_prediction(out)


def edge_lines(length: int, starts: tuple[int, ...]) -> list[int]:
    """Indices j of the lines between pixels j and j+1 where a tile or a block core begins or ends."""
    lines = {s - 1 for s in starts if s > 0} | {s + TILE - 1 for s in starts if s + TILE < length}
    return sorted(lines | {b - 1 for b in range(BLOCK, length, BLOCK)})


def seam_strength(image: np.ndarray) -> float:
    """Largest mean |neighbour difference| across a tile/block edge line, over that of the 3
    lines on either side of it (edge lines excluded): ~1 without seams, large at a seam."""
    plan = make_plan(SHAPE, (TILE, TILE), (OVERLAP, OVERLAP), (BLOCK, BLOCK), (BLOCK, BLOCK))
    worst = 0.0
    for axis in range(image.ndim):
        jump = np.abs(np.diff(image, axis=axis)).mean(axis=tuple(a for a in range(image.ndim) if a != axis))
        edges = edge_lines(image.shape[axis], plan.starts[axis])
        for j in edges:
            beside = [k for k in range(j - 3, j + 4) if 0 <= k < jump.size and k not in edges]
            worst = max(worst, jump[j] / np.mean(jump[beside]))
    return worst


@pytest.mark.parametrize("stitching", ["tile", "step"])
def test_std_and_mmse_maps_have_no_seams(setup, monkeypatch, stitching):
    pred = _predict(setup, monkeypatch, f"blended-{stitching}", stitching)
    std = pred["std"]
    assert (std > 0).all() and std.std() > 0.2 * std.mean()  # a std map with structure, not a constant
    for channel in ("std", "mmse"):
        assert seam_strength(pred[channel]) < 1.5, channel


@pytest.mark.parametrize("stitching", ["tile", "step"])
def test_seams_are_detected_without_blending_weights(setup, monkeypatch, stitching):
    # Control: flat weights average overlapping tiles with no ramp, which leaves a step at each tile edge.
    monkeypatch.setattr(engine, "window", lambda tile, overlap: np.ones(tile, np.float32))
    pred = _predict(setup, monkeypatch, f"flat-{stitching}", stitching)
    assert seam_strength(pred["std"]) > 2.0
