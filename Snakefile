# flowrestore: pair -> convert -> (learn kernel) -> train -> predict -> evaluate/calibrate -> report
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# A bad setting stops the run in one line naming the config file, the key and the fix;
# common.smk then validates the config again and fills in the defaults.
from flowrestore.config import check_config
from flowrestore.errors import InputError

try:
    check_config(config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"),
                 workflow.configfiles, workflow.overwrite_configfiles)
except InputError as error:
    raise WorkflowError(str(error)) from None


include: "workflow/rules/common.smk"
include: "workflow/rules/pair.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/kernel.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.pair.output.manifest,
        # every converted image is pulled in by the rules that read it
        expand(rules.predict.output.prediction, model=MODELS, acquisition=TO_PREDICT),
        LEARNED_KERNEL if KERNEL["learn"] else [],
        # references alone (no input, no truth) cannot be scored: then there is no report
        rules.report.output.html if SCORED else [],
