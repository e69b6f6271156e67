"""One error type for problems the user can fix, so the CLI can print it as one line."""

from __future__ import annotations

import os


class InputError(Exception):
    """A problem with a user's file or setting: names the file and says how to fix it."""

    def __init__(self, path: str | os.PathLike | None, problem: str, fix: str):
        self.path = None if path is None else os.fspath(path)
        # One line whatever the wrapped exception said: logs and terminals show one line per error.
        self.problem = " ".join(str(problem).split("\n"))
        self.fix = " ".join(str(fix).split("\n"))
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{self.problem}. Fix: {self.fix}")

    def __reduce__(self):
        # Rebuilt from its parts when it crosses a process (dask, multiprocessing workers).
        return type(self), (self.path, self.problem, self.fix)
