"""Command line and the shared frame of the Snakemake rule scripts.

Both turn an `InputError` into one line on stderr and a non-zero exit: the user sees which file
is wrong and how to fix it, not a traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback
from contextlib import contextmanager
from typing import Iterator

from .errors import InputError

log = logging.getLogger("flowrestore")


FORMAT = "%(asctime)s %(name)s %(message)s"


class _WithoutTraceback(logging.Formatter):
    """The console's formatter when there is a log file: the message only, the traceback goes to the file."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(logging.makeLogRecord(record.__dict__ | {"exc_info": None, "exc_text": None}))


def setup_logging(logfile: str | None = None, level: int = logging.INFO) -> None:
    console = logging.StreamHandler(sys.stderr)
    handlers: list[logging.Handler] = [console]
    if logfile:
        handlers.append(logging.FileHandler(logfile, mode="w"))
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
    if logfile:
        console.setFormatter(_WithoutTraceback(FORMAT))


def disk_full(error: OSError, outputs=()) -> InputError | None:
    """An InputError naming the full folder for ENOSPC/EDQUOT, else None.

    A write() on an open file raises ENOSPC without a file name; the folder is then that of the
    job's first output, where it was writing.
    """
    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    target = error.filename or error.filename2 or (list(outputs)[0] if len(outputs) else None)
    folder = os.path.dirname(os.path.abspath(os.fspath(target))) if target else os.getcwd()
    kind = "no space left on the device" if error.errno == errno.ENOSPC else "disk quota exceeded"
    return InputError(folder, f"{kind} holding this folder", "free space there (or move the results to a larger "
                      "disk) and rerun: finished jobs, finished prediction blocks and the last training state are kept, "
                      "so the rerun resumes where it stopped")


@contextmanager
def rule_script(snakemake) -> Iterator[None]:
    """Frame of every rule script: log to the rule's log file, one-line errors, thread count.

    Every error ends in the log file: an InputError (or a full disk) as one line, anything else as
    one line on the console and its traceback in the log file.
    """
    logfile = snakemake.log[0] if len(snakemake.log) else None
    setup_logging(logfile)
    if "torch" in sys.modules:  # only the scripts that need torch pay for importing it
        sys.modules["torch"].set_num_threads(max(1, int(snakemake.threads)))
    try:
        yield
    except InputError as error:
        log.error("error: %s", error)
        sys.exit(1)
    except Exception as error:
        full = disk_full(error, getattr(snakemake, "output", ())) if isinstance(error, OSError) else None
        if full is not None:
            log.error("error: %s", full, exc_info=error)
        else:
            brief = " ".join(traceback.format_exception_only(type(error), error)[-1].split())
            log.error("error: %s%s", brief, f" (traceback in {logfile})" if logfile else "", exc_info=error)
        sys.exit(1)


PREDICT_ONLY_IN_WORKFLOW = ("splits", "acquisitions", "shards")  # which acquisitions and jobs: workflow settings


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flowrestore")
    except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
        return "unknown (not installed)"


def _schema_option(parser: argparse.ArgumentParser, name: str, schema: dict, section: str) -> None:
    """One option whose type, choices, default and help come from the config schema."""
    types = schema.get("type", [])
    types = types if isinstance(types, list) else [types]
    default = schema.get("default")
    flag = "--" + name.replace("_", "-")
    text = (schema.get("description", "") + f" [{section}.{name}]").strip()
    kwargs: dict = {"default": default, "help": " ".join(text.split()).replace("%", "%%")}
    if "boolean" in types:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif "array" in types:  # one value for every axis, or one per axis
        kwargs.update(nargs="+", type=int, metavar="N")
    else:
        kwargs["type"] = {"integer": int, "number": float}.get(types[0], str) if types else str
        if "enum" in schema:
            kwargs["choices"] = schema["enum"]
    parser.add_argument(flag, dest=name, **kwargs)


