import torch  # noqa: F401  (imported before rule_script so it sets the thread count)

from pathlib import Path

from flowrestore.cli import rule_script
from flowrestore.data.pairing import read_rows
from flowrestore.data.patches import acquisitions_from_manifest
from flowrestore.training.loop import train_model

with rule_script(snakemake):
    rows = read_rows(snakemake.input.manifest)
    model = snakemake.params.model
    res = snakemake.resources
    runtime = {"device": res.device, "workers": int(res.workers), "compile": bool(int(res.compile))}
    split = lambda name: acquisitions_from_manifest(rows, snakemake.params.images, name)  # noqa: E731
    train_model(snakemake.wildcards.model, model["method"], model["net"], model["train"] | runtime, split("train"), split("val"),
                Path(snakemake.output.checkpoint).parent, method_options=model["options"])
