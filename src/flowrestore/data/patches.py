"""Training patches from the OME-Zarr stores of the train split.

A batch is a pure function of (seed, step): a resumed training sees exactly the batches it
would have seen, whatever the number of loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import zarr

from ..errors import InputError
from .normalize import Normalization

# Images up to this size are decoded once per worker; larger ones are read patch by patch.
CACHE_BYTES = 512 * 2**20


@dataclass
class Acquisition:
    name: str
    input_path: str | None  # None: a reference without an input (methods that train on targets alone)
    target_path: str
    input_norm: Normalization
    target_norm: Normalization

    def open(self, targets_only: bool = False) -> tuple[np.ndarray | zarr.Array, np.ndarray | zarr.Array]:
        """(input, target) arrays; with `targets_only` the input is not opened and the target stands in for it."""
        arrays = []
        for path in (self.target_path,) * 2 if targets_only else (self.input_path, self.target_path):
            a = zarr.open_group(path, mode="r")["0"]
            arrays.append(a[...] if a.nbytes <= CACHE_BYTES else a)
        return arrays[0], arrays[1]


class PatchBatches(torch.utils.data.Dataset):
    """`dataset[step]` is the batch (degraded, target) of that training step, normalised, float32.

    `targets_only`: only the target role is read (a method trained on references alone); the
    degraded slot then holds the target patch too, which such a method does not read.
    """

    def __init__(self, acquisitions: list[Acquisition], patch_size: tuple[int, ...], batch_size: int,
                 seed: int = 0, foreground: float = 0.5, augment: bool = True, candidates: int = 8,
                 targets_only: bool = False):
        if not acquisitions:
            raise InputError(None, "no acquisitions to train on", "check that the train split is not empty")
        self.acquisitions = acquisitions
        self.patch_size = tuple(patch_size)
        self.batch_size = batch_size
        self.seed = seed
        self.foreground = foreground
        self.augment = augment
        self.candidates = candidates
        self.targets_only = targets_only
        self._arrays = None  # opened lazily in each worker process
        for acq in acquisitions:
            path = acq.target_path if targets_only else acq.input_path
            shape = zarr.open_group(path, mode="r")["0"].shape
            if len(shape) != len(self.patch_size) or any(s < p for s, p in zip(shape, self.patch_size)):
                raise InputError(path, f"image shape {shape} is smaller than the patch size {self.patch_size}",
                                 "lower train.patch_size (a multiple of the network's downsampling factor)")

    def __len__(self) -> int:
        return 2**62

    def _open(self):
        if self._arrays is None:
            self._arrays = [a.open(self.targets_only) for a in self.acquisitions]
        return self._arrays

    def _corner(self, rng: np.random.Generator, target, shape) -> tuple[slice, ...]:
        """Random position; with probability `foreground`, the brightest of a few candidates.

        Biasing toward structure matters: microscopy fields are mostly dark background.
        """
        n = self.candidates if rng.random() < self.foreground else 1
        corners = [tuple(int(rng.integers(0, s - p + 1)) for s, p in zip(shape, self.patch_size)) for _ in range(n)]
        if n > 1:
            # Judge candidates on a strided preview of the target: cheap even when read from zarr.
            scores = [np.asarray(target[tuple(slice(c, c + p, max(1, p // 8)) for c, p in zip(cn, self.patch_size))]).mean()
                      for cn in corners]
            corners = [corners[int(np.argmax(scores))]]
        return tuple(slice(c, c + p) for c, p in zip(corners[0], self.patch_size))

    def _augment(self, rng: np.random.Generator, pair: np.ndarray) -> np.ndarray:
        # pair: (2, *spatial); flips on every spatial axis, rot90 in the YX plane (square patches).
        for axis in range(1, pair.ndim):
            if rng.random() < 0.5:
                pair = np.flip(pair, axis)
        if self.patch_size[-1] == self.patch_size[-2]:
            pair = np.rot90(pair, int(rng.integers(4)), axes=(-2, -1))
        return pair

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(step)])
        arrays = self._open()
        out = np.empty((self.batch_size, 2, *self.patch_size), dtype=np.float32)
        for i in range(self.batch_size):
            k = int(rng.integers(len(arrays)))
            inp, tgt = arrays[k]
            region = self._corner(rng, tgt, inp.shape)
            acq = self.acquisitions[k]
            pair = np.stack([acq.input_norm.apply(np.asarray(inp[region], dtype=np.float32)),
                             acq.target_norm.apply(np.asarray(tgt[region], dtype=np.float32))])
            out[i] = self._augment(rng, pair) if self.augment else pair
        batch = torch.from_numpy(out)
        return batch[:, :1], batch[:, 1:]


def acquisitions_from_manifest(rows: list[dict], images: str, split: str) -> list[Acquisition]:
    """Acquisitions of one split; `images` is the convert folder holding {role}/{pair_id}.ome.zarr.

    A row without an input (a reference alone) gives input_path None."""
    return [
        Acquisition(r["pair_id"], f"{images}/input/{r['pair_id']}.ome.zarr" if r.get("input") else None,
                    f"{images}/target/{r['pair_id']}.ome.zarr",
                    Normalization(float(r["input_low"]), float(r["input_high"])),
                    Normalization(float(r["target_low"]), float(r["target_high"])))
        for r in rows if r["split"] == split
    ]
