"""The one way builder talks to the person at the terminal: messages and progress bars on stderr.

stdout is kept for what a command produces (records, tables, JSON), so pipes stay clean. Every
message is escaped (``builder.errors.escape``): it may quote a file name, a column or a server's
answer, and an escape sequence in those must not rewrite the user's terminal. tqdm is imported only
when a bar is drawn, so ``builder --help`` stays instant.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from builder.errors import escape

T = TypeVar("T")


def info(message: object) -> None:
    # sys.stderr is looked up per call: tests (CliRunner, capsys) swap it. flush: messages interleave
    # correctly with a progress bar and with the logs of subprocesses (training, servers).
    print(escape(message, keep_newlines=True), file=sys.stderr, flush=True)


def warning(message: object) -> None:
    info(f"warning: {message}")


def error(message: object) -> None:
    info(f"error: {message}")


def progress_bar(desc: str, total: int | None = None, *, initial: int = 0, unit: str = "rec", **options):
    """A tqdm bar on stderr (``update``, ``set_postfix_str``, ``close``); silent when stderr is not a
    terminal (CI, DVC logs): disable=None is tqdm's own TTY check."""
    from tqdm import tqdm

    return tqdm(desc=escape(desc), total=total, initial=initial, unit=unit, disable=None, dynamic_ncols=True,
                mininterval=0.5, **options)


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "rec") -> Iterator[T]:
    """``items`` unchanged, with a bar on stderr while they are consumed (total: len(items) if it has one)."""
    yield from progress_bar(desc, total, unit=unit, iterable=items)
