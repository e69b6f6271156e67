# One self-contained HTML file (figures embedded) that closes the run.
rule report:
    input:
        manifest=rules.pair.output.manifest,
        metrics=rules.evaluate.output.metrics,
        summary=rules.evaluate.output.summary,
        comparisons=rules.evaluate.output.comparisons,
        quality=rules.evaluate.output.quality,
        perception=rules.evaluate.output.perception_plot,
        examples=expand(rules.example.output.figure, acquisition=EXAMPLES),
        calibration=expand(rules.judge_calibration.output.summary, model=STOCHASTIC),
        calibration_plots=expand(rules.judge_calibration.output.plot, model=STOCHASTIC),
        curves=expand(rules.train.output.curve, model=MODELS),
        kernel=[rules.learn_kernel.output.plot, rules.learn_kernel.output.metrics] if KERNEL["learn"] else [],
    output:
        html=f"{RESULTS}/report/report.html",
    params:
        config=without_runtime(config),
        models=list(MODELS),
        stochastic=STOCHASTIC,
        title=config["report"]["title"],
        results=lambda w, output: os.path.dirname(os.path.dirname(output.html)),
    log:
        f"{RESULTS}/logs/report.log",
    message:
        "Writing the HTML report"
    conda:
        ENV
    script:
        "../../scripts/report.py"
