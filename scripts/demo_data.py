from flowrestore.cli import rule_script
from flowrestore.data.demo import make_demo

with rule_script(snakemake):
    make_demo(snakemake.params.demo, snakemake.params.data)
