"""DDM4IP stages 1 and 2 on files (training.kernel.learn_kernel): outputs and exact resume."""

import numpy as np
import pytest
import tifffile
import torch

from flowrestore.methods import ddm4ip as D
from flowrestore.physics.blur import Blur, gaussian_kernel
from flowrestore.training.kernel import learn_kernel

FAST = {"size": 7, "stage1_steps": 3, "stage2_steps": 4, "batch_size": 2, "patch_size": 32, "channels": 4,
        "checkpoint_every": 1, "range": [0, 100]}


def _sets(folder, n=3, shape=(48, 48)):
    """Clean images and, from other images, their blur by an anisotropic Gaussian: unpaired TIFF sets."""
    rng = np.random.default_rng(0)
    psf = gaussian_kernel((2.0, 1.0), 2, angle=30.0, size=7)
    clean, degraded = [], []
    for i in range(n):
        for kind, out in (("clean", clean), ("degraded", degraded)):
            x = rng.random(shape) * 100
            if kind == "degraded":
                x = Blur(psf.double()).A(torch.from_numpy(x)[None, None])[0, 0].numpy()
            path = folder / f"{kind}{i}.tif"
            tifffile.imwrite(path, x.astype(np.float32))
            out.append(path)
    return degraded, clean, psf.numpy()


def test_kernel_learning_writes_a_normalised_kernel_and_resumes_exactly(tmp_path, monkeypatch):
    degraded, clean, psf = _sets(tmp_path)
    whole = learn_kernel(degraded, clean, tmp_path / "whole", FAST, true_kernel=psf)
    k = tifffile.imread(whole)
    assert k.shape == (7, 7) and k.sum() == pytest.approx(1.0, abs=1e-5) and (tmp_path / "whole" / "kernel.png").exists()
    lines = (tmp_path / "whole" / "metrics.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["stage", "step", "loss", "kernel_error"] and lines[-1].startswith("2\t4\t")

    # Interrupted in stage 2 after its second step, then run again: the same kernel, bit for bit.
    real_step = D.KernelLearner.step

    def failing(self, *args):
        if self.steps == 2:
            raise KeyboardInterrupt
        return real_step(self, *args)

    monkeypatch.setattr(D.KernelLearner, "step", failing)
    with pytest.raises(KeyboardInterrupt):
        learn_kernel(degraded, clean, tmp_path / "resumed", FAST, true_kernel=psf)
    assert not (tmp_path / "resumed" / "kernel.tif").exists()  # nothing half-written
    monkeypatch.setattr(D.KernelLearner, "step", real_step)
    resumed = learn_kernel(degraded, clean, tmp_path / "resumed", FAST, true_kernel=psf)
    assert tifffile.imread(resumed).tobytes() == k.tobytes()


def test_kernel_learning_refuses_stacks(tmp_path):
    from flowrestore.errors import InputError

    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 40, 40), np.float32), metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "plane.tif", np.zeros((40, 40), np.float32))
    with pytest.raises(InputError, match="3D image"):
        learn_kernel([tmp_path / "stack.tif"], [tmp_path / "plane.tif"], tmp_path / "out", FAST)


def test_learn_kernel_from_the_command_line(tmp_path):
    import yaml

    from flowrestore.cli import main

    degraded, clean, psf = _sets(tmp_path)
    tifffile.imwrite(tmp_path / "psf.tif", psf.astype(np.float32))
    (tmp_path / "k.yaml").write_text(yaml.safe_dump({"ddm4ip": FAST}))
    code = main(["learn-kernel", str(tmp_path / "out"), "--degraded", *map(str, degraded), "--clean", *map(str, clean),
                 "--config", str(tmp_path / "k.yaml"), "--true-kernel", str(tmp_path / "psf.tif")])
    assert code == 0 and tifffile.imread(tmp_path / "out" / "kernel.tif").shape == (7, 7)
    assert (tmp_path / "out" / "metrics.tsv").read_text().splitlines()[-1].split("\t")[3] != ""  # scored
