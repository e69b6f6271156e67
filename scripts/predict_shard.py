import logging

import torch  # noqa: F401  (imported before rule_script so it sets the thread count)

from flowrestore.atomic import write_text
from flowrestore.cli import rule_script
from flowrestore.inference.predict import run_shard

with rule_script(snakemake):
    res = snakemake.resources
    stats = run_shard(snakemake.input.checkpoint, snakemake.params.prediction, int(snakemake.wildcards.shard),
                      int(res.shards), res.device, batch=int(res.batch), group=int(res.group))
    logging.getLogger("flowrestore").info("shard done: %s", stats)
    write_text(snakemake.output.done, str(stats))
