import json

from flowrestore.analysis.calibration import judge_model, write_json
from flowrestore.cli import rule_script
from flowrestore.analysis.evaluate import pairs_of_split, write_tsv
from flowrestore.analysis.plots import calibration_curve

with rule_script(snakemake):
    fitted = json.loads(open(snakemake.input.calibration).read())
    pairs = pairs_of_split(snakemake.input.manifest, snakemake.params.convert, "test")
    summary, bins = judge_model(fitted, pairs, snakemake.params.predict, snakemake.params.max_pixels)
    write_json(summary, snakemake.output.summary)
    write_tsv(bins, snakemake.output.bins)
    calibration_curve(bins, summary, snakemake.output.plot)
