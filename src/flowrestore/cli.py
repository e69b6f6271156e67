"""Command line and the shared frame of the Snakemake rule scripts.

Both turn an `InputError` into one line on stderr and a non-zero exit: the user sees which file
is wrong and how to fix it, not a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import contextmanager
from typing import Iterator

from .errors import InputError

log = logging.getLogger("flowrestore")


def setup_logging(logfile: str | None = None, level: int = logging.INFO) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile:
        handlers.append(logging.FileHandler(logfile, mode="w"))
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s", handlers=handlers, force=True)


@contextmanager
def rule_script(snakemake) -> Iterator[None]:
    """Frame of every rule script: log to the rule's log file, one-line errors, thread count."""
    setup_logging(snakemake.log[0] if len(snakemake.log) else None)
    if "torch" in sys.modules:  # only the scripts that need torch pay for importing it
        sys.modules["torch"].set_num_threads(max(1, int(snakemake.threads)))
    try:
        yield
    except InputError as error:
        log.error("error: %s", error)
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowrestore", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="write simulated widefield/confocal TIFF pairs")
    p.add_argument("folder")
    p.add_argument("-n", "--acquisitions", type=int, default=16)
    p.add_argument("--shape", type=int, nargs="+", default=[256, 256])
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("convert", help="store an image as chunked OME-Zarr")
    p.add_argument("source")
    p.add_argument("destination")

    args = parser.parse_args(argv)
    setup_logging()
    try:
        if args.command == "demo":
            from .data.simulate import write_demo

            ids = write_demo(args.folder, args.acquisitions, tuple(args.shape), seed=args.seed)
            print(f"wrote {len(ids)} pairs to {args.folder}")
        elif args.command == "convert":
            from .data.io import convert

            convert(args.source, args.destination)
    except InputError as error:
        print(f"flowrestore: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
