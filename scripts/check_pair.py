from flowrestore.cli import rule_script
from flowrestore.data.pairing import check_pair, write_rows

with rule_script(snakemake):
    norm = snakemake.params.normalize
    row = check_pair(snakemake.params.pair, norm["low"], norm["high"], snakemake.params.tolerance,
                     snakemake.params.pixel_size)
    write_rows([row], snakemake.output.row)
