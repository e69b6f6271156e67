from flowrestore.calibration import calibrate_model, write_results
from flowrestore.cli import rule_script
from flowrestore.evaluate import pairs_of_split
from flowrestore.plots import calibration_curve

with rule_script(snakemake):
    settings = snakemake.params.settings
    manifest, convert = snakemake.input.manifest, snakemake.params.convert
    summary, bins = calibrate_model(snakemake.wildcards.model, pairs_of_split(manifest, convert, "val"),
                                    pairs_of_split(manifest, convert, "test"), snakemake.params.predict,
                                    settings["method"], settings["bins"], settings["max_pixels"])
    write_results(summary, bins, snakemake.output.summary, snakemake.output.bins)
    calibration_curve(bins, summary, snakemake.output.plot)
