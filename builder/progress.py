"""Progress bars on stderr for long work; silent when stderr is not a terminal (CI, DVC logs)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "rec") -> Iterator[T]:
    from tqdm import tqdm

    # disable=None: tqdm turns itself off when stderr is not a TTY.
    yield from tqdm(items, desc=desc, total=total, unit=unit, disable=None, dynamic_ncols=True, mininterval=0.5)
