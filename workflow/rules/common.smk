# Config validation and the pairing plan: everything here runs when the workflow is parsed,
# so a bad key or a missing partner stops the run before any job starts.
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from flowrestore.config import LEARNED, check_sizes, model_settings, resolve_paths, result_settings, settings, without_runtime
from flowrestore.errors import InputError
from flowrestore.methods import method_class
from flowrestore.data.demo import demo_files, demo_rows, demo_settings
from flowrestore.data.pairing import plan_pairs


validate(config, "../schemas/config.schema.yaml")
# Relative paths are read against the config file that sets them, and written in one spelling, so
# an absolute or relative spelling of the same folder plans no job.
PATH_SOURCES = resolve_paths(config, workflow.configfiles, workflow.overwrite_configfiles,
                             workflow.config_settings.config)

RESULTS = config["results"]
ENV = "../../envs/flowrestore.yaml"


try:  # the demo's acquisitions are known up front, so its files can be rule outputs
    DEMO = demo_rows(config["demo"], config["data"], "your config file") if config["demo"]["make"] else None
    PAIRS = plan_pairs(config["data"], DEMO, settings_file=PATH_SOURCES.get("data.folder", "your config file"))
except InputError as error:
    raise WorkflowError(str(error)) from None

PAIR = {p.acquisition: p for p in PAIRS}
ACQUISITIONS = sorted(PAIR)


wildcard_constraints:
    acquisition="[A-Za-z0-9][A-Za-z0-9._-]*",
    role="input|target|truth",
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
for _name, _settings in MODELS.items():  # references without an input can teach only a method that reads targets alone
    _bare = [p.acquisition for p in PAIRS if p.input is None and p.split in ("train", "val")]
    if _bare and method_class(_settings["method"]).data != "targets":
        raise WorkflowError(f"your config file: model {_name} (method {_settings['method']}) trains on input/target pairs, "
                            f"but {len(_bare)} train/val acquisitions have no input (e.g. {_bare[0]}). Fix: give them "
                            "inputs, or use a method that learns from references alone (relative_flow)")
EXTRA = config["predict"]["acquisitions"]
for _name in EXTRA:
    if _name in PAIR:
        raise WorkflowError(f"config predict.acquisitions: {_name!r} is also a paired acquisition. Fix: give it another name")
TO_PREDICT = sorted([a for a in ACQUISITIONS if SPLIT[a] in config["predict"]["splits"]] + list(EXTRA))


def converted(role, split):
    """The converted images of one role (input, target, truth) of the acquisitions of `split` that have it."""
    return [f"{RESULTS}/convert/{role}/{a}.ome.zarr" for a in ACQUISITIONS
            if SPLIT[a] == split and getattr(PAIR[a], role)]


def predict_source(wildcards):
    """What is restored: an extra file, the input, or the reference of an acquisition without input."""
    if wildcards.acquisition in EXTRA:
        return EXTRA[wildcards.acquisition]
    role = "input" if PAIR[wildcards.acquisition].input else "target"
    return f"{RESULTS}/convert/{role}/{wildcards.acquisition}.ome.zarr"


# ---------------------------------------------------------------- an unknown blur kernel (DDM4IP)
KERNEL = config["kernel"]
LEARNED_KERNEL = f"{RESULTS}/kernel/kernel.tif"
if KERNEL["learn"]:
    try:
        KERNEL_SETTINGS = settings("$defs.ddm4ip", KERNEL["ddm4ip"], "your config file (kernel.ddm4ip)")
    except InputError as error:
        raise WorkflowError(str(error)) from None
    if set(KERNEL["degraded_splits"]) & set(KERNEL["clean_splits"]):
        raise WorkflowError("your config file: kernel.degraded_splits and kernel.clean_splits share a split; DDM4IP learns "
                            "from unpaired sets. Fix: make them disjoint (e.g. degraded [test], clean [train, val])")
    DEGRADED = [path for split in KERNEL["degraded_splits"] for path in converted("input", split)]
    CLEAN = [path for split in KERNEL["clean_splits"] for path in converted("target", split)]
    for _what, _paths, _splits in (("inputs", DEGRADED, "degraded_splits"), ("targets", CLEAN, "clean_splits")):
        if not _paths:
            raise WorkflowError(f"your config file: no acquisition of kernel.{_splits} {KERNEL[_splits]} has {_what} "
                                f"to learn the kernel from. Fix: choose other splits in kernel.{_splits}")


def psf_file(value, where: str):
    """A PSF setting as a file: `learned` is rule learn_kernel's kernel; other strings are files; numbers stay."""
    if value != LEARNED:
        return value
    if not KERNEL["learn"]:
        raise WorkflowError(f"your config file: {where} is `learned`, but no kernel is learned. Fix: set kernel.learn: "
                            "true (with kernel.degraded_splits and kernel.clean_splits), or give a PSF file")
    return LEARNED_KERNEL


for _name, _settings in MODELS.items():
    if _settings["options"].get("psf"):
        _settings["options"]["psf"] = psf_file(_settings["options"]["psf"], f"models.{_name}.options.psf")


def model_psfs(wildcards):
    """The PSF file a model's forward operator reads, if any (a new kernel redoes its predictions)."""
    psf = MODELS[wildcards.model]["options"].get("psf")
    return [psf] if psf else []


EVALUATE_PSFS = {label: psf_file(value, f"evaluate.psfs.{label}") for label, value in config["evaluate"]["psfs"].items()}

SHARDS = list(range(config["predict"]["shards"]))
# What changes a prediction (not which acquisitions are predicted, nor how fast).
PREDICT_SETTINGS = result_settings("predict", config["predict"])


# ---------------------------------------------------------------- evaluation
TEST = [a for a in ACQUISITIONS if SPLIT[a] == "test"]
# Scored: a test acquisition with an input (scored against its target or truth) or with a truth (its
# restored reference scored against it); references alone cannot be scored, so then there is no report.
SCORED = [a for a in TEST if PAIR[a].input or PAIR[a].truth]
VAL = [a for a in ACQUISITIONS if SPLIT[a] == "val"]
# Models that draw posterior samples: their std is calibrated (the method says so, not its name).
STOCHASTIC = [m for m, settings in MODELS.items() if method_class(settings["method"]).stochastic]
EXAMPLES = SCORED[: config["evaluate"]["examples"]]


def scored_images(acquisitions):
    """The converted images scoring reads: each acquisition's restored image and what it is scored against
    (its truth, else its target); the layout matches evaluate.pairs_of_split."""
    out = []
    for a in acquisitions:
        pair = PAIR[a]
        out += [f"{RESULTS}/convert/{'input' if pair.input else 'target'}/{a}.ome.zarr",
                f"{RESULTS}/convert/{'truth' if pair.truth else 'target'}/{a}.ome.zarr"]
    return out


def training_images(wildcards):
    """The converted train and val images a model reads: targets, and inputs unless its method reads targets alone."""
    roles = ("target",) if method_class(MODELS[wildcards.model]["method"]).data == "targets" else ("input", "target")
    return [path for split in ("train", "val") for role in roles for path in converted(role, split)]


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
