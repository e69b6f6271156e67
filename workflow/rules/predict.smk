# Restoration is scattered over `predict.shards` jobs per acquisition that write disjoint chunks of
# one partial store; prepare creates it, gather publishes it. The small marker files are temp():
# once the prediction exists, Snakemake does not ask for them again.
rule predict_prepare:
    input:
        checkpoint=rules.train.output.checkpoint,
        image=predict_source,
        psf=model_psfs,
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
        psf=model_psfs,
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


# One marker for all shards, so the gather's input set does not depend on predict.shards. This
# job's own input set does; the second marker, named by the shard count, keeps it from being
# replanned when only the count changes: Snakemake compares a job's recorded inputs only when every
# output of it has a record, and a count not used before has none.
rule predict_shards_done:
    input:
        expand(rules.predict_shard.output.done, shard=SHARDS, allow_missing=True),
    output:
        done=temp(f"{RESULTS}/predict/{{model}}/.{{acquisition}}.restored"),
        by_count=temp(f"{RESULTS}/predict/{{model}}/.{{acquisition}}.restored-{len(SHARDS)}-shards"),
    log:
        f"{RESULTS}/logs/predict/{{model}}/{{acquisition}}.shards_done.log",
    localrule: True
    conda:
        ENV
    shell:
        "touch {output} && echo 'all shards of {wildcards.acquisition} restored' > {log}"


rule predict:
    input:
        unpack(calibration_for),
        restored=rules.predict_shards_done.output.done,
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
