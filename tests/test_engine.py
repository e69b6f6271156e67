"""The block engine against a plain per-tile computation, and what CPU tests can reach of its CUDA path."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from flowrestore.errors import InputError
from flowrestore.inference import allocator, solvers
from flowrestore.inference.engine import Restorer
from flowrestore.inference.keyed_noise import gaussian
from flowrestore.inference.sampling import SamplingConfig
from flowrestore.inference.tiling import make_plan, window
from flowrestore.methods.base import get_method
from flowrestore.models.nets import NetConfig, UNet
from flowrestore.devices import resolve_device


class ExactField(torch.nn.Module):
    """A stand-in velocity network whose output for one tile is, to the bit, the same whatever else
    is in its batch: float32 elementwise operations (no fused multiply-add) and a roll inside the
    tile, so a tile cut at the wrong place, a wrong guide tile or a wrong time changes the result.
    A convolution network may round differently for another batch size, which would hide nothing
    of the engine but would make a bit-for-bit comparison with a per-tile loop meaningless."""

    def __init__(self, dims: int):
        super().__init__()
        self.config = NetConfig(dims=dims)

    def forward(self, xy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x, y = xy[:, :1], xy[:, 1:]
        t = t.view(-1, *[1] * (xy.ndim - 1))
        return (y - x) + t * torch.roll(x, 1, dims=-1) * 0.75


def plain_midpoint(field, x: torch.Tensor, nfe: int, schedule: float) -> torch.Tensor:
    """The explicit midpoint rule written out: x + h v(t + h/2, x + h/2 v(t, x))."""
    grid = solvers.time_grid("midpoint", nfe, schedule)
    for t0, t1 in zip(grid[:-1], grid[1:]):
        h = t1 - t0
        x = x + h * field(torch.tensor([t0 + 0.5 * h], dtype=torch.float32),
                          x + 0.5 * h * field(torch.tensor([t0], dtype=torch.float32), x))
    return x


def plain_block(net, y: torch.Tensor, block, plan, cfg: SamplingConfig) -> list[torch.Tensor]:
    """The block's K samples (core only), one tile at a time: keyed noise, solver, window blend."""
    origin = tuple(s.start for s in block.outer)
    regions = [tuple(slice(o - b, o - b + t) for o, b, t in zip(tile, origin, plan.tile)) for tile in block.tiles]
    core = tuple(slice(c.start - o, c.stop - o) for c, o in zip(block.core, origin))
    weight = torch.from_numpy(window(plan.tile, plan.overlap))
    wsum = torch.zeros(y.shape)
    for r in regions:
        wsum[r] += weight

    def velocity(t, x, guide):  # one tile, batch of one
        return net(torch.cat([x[None, None], guide[None, None]], dim=1), t)[0, 0]

    def blend(tile_fn):
        acc = torch.zeros(y.shape)
        for r in regions:
            acc[r] += tile_fn(r) * weight
        return acc / wsum

    samples = []
    for k in range(cfg.samples):
        x0 = gaussian(cfg.seed, k, origin, tuple(y.shape))
        if cfg.stitching == "tile":  # solve every tile to t = 1, then blend
            x1 = blend(lambda r: plain_midpoint(lambda t, x: velocity(t, x, y[r]), x0[r], cfg.nfe, cfg.schedule))
        else:  # blend the tiles' velocities at every evaluation
            x1 = plain_midpoint(lambda t, x: blend(lambda r: velocity(t, x[r], y[r])), x0, cfg.nfe, cfg.schedule)
        samples.append(x1[core])
    return samples


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("stitching", ["tile", "step"])
def test_engine_gives_the_bits_of_a_plain_per_tile_loop(stitching, dims):
    # Several blocks of different layouts through one Restorer (its buffers and cached layout are
    # reused and replaced), K = 3 in groups of 2 (the last group is smaller), and a batch of 5 that
    # splits the (sample, tile) pairs unevenly.
    if dims == 2:
        shape, tile, overlap, block = (70, 90), (32, 32), (8, 8), (40, 48)
    else:
        shape, tile, overlap, block = (10, 30, 26), (8, 16, 16), (2, 4, 4), (8, 16, 24)
    plan = make_plan(shape, tile, overlap, block, block)
    volume = torch.from_numpy(np.random.default_rng(1).random(shape, dtype=np.float32))
    cfg = SamplingConfig(samples=3, group=2, batch=5, nfe=4, solver="midpoint", keep_samples=3, stitching=stitching,
                         seed=7, prefix_means=False)
    net = ExactField(dims)
    restorer = Restorer(get_method("guided_cfm"), net, cfg, torch.device("cpu"))
    blocks = plan.blocks()
    assert len(blocks) >= 4 and len({len(b.tiles) for b in blocks}) > 1
    for block in blocks:
        y = volume[block.outer]
        result = restorer.restore(y, block, plan)
        expected = plain_block(net, y, block, plan, cfg)
        for got, want in zip(result.samples, expected, strict=True):
            np.testing.assert_array_equal(got.numpy(), want.numpy())
        stack = torch.stack(expected).double()
        np.testing.assert_allclose(result.mean.numpy(), stack.mean(0).numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(result.var.numpy(), stack.var(0).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("solver", solvers.SOLVERS)
def test_solver_step_is_the_textbook_formula_to_the_bit_and_leaves_its_inputs(solver):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 17, 19, generator=gen)
    a, b = torch.randn(x.shape, generator=gen), torch.randn(x.shape, generator=gen)
    returned = []

    def field(t, z):  # keeps what it returns, as a caching field might
        v = a * z + b * t.view(-1, 1, 1, 1)
        returned.append(v.clone())
        return v

    before = x.clone()
    for t0, t1 in [(0.1, 0.35), (0.6, 1.0)]:
        got = solvers.step(solver, field, x, t0, t1)
        h, t = t1 - t0, torch.full((3,), t0)
        f = lambda s, z: a * z + b * s.view(-1, 1, 1, 1)  # noqa: E731
        v0 = f(t, x)
        if solver == "euler" or (solver == "heun" and t1 >= 1.0):
            want = x + h * v0
        elif solver == "midpoint":
            want = x + h * f(torch.full_like(t, t0 + 0.5 * h), x + 0.5 * h * v0)
        else:
            want = x + 0.5 * h * (v0 + f(torch.full_like(t, t1), x + h * v0))
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert torch.equal(x, before)
    assert all(torch.equal(v, v.clone()) for v in returned)


# ------------------------------------------------------------------ what CPU tests reach of the CUDA path
def test_auto_device_is_cuda_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(InputError, match="'cuda:2'.*2 CUDA devices"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_asked_where_there_is_none_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA device.*Fix:"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="'gpu'.*Fix: .*cuda:N"):
        resolve_device("gpu")


@pytest.mark.parametrize("dims,fmt", [(2, torch.channels_last), (3, torch.channels_last_3d)])
def test_autocast_only_on_cuda_and_the_network_channels_last(dims, fmt):
    method = get_method("guided_cfm")
    net = UNet(NetConfig(dims=dims, channels=8, multipliers=[1, 2], norm="channel"))
    assert not Restorer(method, net, SamplingConfig(amp=True), torch.device("cpu")).autocast
    # Built for a CUDA device without one being present: the choice is made from the device's type.
    assert Restorer(method, net, SamplingConfig(amp=True), torch.device("cuda")).autocast
    assert not Restorer(method, net, SamplingConfig(amp=False), torch.device("cuda")).autocast
    restorer = Restorer(method, net, SamplingConfig(amp=True), torch.device("cpu"))
    convs = [m for m in restorer.net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs and all(c.weight.is_contiguous(memory_format=fmt) for c in convs)
    # On the CPU the network runs in float32, exactly as without the engine.
    x = torch.randn(2, 1, *([8] * dims))
    t = torch.tensor([0.3, 0.6])
    with torch.no_grad():
        v, plain = restorer._velocity(t, x, x), method.velocity(net, t, x, x)
    assert v.dtype == torch.float32
    np.testing.assert_array_equal(v.numpy(), plain.numpy())


# ------------------------------------------------------------------ allocator setting
_FAULTS = """
import json, resource, torch
from flowrestore.inference import allocator

torch.set_num_threads(1)


def evaluation():  # like a network's layers: 64 MiB tensors made from one another, all freed at the end
    a = torch.ones(1 << 24)
    b = a * 2
    c = b + a
    return float(c[-1])


def faults():  # minor page faults of 8 evaluations, after 4 that let the heap settle
    for _ in range(4):
        evaluation()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        evaluation()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


default = faults()
applied = allocator.retain_freed_memory()
out = {"default": default, "applied": applied, "again": allocator.retain_freed_memory(), "kept": faults()}
held = rss_mb()
allocator.release_between_blocks()
print(json.dumps(out | {"released_mb": held - rss_mb()}))
"""


def test_retained_memory_is_reused_without_page_faults_and_released_between_blocks():
    import ctypes

    try:
        ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("glibc only: other C libraries are left as they are")
    out = json.loads(subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, check=True)
                     .stdout.strip().splitlines()[-1])
    assert out["applied"] and out["again"]
    # 8 x 3 x 64 MiB is 393216 pages of 4 KiB (torch does not ask for huge pages): glibc's defaults map
    # and fault every one of them in; kept in the heap, the tensors reuse pages already there.
    assert out["default"] > 100_000 and out["kept"] < out["default"] / 10, out
    # Between blocks the kept memory (three 64 MiB tensors' worth) goes back to the OS.
    assert out["released_mb"] > 150, out


def test_the_bench_switch_keeps_glibc_defaults():
    code = "from flowrestore.inference import allocator; print(allocator.retain_freed_memory())"
    env = {"FLOWRESTORE_BENCH_GLIBC_DEFAULTS": "1", "PATH": "", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False"

