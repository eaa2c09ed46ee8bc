"""ingest: read any supported source into records of one kind (ids, provenance), losing nothing."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import Problem
from builder.records import atomic_outputs, distinct_outputs, kind_of, parse_mapping, record_writer, text_fields
from builder.validate import FirstSeen, check_chunks


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
    distinct_outputs(out=out, quarantine=quarantine)
    problems, per_source, written, bad = [], [], 0, 0
    seen, duplicates = FirstSeen(), 0
    empty = dict.fromkeys(text_fields(kind), 0)
    with atomic_outputs(), contextlib.ExitStack() as files:
        # Written chunk by chunk: memory stays flat on any file size (only id hashes are kept).
        good_out = files.enter_context(record_writer(out, kind))
        bad_out = files.enter_context(record_writer(quarantine)) if quarantine is not None else None
        for source in sources:
            source_good = source_bad = 0
            rows = None
            if outputs:  # a wide file: one generation record per (row, model column)
                from builder.records import read_rows
                from builder.stages.widen import widen

                rows = widen(read_rows(source), list(outputs), source)
            for chunk in check_chunks(source, kind, mapping=mapping, semantic=False, stamp_source=True, stage="ingest",
                                      rows=rows):
                good_out.extend(chunk.good)
                if bad_out is not None:
                    bad_out.extend(chunk.bad)
                problems += chunk.problems
                source_good, source_bad = source_good + len(chunk.good), source_bad + len(chunk.bad)
                duplicates += seen.count_repeats([rec["id"] for rec in chunk.good])
                for name in empty:
                    empty[name] += sum(1 for rec in chunk.good if not str(rec.get(name) or "").strip())
            written, bad = written + source_good, bad + source_bad
            per_source.append(f"{source}: {source_good}" + (f" (+{source_bad} bad)" if source_bad else ""))
    notes = [f"{duplicates} exact duplicates kept"] if duplicates else []
    notes += [f"{n} with empty {name}" for name, n in empty.items() if n]
    message = f"ingested {written} {kind} records into {out} ({'; '.join(per_source)})"
    if notes:
        message += "\nnote: " + ", ".join(notes) + f"; `builder validate {out}` quarantines them"
    return IngestSummary(written, bad, duplicates, message, problems)
