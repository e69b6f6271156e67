"""A U-Net with a sinusoidal time embedding, in 2D or 3D.

The degraded image enters as extra input channels (HazeMatching's guidance by concatenation);
the same network without time input is the regression baseline, so both have the same size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
import torch.nn.functional as F

from ..config import defaults


_NET = defaults("$defs.net")  # the schema's, the one place defaults are set


@dataclass
class NetConfig:
    dims: int = 2
    in_channels: int = 2  # x_t and the degraded image
    out_channels: int = 1
    channels: int = _NET["channels"]  # width of the first level
    multipliers: list[int] = field(default_factory=lambda: list(_NET["multipliers"]))
    blocks: int = _NET["blocks"]  # residual blocks per level
    norm: str = _NET["norm"]  # group, channel or none (see `_norm`); auto must be resolved by the method first
    padding: str = _NET["padding"]  # how convolutions extend a tile at its edges: zeros or reflect
    time: bool = True

    @property
    def factor(self) -> int:
        """Tile sizes must be multiples of this."""
        return 2 ** (len(self.multipliers) - 1)

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(dims: int, padding: str):
    conv = nn.Conv2d if dims == 2 else nn.Conv3d

    def make(cin: int, cout: int, kernel: int, **kwargs) -> nn.Module:
        return conv(cin, cout, kernel, padding_mode=padding, **kwargs)

    return make


class ChannelNorm(nn.Module):
    """Layer norm over the channels of each voxel (NAFNet's LayerNorm2d, ConvNeXt's channels-first
    LayerNorm): its statistics are those of one voxel's features, so a tiled image gives the same
    result as a whole one, unlike GroupNorm's statistics over the tile's extent.
    Input (N, C, *spatial); weight and bias (C,), named as GroupNorm's."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        order = (0, *range(2, x.ndim), 1)  # channels last: free for a channels_last tensor
        h = F.layer_norm(x.permute(order), (x.shape[1],), self.weight, self.bias, self.eps)
        return h.permute(0, x.ndim - 1, *range(1, x.ndim - 1))


def _norm(kind: str, channels: int) -> nn.Module:
    """group: GroupNorm (statistics over the tile: the output depends on the tile size);
    channel: ChannelNorm (per voxel); none: no normalisation (the zero-initialised last convolution
    of each residual block keeps training stable, as in SkipInit, De & Smith 2020)."""
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    if kind == "channel":
        return ChannelNorm(channels)
    if kind == "none":
        return nn.Identity()
    if kind == "auto":
        raise ValueError("net.norm auto is the method's choice: set NetConfig.norm to its Method.net_norm")
    raise ValueError(f"unknown net.norm {kind!r} (group, channel or none)")


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled to [0, 1000] as in diffusion U-Nets)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, dims: int, cin: int, cout: int, temb: int | None, norm: str, padding: str):
        super().__init__()
        conv = _conv(dims, padding)
        self.norm1 = _norm(norm, cin)
        self.conv1 = conv(cin, cout, 3, padding=1)
        # Scale and shift from the time embedding (FiLM): cheap and effective for flow nets.
        self.time = nn.Linear(temb, 2 * cout) if temb else None
        self.norm2 = _norm(norm, cout)
        self.conv2 = conv(cout, cout, 3, padding=1)
        self.skip = conv(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.time is not None:
            scale, shift = self.time(emb).view(emb.shape[0], -1, *([1] * (h.ndim - 2))).chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class UNet(nn.Module):
    def __init__(self, config: NetConfig):
        super().__init__()
        self.config = c = config
        conv = _conv(c.dims, c.padding)
        temb = 4 * c.channels if c.time else None
        if c.time:
            self.time_mlp = nn.Sequential(nn.Linear(c.channels, temb), nn.SiLU(), nn.Linear(temb, temb))
        widths = [c.channels * m for m in c.multipliers]
        self.stem = conv(c.in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cin = widths[0]
        skips = []
        for level, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(c.blocks):
                blocks.append(ResBlock(c.dims, cin, w, temb, c.norm, c.padding))
                cin = w
            self.down.append(blocks)
            skips.append(w)
            if level < len(widths) - 1:
                self.downsample.append(conv(w, w, 3, stride=2, padding=1))
        self.mid = ResBlock(c.dims, cin, cin, temb, c.norm, c.padding)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(widths))):
            w = widths[level]
            blocks = nn.ModuleList()
            for i in range(c.blocks):
                blocks.append(ResBlock(c.dims, cin + (skips[level] if i == 0 else 0), w, temb, c.norm, c.padding))
                cin = w
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(conv(w, widths[level - 1], 3, padding=1))
                cin = widths[level - 1]
        self.head = nn.Sequential(_norm(c.norm, cin), nn.SiLU(), conv(cin, c.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        emb = None
        if self.config.time:
            if t is None:
                raise ValueError("this network needs the time t")
            t = t.expand(x.shape[0]) if t.ndim == 0 else t
            emb = self.time_mlp(timestep_embedding(t, self.config.channels)).to(x.dtype)
        h = self.stem(x)
        skips = []
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        h = self.mid(h, emb)
        for i, blocks in enumerate(self.up):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, emb)
            if i < len(self.upsample):
                h = F.interpolate(h, scale_factor=2, mode="nearest")
                h = self.upsample[i](h)
        return self.head(h)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
