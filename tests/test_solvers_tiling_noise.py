import itertools
import math

import numpy as np
import pytest
import torch

from flowrestore.inference import solvers
from flowrestore.inference.keyed_noise import gaussian
from flowrestore.data.io import default_chunks
from flowrestore.inference.tiling import make_plan, sizes, tile_starts, window


@pytest.mark.parametrize("nfe", [8, 16])
def test_second_order_solvers_beat_euler_at_equal_evaluations(nfe):
    # dx/dt = -x + t, x(0) = 1 has x(1) = 2/e exactly.
    calls = {"n": 0}

    def field(t, x):
        calls["n"] += 1
        return -x + t[:, None]

    x0 = torch.ones(1, 1, dtype=torch.float64)
    exact = 2 / math.e
    err = {}
    for s in solvers.SOLVERS:
        calls["n"] = 0
        err[s] = abs(float(solvers.integrate(s, field, x0, nfe, power=1.0)) - exact)
        assert calls["n"] == solvers.evaluations(s, nfe) <= nfe
    assert err["heun"] < err["euler"] / 2 and err["midpoint"] < err["euler"] / 2


@pytest.mark.parametrize("solver,nfe,calls", [("heun", 8, 7), ("midpoint", 8, 8), ("midpoint", 7, 6), ("euler", 8, 8)])
def test_no_solver_evaluates_the_velocity_at_t_1(solver, nfe, calls):
    # At t = 1 a flow model's velocity has forgotten x0; a corrector there would leave noise behind.
    seen = []
    solvers.integrate(solver, lambda t, x: seen.append(float(t[0])) or torch.zeros_like(x), torch.zeros(1, 1), nfe)
    assert max(seen) < 1.0 and len(seen) == calls == solvers.evaluations(solver, nfe)


def test_one_evaluation_is_an_euler_step_for_every_solver():
    for s in solvers.SOLVERS:
        x = solvers.integrate(s, lambda t, x: torch.full_like(x, 3.0) - t[:, None], torch.zeros(2, 1), 1)
        assert torch.equal(x, torch.full((2, 1), 3.0)) and solvers.evaluations(s, 1) == 1


def test_straight_paths_are_solved_exactly():
    # v = (x1 - x) / (1 - t) for a fixed x1 (the straight path to x1): every solver lands on x1.
    x1 = torch.tensor([[2.0]], dtype=torch.float64)
    for s in solvers.SOLVERS:
        x0 = torch.zeros(1, 1, dtype=torch.float64)
        x = solvers.integrate(s, lambda t, x: (x1 - x) / (1 - t[:, None]), x0, 8, 2.5)
        assert torch.allclose(x, x1)


def test_unknown_solver_is_refused():
    with pytest.raises(ValueError, match="unknown solver"):
        solvers.time_grid("rk4", 8)


def test_time_grid_shrinks_steps_toward_the_end():
    grid = solvers.time_grid("euler", 4, power=2.0)
    assert grid[0] == 0.0 and grid[-1] == 1.0
    steps = [b - a for a, b in zip(grid, grid[1:])]
    assert all(a > b for a, b in zip(steps, steps[1:]))
    assert solvers.time_grid("euler", 4, power=1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_euler_one_step_is_the_velocity():
    x = solvers.integrate("euler", lambda t, x: torch.full_like(x, 3.0), torch.zeros(2, 1), 1)
    assert torch.equal(x, torch.full((2, 1), 3.0))


@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 8), (64, 64, 8), (20, 32, 8), (257, 64, 16)])
def test_tile_starts_cover_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(max(length, tile), bool)
    for s in starts:
        covered[s:s + tile] = True
    assert covered[:length].all()
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_block_cores_partition_the_volume_and_tiles_cover_them():
    plan = make_plan((150, 97), (32, 32), (8, 8), (64, 40), (16, 20))
    count = np.zeros(plan.shape, int)
    for block in plan.blocks():
        count[block.core] += 1
        cover = np.zeros(plan.shape, bool)
        for origin in block.tiles:
            cover[tuple(slice(o, o + t) for o, t in zip(origin, plan.tile))] = True
            assert all(o >= s.start and o + t <= s.stop for o, t, s in zip(origin, plan.tile, block.outer))
        assert cover[block.core].all()
    assert (count == 1).all()
    assert all(b % c == 0 for b, c in zip(plan.block, (16, 20)))


@pytest.mark.parametrize("shape", [(200, 512, 512), (64, 1024, 1024), (512, 512)])
def test_default_tiles_fit_their_blocks_and_cost_the_overlap_plus_block_edges(shape):
    # The case: with a tile larger than the block, every block computed the same whole-depth
    # tiles again (16 tile evaluations per voxel for 200x512x512).
    ndim = len(shape)
    tile, overlap, block = sizes({"tile": None, "overlap": None, "block": None}, ndim, 4)
    chunks = tuple(min(c, b) for c, b in zip(default_chunks(shape), block))
    plan = make_plan(shape, tile, overlap, block, chunks, 4)
    assert all(t <= b for t, b in zip(plan.tile, plan.block))
    # Counted from the plan, not from the tiling code's own formulas: network work per voxel.
    per_voxel = sum(len(b.tiles) for b in plan.blocks()) * math.prod(plan.tile) / math.prod(shape)
    # The bound, from the geometry: a lattice of tiles T overlapping by at least O needs
    # n = ceil((L - O) / (T - O)) tiles per axis, so the overlap share is prod(n T / L) - 1. A block
    # computes every tile that touches its core, so a tile astride one of the ceil(L / B) - 1 inner
    # block edges is computed twice; tiles start at least T - O >= T / 2 apart, so at most 2 tiles
    # straddle an edge: the margin is prod((n + 2 k) T / L) - prod(n T / L).
    n = [math.ceil((L - O) / (T - O)) if L > T else 1 for L, T, O in zip(shape, plan.tile, plan.overlap)]
    k = [math.ceil(L / B) - 1 for L, B in zip(shape, plan.block)]
    lattice = math.prod(m * T / L for m, T, L in zip(n, plan.tile, shape))
    bound = math.prod((m + 2 * e) * T / max(L, T) for m, e, T, L in zip(n, k, plan.tile, shape))
    assert per_voxel <= bound + 1e-9, (per_voxel, lattice, bound)
    assert per_voxel >= lattice - 1e-9  # every voxel is computed at least by the lattice


def test_window_is_positive_and_flat_inside():
    w = window((32, 32), (8, 8))
    assert (w > 0).all() and (w[8:24, 8:24] == 1).all()
    assert w[0, 0] < w[4, 4] < w[8, 8]


def test_noise_is_keyed_to_global_position():
    full = gaussian(7, 2, (0, 0), (64, 64))
    part = gaussian(7, 2, (10, 20), (30, 40))
    assert torch.equal(full[10:40, 20:60], part)
    assert not torch.equal(full, gaussian(7, 3, (0, 0), (64, 64)))
    assert not torch.equal(full, gaussian(8, 2, (0, 0), (64, 64)))
    neg = gaussian(7, 2, (-5, -5), (10, 10))
    assert torch.equal(neg[5:, 5:], full[:5, :5])


def test_noise_is_standard_normal_and_uncorrelated():
    x = gaussian(0, 0, (0, 0, 0), (32, 128, 128)).numpy()
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    assert abs((np.abs(x) > 1.96).mean() - 0.05) < 0.005
    for axis in range(3):
        a, b = np.moveaxis(x, axis, 0)[:-1].ravel(), np.moveaxis(x, axis, 0)[1:].ravel()
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.008  # ~6 standard errors
