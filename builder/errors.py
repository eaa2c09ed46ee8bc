"""The two ways a command fails, mapped to exit codes by the CLI (2: bad input, 1: the run failed)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# C0/C1 control characters (ESC starts terminal escape sequences), DEL and lone surrogates: printed
# as \x1b, \x7f, \ud800 so a hostile column name or record cannot rewrite the user's terminal.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_UNPRINTABLE_KEEP_LINES = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` safe to print to a terminal: control characters shown as escapes (\\x1b)."""
    pattern = _UNPRINTABLE_KEEP_LINES if keep_newlines else _UNPRINTABLE
    return pattern.sub(lambda m: _escaped(m.group()), str(text))


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one record: printed as ``FILE:WHERE: field: message``."""

    file: str
    where: str  # a line number, "record 12" (JSON lists) or "row 12" (parquet)
    field: str
    message: str
    code: str = "schema"  # short reason used to count problems (report) and in quarantine files

    def __str__(self) -> str:
        return escape(f"{self.file}:{self.where}: {self.field}: {self.message}")


class FirstProblems(list):
    """The first ``keep`` problems of a run and how many there were in all (``total``): a file with
    millions of bad records must not hold every problem in memory to print a few of them."""

    def __init__(self, keep: int = 1000):
        super().__init__()
        self.keep, self.total = keep, 0

    def add(self, problems: list[Problem]) -> None:
        self.total += len(problems)
        self.extend(problems[:max(0, self.keep - len(self))])


class BadInput(Exception):
    """Bad usage or bad input: exit code 2. ``problems`` (if any) are printed one per line."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.problems = problems or []

    def __str__(self) -> str:  # messages quote file and column names: escape them for the terminal
        return escape(super().__str__(), keep_newlines=True)


class RunFailed(Exception):
    """The run itself failed (a server unreachable, a model that will not load): exit code 1."""

    def __str__(self) -> str:
        return escape(super().__str__(), keep_newlines=True)


class DryRun(Exception):
    """A --dry-run stopped before sending anything: the message is the estimate (exit code 0)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `kill`, dvc's timeout): unwinds like Ctrl-C, so what is stored stays stored,
    and exits 128 + 15 = 143."""

    exit_code = 143
