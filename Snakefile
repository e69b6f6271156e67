# flowrestore: pair -> convert -> train -> predict -> evaluate/calibrate -> report
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/pair.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.pair.output.manifest,
        expand(rules.convert.output.image, role=["input", "target"], acquisition=ACQUISITIONS),
        expand(rules.predict.output.prediction, model=MODELS, acquisition=TO_PREDICT),
        rules.report.output.html,
