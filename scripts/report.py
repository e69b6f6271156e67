from flowrestore.cli import rule_script
from flowrestore.analysis.report import build_report, example_figures, kernel_figure, training_figures

with rule_script(snakemake):
    inp, params = snakemake.input, snakemake.params
    training = training_figures(dict(zip(params.models, inp.curves)))
    if inp.kernel:
        training.append(kernel_figure(inp.kernel[0], inp.kernel[1]))
    build_report(snakemake.output.html, params.config, inp.manifest, inp.metrics, inp.summary, inp.comparisons,
                 perception_png=inp.perception, calibration=list(zip(inp.calibration, inp.calibration_plots)),
                 examples=example_figures(inp.examples), training=training,
                 title=params.title, results=params.results, quality_tsv=inp.quality)
