from flowrestore.cli import rule_script
from flowrestore.data.io import convert

with rule_script(snakemake):
    convert(snakemake.input[0], snakemake.output.image, snakemake.params.chunks, snakemake.params.pixel_size)
