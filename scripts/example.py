from flowrestore.cli import rule_script
from flowrestore.analysis.evaluate import example_panels, lateral_pixel_size, pairs_of_split
from flowrestore.analysis.plots import example_crops

with rule_script(snakemake):
    acquisition = snakemake.wildcards.acquisition
    pairs = {p.acquisition: p for s in ("test", "val", "train") for p in pairs_of_split(
        snakemake.input.manifest, snakemake.params.convert, s, required=False)}
    pair = pairs[acquisition]
    panels = example_panels(pair, snakemake.params.predict, snakemake.params.models, snakemake.params.crop)
    example_crops(panels, snakemake.output.figure, title=acquisition, pixel_size=lateral_pixel_size(pair.pixel_size))
