# Scoring on the test split, and calibration of each guided model's uncertainty (fitted on val,
# judged on test). Needs the predictions of the val and test acquisitions of every model.
rule evaluate:
    input:
        manifest=rules.pair.output.manifest,
        images=scored_images(SCORED),
        predictions=predictions(SCORED),
        psfs=[psf for psf in EVALUATE_PSFS.values() if isinstance(psf, str)],
    output:
        metrics=report(f"{RESULTS}/evaluate/metrics.tsv", caption="../report/metrics.rst", category="Evaluation",
                       labels={"table": "per test image"}),
        summary=report(f"{RESULTS}/evaluate/summary.tsv", caption="../report/summary.rst", category="Evaluation",
                       labels={"table": "mean per estimate"}),
        comparisons=report(f"{RESULTS}/evaluate/comparisons.tsv", caption="../report/comparisons.rst", category="Evaluation",
                           labels={"table": "paired differences"}),
        quality=report(f"{RESULTS}/evaluate/quality.tsv", caption="../report/quality.rst", category="Evaluation",
                       labels={"table": "per input quality"}),
        perception=f"{RESULTS}/evaluate/perception_distortion.tsv",
        perception_plot=report(f"{RESULTS}/evaluate/perception_distortion.png", caption="../report/perception.rst",
                               category="Evaluation", labels={"figure": "samples averaged"}),
    params:
        models={m: s["method"] for m, s in MODELS.items()},
        convert=lambda w, input: folder_of(input.manifest, "convert"),
        predict=lambda w, input: folder_of(input.manifest, "predict"),
        settings={k: config["evaluate"][k] for k in ("psf_sigma", "rl_iterations")} | {"psfs": EVALUATE_PSFS},
    log:
        f"{RESULTS}/logs/evaluate.log",
    message:
        f"Scoring the {len(SCORED)} test acquisitions of every model"
    conda:
        ENV
    script:
        "../../scripts/evaluate.py"


rule example:
    input:
        manifest=rules.pair.output.manifest,
        images=lambda w: scored_images([w.acquisition]),
        predictions=expand(rules.predict.output.prediction, model=MODELS, allow_missing=True),
    output:
        figure=report(f"{RESULTS}/evaluate/examples/{{acquisition}}.png", caption="../report/example.rst",
                      category="Examples", labels={"acquisition": "{acquisition}"}),
    params:
        models={m: s["method"] for m, s in MODELS.items()},
        convert=lambda w, input: folder_of(input.manifest, "convert"),
        predict=lambda w, input: folder_of(input.manifest, "predict"),
        crop=config["evaluate"]["crop"],
    log:
        f"{RESULTS}/logs/example/{{acquisition}}.log",
    message:
        "Drawing the example crops of {wildcards.acquisition}"
    conda:
        ENV
    script:
        "../../scripts/example.py"


rule calibrate:
    input:
        # ancient: a new test acquisition rewrites the manifest but must not refit (new val ones do)
        manifest=lambda w: ancient_while_done(rules.pair.output.manifest, rules.calibrate.output.calibration, w),
        images=scored_images(VAL),
        val=expand(rules.predict.output.prediction, acquisition=VAL, allow_missing=True),
    output:
        calibration=report(f"{RESULTS}/calibration/{{model}}/fit.json", caption="../report/calibration_json.rst",
                           category="Calibration", labels={"model": "{model}", "file": "fitted calibration"}),
    params:
        settings=config["calibrate"],
        convert=lambda w, input: folder_of(input.manifest, "convert"),
        predict=lambda w, input: folder_of(input.manifest, "predict"),
    log:
        f"{RESULTS}/logs/calibrate/{{model}}.log",
    message:
        "Calibrating the uncertainty of {wildcards.model} on the validation split"
    conda:
        ENV
    script:
        "../../scripts/calibrate.py"


# Judged on test predictions, which already carry the calibration: fitting and judging are separate
# jobs, so the test images cannot leak into the fit.
rule judge_calibration:
    input:
        manifest=rules.pair.output.manifest,
        calibration=rules.calibrate.output.calibration,
        images=scored_images(TEST),
        test=expand(rules.predict.output.prediction, acquisition=TEST, allow_missing=True),
    output:
        summary=report(f"{RESULTS}/calibration/{{model}}/test.json", caption="../report/calibration_json.rst",
                       category="Calibration", labels={"model": "{model}", "file": "UCE and coverage"}),
        bins=report(f"{RESULTS}/calibration/{{model}}/bins.tsv", caption="../report/calibration_bins.rst",
                    category="Calibration", labels={"model": "{model}", "file": "bins"}),
        plot=report(f"{RESULTS}/calibration/{{model}}/curve.png", caption="../report/calibration.rst",
                    category="Calibration", labels={"model": "{model}", "file": "curve"}),
    params:
        max_pixels=config["calibrate"]["max_pixels"],
        convert=lambda w, input: folder_of(input.manifest, "convert"),
        predict=lambda w, input: folder_of(input.manifest, "predict"),
    log:
        f"{RESULTS}/logs/calibrate/{{model}}.test.log",
    message:
        "Judging the calibrated uncertainty of {wildcards.model} on the test split"
    conda:
        ENV
    script:
        "../../scripts/judge_calibration.py"
