"""The two ways a command fails, mapped to exit codes by the CLI (2: bad input, 1: the run failed)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one record: printed as ``FILE:WHERE: field: message``."""

    file: str
    where: str  # a line number, "record 12" (JSON lists) or "row 12" (parquet)
    field: str
    message: str
    code: str = "schema"  # short reason used to count problems (report) and in quarantine files

    def __str__(self) -> str:
        return f"{self.file}:{self.where}: {self.field}: {self.message}"


class BadInput(Exception):
    """Bad usage or bad input: exit code 2. ``problems`` (if any) are printed one per line."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.problems = problems or []


class RunFailed(Exception):
    """The run itself failed (a server unreachable, a model that will not load): exit code 1."""


class DryRun(Exception):
    """A --dry-run stopped before sending anything: the message is the estimate (exit code 0)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `kill`, dvc's timeout): unwinds like Ctrl-C, so what is stored stays stored,
    and exits 128 + 15 = 143."""

    exit_code = 143
