from flowrestore.cli import rule_script
from flowrestore.data.simulate import write_demo
from flowrestore.data.simulate_operators import write_known_demo

with rule_script(snakemake):
    data, demo = snakemake.params.data, snakemake.params.demo
    suffix = {role: data[f"{role}_pattern"].split("{acquisition}")[1] for role in ("input", "target")}
    common = dict(seed=demo["seed"], input_suffix=suffix["input"], target_suffix=suffix["target"])
    if demo["kind"] == "haze":
        write_demo(data["folder"], demo["acquisitions"], tuple(demo["shape"]), **common)
    else:
        write_known_demo(data["folder"], demo["acquisitions"], tuple(demo["shape"]), demo["kind"], factor=demo["factor"],
                         sigma=demo["sigma"], photons=demo["photons"], **common)
