"""ingest: read any supported source into records of one kind (ids, provenance), losing nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import Problem
from builder.records import kind_of, parse_mapping, text_fields, write_records
from builder.validate import check


@dataclass
class IngestSummary:
    written: int
    bad: int
    duplicates: int
    message: str
    problems: list[Problem] = field(default_factory=list)


def ingest(sources: list[str], kind: str, out: Path, *, mapping_pairs=(), quarantine: Path | None = None,
           outputs: list[str] = ()) -> IngestSummary:
    """Write every readable row of ``sources`` to ``out``; unreadable rows go to ``quarantine``.

    Duplicates are kept and counted (validate decides what to drop), and so are empty text fields,
    such as the Safer-Instruct CSVs' empty ``rejected`` column, so counts match the source exactly.
    ``outputs``: wide files' model columns, one generation record per (row, column) (stages/widen.py)."""
    kind = kind_of(kind)
    mapping = parse_mapping(mapping_pairs)
    good, bad, problems, per_source = [], [], [], []
    for source in sources:
        rows = None
        if outputs:
            from builder.records import read_rows
            from builder.stages.widen import widen

            rows = widen(read_rows(source), list(outputs), source)
        result = check(source, kind, mapping=mapping, semantic=False, stamp_source=True, rows=rows)
        good += result.good
        bad += result.bad
        problems += result.problems
        per_source.append(f"{source}: {len(result.good)}" + (f" (+{len(result.bad)} bad)" if result.bad else ""))
    write_records(out, good, kind)
    if quarantine is not None:
        write_records(quarantine, bad)
    duplicates = len(good) - len({rec["id"] for rec in good})
    empty = {name: sum(1 for rec in good if not str(rec.get(name) or "").strip()) for name in text_fields(kind)}
    notes = [f"{duplicates} exact duplicates kept"] if duplicates else []
    notes += [f"{n} with empty {name}" for name, n in empty.items() if n]
    message = f"ingested {len(good)} {kind} records into {out} ({'; '.join(per_source)})"
    if notes:
        message += "\nnote: " + ", ".join(notes) + f"; `builder validate {out}` quarantines them"
    return IngestSummary(len(good), len(bad), duplicates, message, problems)