def _per_axis(value):
    """A one-value list is that value for every axis (the schema's integer form)."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def build_parser() -> argparse.ArgumentParser:
    from .config import load_schema

    schema = load_schema()["properties"]
    defaults = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="flowrestore", description=__doc__.splitlines()[0],
                                     epilog="Defaults come from the workflow's config schema "
                                            "(workflow/schemas/config.schema.yaml).")
    parser.add_argument("--version", action="version", version=f"flowrestore {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="write simulated widefield/confocal TIFF pairs", formatter_class=defaults)
    p.add_argument("folder")
    p.add_argument("-n", "--acquisitions", type=int, default=schema["demo"]["properties"]["acquisitions"]["default"])
    p.add_argument("--shape", type=int, nargs="+", default=schema["demo"]["properties"]["shape"]["default"])
    p.add_argument("--seed", type=int, default=schema["demo"]["properties"]["seed"]["default"])

    p = sub.add_parser("convert", help="store an image as chunked OME-Zarr (with display windows and a pyramid)",
                       formatter_class=defaults)
    p.add_argument("source", help="TIFF/OME-TIFF, zarr or OME-Zarr image")
    p.add_argument("destination", help="the .ome.zarr to write")
    _schema_option(p, "chunks", schema["convert"]["properties"]["chunks"], "convert")

    p = sub.add_parser("train", help="pair, convert and train every model of a workflow config, without Snakemake",
                       formatter_class=defaults, description="Runs the workflow's pair, convert and train steps and "
                       "writes the same results folder; a rerun resumes.")
    p.add_argument("config", help="workflow config file (YAML, as config/config.yaml)")
    p.add_argument("--model", default=None, help="train only this model of the config's models section")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: train.device of the config)")
    _progress_option(p)

    p = sub.add_parser("predict", help="restore one image or volume with a trained model", formatter_class=defaults,
                       description="Restores IMAGE into OUTPUT (OME-Zarr: mmse, std, std_raw, samples) in the "
                       "input's units and pixel size.")
    p.add_argument("model", help="checkpoint.pt of a trained model (or its folder)")
    p.add_argument("image", help="TIFF/OME-TIFF, zarr or OME-Zarr image, 2D (YX) or 3D (ZYX)")
    p.add_argument("output", help="the .ome.zarr to write")
    for name, option in schema["predict"]["properties"].items():
        if name not in PREDICT_ONLY_IN_WORKFLOW:
            _schema_option(p, name, option, "predict")
    for name, option in schema["normalize"]["properties"].items():
        _schema_option(p, name, option, "normalize")
    p.add_argument("--calibration", default=None, help="fit.json that rule calibrate wrote for this model; "
                   "without it std is the samples' own (uncalibrated) std, as the metadata says")
    _progress_option(p)

    p = sub.add_parser("evaluate", help="metrics of a prediction against its target", formatter_class=defaults,
                       description="PSNR, SSIM, MS-SSIM, MicroSSIM, MicroMS3IM and FRC of the prediction's mmse "
                       "(and sample_0) against TARGET, as rule evaluate computes them; a TSV on stdout.")
    p.add_argument("prediction", help="a prediction (.ome.zarr) written by flowrestore")
    p.add_argument("target", help="the high-quality image of the same field")
    p.add_argument("--input", default=None, help="also score the degraded input itself")
    p.add_argument("--output", default=None, help="write the table to this TSV instead of stdout")
    for name, option in schema["normalize"]["properties"].items():
        _schema_option(p, name, option, "normalize")

    p = sub.add_parser("learn-kernel", help="learn an unknown blur kernel from unpaired degraded and clean images "
                       "(DDM4IP)", formatter_class=defaults,
                       description="Stages 1 and 2 of DDM4IP: writes OUTPUT/kernel.tif (sum 1), kernel.png and "
                       "metrics.tsv; a rerun resumes from OUTPUT/work/last.pt.")
    p.add_argument("output", help="folder to write the kernel into")
    p.add_argument("--degraded", nargs="+", required=True, help="2D images of the blurred set")
    p.add_argument("--clean", nargs="+", required=True, help="2D images of the clean set (other fields)")
    p.add_argument("--config", default=None, help="a YAML file whose `ddm4ip` section overrides the defaults")
    p.add_argument("--true-kernel", default=None, help="the known PSF (a demo's), to score and plot beside")
    return parser


def _progress_option(p: argparse.ArgumentParser) -> None:
    # "%(default).0s" prints nothing: it only stops the formatter from appending "(default: None)"
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar (default: on a terminal; log lines otherwise)%(default).0s")


def _check_options(args: argparse.Namespace, sections: tuple[str, ...], skip=()) -> None:
    """Options checked against the same schema as the config, with the same one-line errors."""
    import jsonschema

    from .config import _allowed, load_schema

    schema = load_schema()["properties"]
    for section in sections:
        for name, option in schema[section]["properties"].items():
            if name in skip or not hasattr(args, name):
                continue
            error = jsonschema.exceptions.best_match(
                jsonschema.validators.validator_for(option)(option).iter_errors(_per_axis(getattr(args, name))))
            if error is not None:
                raise InputError(None, f"option --{name.replace('_', '-')}: {error.message}",
                                 f"use {_allowed(error.schema)} (the {section}.{name} setting)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        if args.command == "demo":
            from .data.simulate import write_demo

            ids = write_demo(args.folder, args.acquisitions, tuple(args.shape), seed=args.seed)
            print(f"wrote {len(ids)} pairs to {args.folder}")
        elif args.command == "convert":
            from .data.io import convert

            _check_options(args, ("convert",))
            convert(args.source, args.destination, args.chunks)
        elif args.command == "train":
            from .jobs import train_from_config

            for checkpoint in train_from_config(args.config, args.model, args.device, args.progress):
                print(checkpoint)
        elif args.command == "predict":
            from .config import load_schema
            from .jobs import predict_one

            _check_options(args, ("predict", "normalize"), PREDICT_ONLY_IN_WORKFLOW)
            names = [n for n in load_schema()["properties"]["predict"]["properties"] if n not in PREDICT_ONLY_IN_WORKFLOW]
            settings = {n: _per_axis(getattr(args, n)) for n in names}
            stats = predict_one(args.model, args.image, args.output, settings, settings.pop("device"),
                                args.calibration, args.low, args.high, args.progress)
            log.info("restored %s into %s (%d blocks, %d network evaluations)", args.image, args.output,
                     stats["blocks"], stats["evaluations"])
        elif args.command == "evaluate":
            from .jobs import evaluate_one

            _check_options(args, ("normalize",))
            table = evaluate_one(args.prediction, args.target, args.input, args.low, args.high)
            text = table.to_csv(sep="\t", index=False, float_format="%.6g")
            if args.output:
                from .atomic import write_text

                write_text(args.output, text)
            else:
                sys.stdout.write(text)
        elif args.command == "learn-kernel":
            import yaml

            from .physics.tasks import read_psf
            from .training.kernel import learn_kernel

            config = yaml.safe_load(open(args.config).read() or "{}").get("ddm4ip", {}) if args.config else {}
            true = read_psf(args.true_kernel, 2).numpy() if args.true_kernel else None
            print(learn_kernel(args.degraded, args.clean, args.output, config, true_kernel=true))
    except InputError as error:
        print(f"flowrestore: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
