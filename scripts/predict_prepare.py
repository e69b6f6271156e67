import json

import torch  # noqa: F401  (imported before rule_script so it sets the thread count)

from flowrestore.atomic import write_text
from flowrestore.cli import rule_script
from flowrestore.inference.predict import prepare

with rule_script(snakemake):
    norm = snakemake.params.normalize
    plan = prepare(snakemake.input.checkpoint, snakemake.input.image, snakemake.params.prediction,
                   snakemake.params.settings, low=norm["low"], high=norm["high"])
    write_text(snakemake.output.plan, json.dumps(plan, indent=1))
