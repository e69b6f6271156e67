from flowrestore.analysis.calibration import calibrate_model, write_json
from flowrestore.cli import rule_script
from flowrestore.analysis.evaluate import pairs_of_split

with rule_script(snakemake):
    settings = snakemake.params.settings
    pairs = pairs_of_split(snakemake.input.manifest, snakemake.params.convert, "val")
    fitted = calibrate_model(snakemake.wildcards.model, pairs, snakemake.params.predict, settings["method"],
                             settings["bins"], settings["max_pixels"])
    write_json(fitted, snakemake.output.calibration)
