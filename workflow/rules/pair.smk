if config["demo"]["make"]:

    rule demo_data:
        output:
            [path for pair in PAIRS for path in (pair.input, pair.target, pair.truth) if path],
            demo_files(config["demo"], config["data"]),
        params:
            demo=demo_settings(config["demo"]),
            data={k: config["data"][k] for k in ("folder", "input_pattern", "target_pattern", "truth_pattern")},
        log:
            f"{RESULTS}/logs/demo_data.log",
        message:
            "Simulating {params.demo[acquisitions]} demo acquisitions ({params.demo[kind]})"
        conda:
            ENV
        script:
            "../../scripts/demo_data.py"


rule check_pair:
    input:
        lambda w: [path for path in (PAIR[w.acquisition].input, PAIR[w.acquisition].target, PAIR[w.acquisition].truth) if path],
    output:
        row=f"{RESULTS}/pairs/{{acquisition}}.tsv",
    params:
        pair=lambda w: PAIR[w.acquisition],
        normalize=config["normalize"],
        tolerance=config["data"]["registration_tolerance"],
        pixel_size=config["data"]["pixel_size"],
    log:
        f"{RESULTS}/logs/check_pair/{{acquisition}}.log",
    message:
        "Checking the pair {wildcards.acquisition}"
    conda:
        ENV
    script:
        "../../scripts/check_pair.py"


rule pair:
    input:
        rows=expand(rules.check_pair.output.row, acquisition=ACQUISITIONS),
    output:
        manifest=f"{RESULTS}/pairs.tsv",
    log:
        f"{RESULTS}/logs/pair.log",
    message:
        "Writing the manifest of all pairs"
    conda:
        ENV
    script:
        "../../scripts/pair.py"
