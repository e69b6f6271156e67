rule train:
    input:
        # ancient: a new test acquisition rewrites the manifest but must not retrain the model
        manifest=ancient(rules.pair.output.manifest),
        images=converted("input", "train") + converted("target", "train") + converted("input", "val") + converted("target", "val"),
    output:
        checkpoint=f"{RESULTS}/models/{{model}}/checkpoint.pt",
        metrics=f"{RESULTS}/models/{{model}}/metrics.tsv",
        curve=report(f"{RESULTS}/models/{{model}}/loss.png", caption="../report/loss.rst", category="Training",
                     labels={"model": "{model}"}),
    params:
        model=lambda w: MODELS[w.model],
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
    conda:
        ENV
    script:
        "../../scripts/train.py"
