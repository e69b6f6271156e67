from flowrestore.cli import rule_script
from flowrestore.analysis.evaluate import baselines, frc_unit, pairs_of_split, read_tsv, run
from flowrestore.analysis.plots import perception_distortion

with rule_script(snakemake):
    out = snakemake.output
    run(snakemake.input.manifest, snakemake.params.convert, snakemake.params.predict, snakemake.params.models,
        out.metrics, out.summary, out.perception, out.comparisons, out.quality, snakemake.params.settings)
    unit = frc_unit(pairs_of_split(snakemake.input.manifest, snakemake.params.convert))
    perception_distortion(read_tsv(out.perception), baselines(read_tsv(out.summary)), out.perception_plot, unit)
