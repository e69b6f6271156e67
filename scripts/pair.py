from flowrestore.cli import rule_script
from flowrestore.data.pairing import write_manifest

with rule_script(snakemake):
    write_manifest(snakemake.input.rows, snakemake.output.manifest)
