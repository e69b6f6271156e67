from flowrestore.cli import rule_script
from flowrestore.inference.predict import finalize

with rule_script(snakemake):
    finalize(snakemake.output.prediction, snakemake.input.get("calibration"))
