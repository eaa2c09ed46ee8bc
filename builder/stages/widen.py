"""Wide files: one row per prompt with one output column per model (the Safer-Instruct test set:
``instruction,label,<model>,<model>,...``) become one generation record per (prompt, model), the model
named by its column. A row without a suite takes the file name (as the seeds' eval files do)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from builder.errors import BadInput
from builder.records import Row


def widen(rows: Iterable[Row], outputs: list[str], source: str) -> Iterator[Row]:
    suite = Path(source).stem
    for row in rows:
        if row.data is None:
            yield row
            continue
        missing = [col for col in outputs if col not in row.data]
        if missing:
            raise BadInput(f"{source}: --outputs names column(s) {', '.join(missing)} that the file does not "
                           f"have (columns: {', '.join(row.data)})")
        shared = {k: v for k, v in row.data.items() if k not in outputs}
        shared.setdefault("suite", suite)
        for col in outputs:
            yield Row(f"{row.where} [{col}]", {**shared, "output": row.data[col], "model": col})


def parse_outputs(value: str | None) -> list[str]:
    return [c.strip() for c in (value or "").split(",") if c.strip()]
