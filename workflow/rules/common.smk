# Config validation and the pairing plan: everything here runs when the workflow is parsed,
# so a bad key or a missing partner stops the run before any job starts.
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from flowrestore.errors import InputError
from flowrestore.pairing import plan_pairs


validate(config, "../schemas/config.schema.yaml")

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
    PAIRS = plan_pairs(config["data"], demo_pairs() if config["demo"]["make"] else None)
except InputError as error:
    raise WorkflowError(str(error)) from None

PAIR = {p.acquisition: p for p in PAIRS}
ACQUISITIONS = sorted(PAIR)


wildcard_constraints:
    acquisition="[A-Za-z0-9][A-Za-z0-9._-]*",
    role="input|target",


def source_file(wildcards):
    return getattr(PAIR[wildcards.acquisition], wildcards.role)
