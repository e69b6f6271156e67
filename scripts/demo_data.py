from flowrestore.cli import rule_script
from flowrestore.data.simulate import write_demo

with rule_script(snakemake):
    data, demo = snakemake.params.data, snakemake.params.demo
    suffix = {role: data[f"{role}_pattern"].split("{acquisition}")[1] for role in ("input", "target")}
    write_demo(data["folder"], demo["acquisitions"], tuple(demo["shape"]), seed=demo["seed"],
               input_suffix=suffix["input"], target_suffix=suffix["target"])
