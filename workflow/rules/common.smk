# Config validation and the pairing plan: everything here runs when the workflow is parsed,
# so a bad key or a missing partner stops the run before any job starts.
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from flowrestore.config import check_sizes, model_settings, resolve_paths, result_settings, without_runtime
from flowrestore.errors import InputError
from flowrestore.methods import method_class
from flowrestore.data.pairing import plan_pairs


validate(config, "../schemas/config.schema.yaml")
# Relative paths are read against the config file that sets them, and written in one spelling, so
# an absolute or relative spelling of the same folder plans no job.
PATH_SOURCES = resolve_paths(config, workflow.configfiles, workflow.overwrite_configfiles,
                             workflow.config_settings.config)

RESULTS = config["results"]
ENV = "../../envs/flowrestore.yaml"


def demo_pairs():
    """The demo's acquisition names are known up front, so its files can be rule outputs."""
    data = config["data"]
    return [
        (name, *(os.path.join(data["folder"], data[f"{role}_pattern"].format(acquisition=name)) for role in ("input", "target")), None)
        for name in (f"demo{i:03d}" for i in range(config["demo"]["acquisitions"]))
    ]


try:
    PAIRS = plan_pairs(config["data"], demo_pairs() if config["demo"]["make"] else None,
                       settings_file=PATH_SOURCES.get("data.folder", "your config file"))
except InputError as error:
    raise WorkflowError(str(error)) from None

PAIR = {p.acquisition: p for p in PAIRS}
ACQUISITIONS = sorted(PAIR)


wildcard_constraints:
    acquisition="[A-Za-z0-9][A-Za-z0-9._-]*",
    role="input|target",
    model="[A-Za-z0-9][A-Za-z0-9_-]*",
    shard="[0-9]+",


def source_file(wildcards):
    return getattr(PAIR[wildcards.acquisition], wildcards.role)


# ---------------------------------------------------------------- models and what they restore
try:  # every model's method options, net and train settings with the schema's defaults
    MODELS = model_settings(config, "your config file")
except InputError as error:
    raise WorkflowError(str(error)) from None
try:  # sizes that fail inside a network stop the run here, in one line naming the config file
    check_sizes(config, MODELS, workflow.configfiles, workflow.overwrite_configfiles)
except InputError as error:
    raise WorkflowError(str(error)) from None
SPLIT = {p.acquisition: p.split for p in PAIRS}
EXTRA = config["predict"]["acquisitions"]
for _name in EXTRA:
    if _name in PAIR:
        raise WorkflowError(f"config predict.acquisitions: {_name!r} is also a paired acquisition. Fix: give it another name")
TO_PREDICT = sorted([a for a in ACQUISITIONS if SPLIT[a] in config["predict"]["splits"]] + list(EXTRA))


def converted(role, split):
    return [f"{RESULTS}/convert/{role}/{a}.ome.zarr" for a in ACQUISITIONS if SPLIT[a] == split]


def predict_source(wildcards):
    if wildcards.acquisition in EXTRA:
        return EXTRA[wildcards.acquisition]
    return f"{RESULTS}/convert/input/{wildcards.acquisition}.ome.zarr"


SHARDS = list(range(config["predict"]["shards"]))
# What changes a prediction (not which acquisitions are predicted, nor how fast).
PREDICT_SETTINGS = result_settings("predict", config["predict"])


# ---------------------------------------------------------------- evaluation
TEST = [a for a in ACQUISITIONS if SPLIT[a] == "test"]
VAL = [a for a in ACQUISITIONS if SPLIT[a] == "val"]
# Models that draw posterior samples: their std is calibrated (the method says so, not its name).
STOCHASTIC = [m for m, settings in MODELS.items() if method_class(settings["method"]).stochastic]
EXAMPLES = TEST[: config["evaluate"]["examples"]]


def predictions(acquisitions, models=MODELS):
    return expand(rules.predict.output.prediction, model=models, acquisition=acquisitions)


def folder_of(manifest, name):
    """A results sub-folder, derived from an input path so the rules hold no hard-coded prefix."""
    return os.path.join(os.path.dirname(manifest), name)


def ancient_while_done(path, output, wildcards):
    """ancient(`path`) for a job whose `output` (a rule's output pattern, filled with `wildcards`) exists,
    `path` itself for one that has to run.

    ancient() keeps a finished output from being redone when `path` is rewritten. But Snakemake 9
    never schedules a job with a missing output whose only link to a job that reruns is an
    ancient() input: the run ends "100% done" without it (snakemake/snakemake#4166). A job whose
    output is missing runs anyway, so there the plain input changes nothing else.
    """
    return ancient(path) if os.path.exists(output.format(**wildcards)) else path


def calibration_for(wildcards):
    """The fitted calibration of a stochastic model, for every acquisition but those it is fitted on.

    ancient: refitting on new validation acquisitions applies to new predictions and does not
    redo finished ones (each prediction's metadata records the calibration it carries).
    """
    if wildcards.model in STOCHASTIC and wildcards.acquisition not in VAL:
        fit = rules.calibrate.output.calibration.format(**wildcards)
        return {"calibration": ancient_while_done(fit, rules.predict.output.prediction, wildcards)}
    return {}
