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
