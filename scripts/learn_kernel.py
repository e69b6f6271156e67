import torch  # noqa: F401  (imported before rule_script so it sets the thread count)

from pathlib import Path

from flowrestore.cli import rule_script
from flowrestore.physics.tasks import read_psf
from flowrestore.training.kernel import learn_kernel

with rule_script(snakemake):
    true_psf = read_psf(snakemake.input.true_psf, 2).numpy() if snakemake.input.true_psf else None
    learn_kernel(list(snakemake.input.degraded), list(snakemake.input.clean), Path(snakemake.output.kernel).parent,
                 snakemake.params.settings, true_kernel=true_psf)
