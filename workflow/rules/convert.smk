rule convert:
    input:
        source_file,
    output:
        image=directory(f"{RESULTS}/convert/{{role}}/{{acquisition}}.ome.zarr"),
    params:
        chunks=config["convert"]["chunks"],
        pixel_size=config["data"]["pixel_size"],
    log:
        f"{RESULTS}/logs/convert/{{role}}/{{acquisition}}.log",
    message:
        "Converting the {wildcards.role} of {wildcards.acquisition} to OME-Zarr"
    conda:
        ENV
    script:
        "../../scripts/convert.py"
