rule train:
    input:
        # ancient: a new test acquisition rewrites the manifest but must not retrain the model
        manifest=lambda w: ancient_while_done(rules.pair.output.manifest, rules.train.output.checkpoint, w),
        images=training_images,
        # the forward operator is checked when the method is built; a new kernel does not retrain the prior
        psf=lambda w: [ancient_while_done(p, rules.train.output.checkpoint, w) for p in model_psfs(w)],
    output:
        checkpoint=f"{RESULTS}/models/{{model}}/checkpoint.pt",
        metrics=f"{RESULTS}/models/{{model}}/metrics.tsv",
        curve=report(f"{RESULTS}/models/{{model}}/loss.png", caption="../report/loss.rst", category="Training",
                     labels={"model": "{model}"}),
    params:
        # runtime settings (workers, device, compile) come as resources: they change no output
        model=lambda w: MODELS[w.model] | {"train": result_settings("train", MODELS[w.model]["train"])},
        images=lambda w, input: os.path.dirname(os.path.dirname(input.images[0])),
    log:
        f"{RESULTS}/logs/train/{{model}}.log",
    message:
        "Training model {wildcards.model}"
    threads: 8
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
        device=lambda w: MODELS[w.model]["train"]["device"],
        workers=lambda w: MODELS[w.model]["train"]["workers"],
        compile=lambda w: int(MODELS[w.model]["train"]["compile"]),
    conda:
        ENV
    script:
        "../../scripts/train.py"
