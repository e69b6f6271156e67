"""One error type for problems the user can fix, so the CLI can print it as one line."""

from __future__ import annotations

import os


class InputError(Exception):
    """A problem with a user's file or setting: names the file and says how to fix it."""

    def __init__(self, path: str | os.PathLike | None, problem: str, fix: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{problem}. Fix: {fix}")
