# Restoration is scattered over `predict.shards` jobs per acquisition that write disjoint chunks of
# one partial store; prepare creates it, gather publishes it. The small marker files are temp():
# once the prediction exists, Snakemake does not ask for them again.
rule predict_prepare:
    input:
        checkpoint=rules.train.output.checkpoint,
        image=predict_source,
    output:
        plan=temp(f"{RESULTS}/predict/{{model}}/.{{acquisition}}.plan.json"),
    params:
        settings=PREDICT_SETTINGS,
        normalize=config["normalize"],
        prediction=f"{RESULTS}/predict/{{model}}/{{acquisition}}.ome.zarr",
    log:
        f"{RESULTS}/logs/predict/{{model}}/{{acquisition}}.prepare.log",
    message:
        "Planning the restoration of {wildcards.acquisition} with {wildcards.model}"
    conda:
        ENV
    script:
        "../../scripts/predict_prepare.py"


rule predict_shard:
    input:
        plan=rules.predict_prepare.output.plan,
        checkpoint=rules.train.output.checkpoint,
    output:
        done=temp(f"{RESULTS}/predict/{{model}}/.{{acquisition}}.shard{{shard}}.done"),
    params:
        prediction=f"{RESULTS}/predict/{{model}}/{{acquisition}}.ome.zarr",
    log:
        f"{RESULTS}/logs/predict/{{model}}/{{acquisition}}.shard{{shard}}.log",
    message:
        "Restoring {wildcards.acquisition} with {wildcards.model} (shard {wildcards.shard})"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
        # runtime settings: they change no output, so they are not params
        shards=len(SHARDS),
        device=config["predict"]["device"],
        batch=config["predict"]["batch"],
        group=config["predict"]["group"],
    conda:
        ENV
    script:
        "../../scripts/predict_shard.py"


rule predict:
    input:
        unpack(calibration_for),
        shards=expand(rules.predict_shard.output.done, shard=SHARDS, allow_missing=True),
    output:
        prediction=directory(f"{RESULTS}/predict/{{model}}/{{acquisition}}.ome.zarr"),
    log:
        f"{RESULTS}/logs/predict/{{model}}/{{acquisition}}.gather.log",
    message:
        "Finishing the restoration of {wildcards.acquisition} with {wildcards.model}"
    conda:
        ENV
    script:
        "../../scripts/predict_gather.py"
