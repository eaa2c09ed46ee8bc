"""ingest: read any supported source into records of one kind (ids, provenance), losing nothing."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from builder.config import StageConfig
from builder.errors import BadInput, FirstProblems
from builder.records import atomic_outputs, distinct_outputs, kind_of, parse_mapping, record_writer, text_fields
from builder.stages.base import StageIO, StageResult
from builder.validate import FirstSeen, check_chunks


@dataclass
class Config(StageConfig):
    """One source's keys (params.yaml ``ingest: NAME: {source, kind, map}``: dvc.yaml runs one ingest
    per NAME; ``source`` is the stage's input, the rest is this config)."""

    section_name = "ingest"
    kind: str = field(default="", metadata={"help": "responses|instructions|preferences|sft|eval|generation|score."})
    map: list = field(default_factory=list, metadata={"help": "Column renames NEW=OLD."})
    outputs: list = field(default_factory=list, metadata={
        "help": "Wide files: the model output columns; one generation record per (row, column)."})


def run(config: Config, io: StageIO) -> StageResult:
    """Write every readable row of ``io.inputs`` to ``io.out``; unreadable rows go to ``io.rejects``.

    Duplicates are kept and counted (validate decides what to drop), and so are empty text fields,
    such as the Safer-Instruct CSVs' empty ``rejected`` column, so counts match the source exactly.
    ``outputs``: wide files' model columns, one generation record per (row, column) (stages/widen.py).
    Exit code 2 when some rows could not be read (every good one is still written)."""
    if not config.kind:
        raise BadInput("--kind is required: responses|instructions|preferences|sft|eval|generation|score")
    kind = kind_of(config.kind)
    mapping = parse_mapping(config.map)
    distinct_outputs(out=io.out, rejects=io.rejects)
    problems, per_source, written, bad = FirstProblems(), [], 0, 0
    seen, duplicates = FirstSeen(), 0
    empty = dict.fromkeys(text_fields(kind), 0)
    with atomic_outputs(), contextlib.ExitStack() as files:
        # Written chunk by chunk: memory stays flat on any file size (only id hashes are kept).
        good_out = files.enter_context(record_writer(io.out, kind))
        bad_out = files.enter_context(record_writer(io.rejects)) if io.rejects is not None else None
        for source in io.inputs:
            source_good = source_bad = 0
            rows = None
            if config.outputs:  # a wide file: one generation record per (row, model column)
                from builder.records import read_rows
                from builder.stages.widen import widen

                rows = widen(read_rows(source), list(config.outputs), source)
            for chunk in check_chunks(source, kind, mapping=mapping, semantic=False, stamp_source=True, stage="ingest",
                                      rows=rows):
                good_out.extend(chunk.good)
                if bad_out is not None:
                    bad_out.extend(chunk.bad)
                problems.add(chunk.problems)
                source_good, source_bad = source_good + len(chunk.good), source_bad + len(chunk.bad)
                duplicates += seen.count_repeats([rec["id"] for rec in chunk.good])
                for name in empty:
                    empty[name] += sum(1 for rec in chunk.good if not str(rec.get(name) or "").strip())
            written, bad = written + source_good, bad + source_bad
            per_source.append(f"{source}: {source_good}" + (f" (+{source_bad} bad)" if source_bad else ""))
    counted = [f"{duplicates} exact duplicates kept"] if duplicates else []
    counted += [f"{n} with empty {name}" for name, n in empty.items() if n]
    notes = [f"note: {', '.join(counted)}; `builder validate {io.out}` quarantines them"] if counted else []
    if problems:
        notes.append(f"error: {problems.total} problems in {bad} rows; the {written} good records were written to "
                     f"{io.out}" + (f" and the bad rows to {io.rejects}" if io.rejects else
                                    "; add --rejects BAD.jsonl to keep the bad rows"))
    return StageResult("ingest", read=written + bad, out=io.out, notes=notes, problems=problems,
                       exit_code=2 if problems else 0,
                       headline=f"ingested {written} {kind} records into {io.out} ({'; '.join(per_source)})")
