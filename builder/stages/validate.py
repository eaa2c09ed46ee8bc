"""validate: check a file, split it into good and quarantined records, and write stats."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from builder.config import pick, section
from builder.errors import BadInput, Problem
from builder.records import atomic_outputs, atomic_path, distinct_outputs, guess_kind, kind_of, parse_mapping, record_writer
from builder.validate import Limits, check_chunks


@dataclass
class ValidateOutcome:
    message: str
    stats: dict
    shown: int
    problems: list[Problem] = field(default_factory=list)


SHAPE_PROBLEMS = {"schema", "missing-field", "id-mismatch"}  # what records of another kind fail with


def wrong_kind(path: str, kind: str, read: int) -> None:
    """Exit 2 with one line when the records look like another kind (not one problem per record)."""
    try:
        looks_like = guess_kind(path)
    except BadInput:
        return
    if looks_like != kind:
        flag = looks_like if looks_like == "sft" else looks_like + "s"  # --kind takes the plural names
        raise BadInput(f"{path}: none of its {read} records is a valid {kind} record; they look like "
                       f"{looks_like} records: pass --kind {flag} (or --map NEW=OLD to rename fields)")


def validate(path: str, kind: str | None = None, *, out: Path | None = None, quarantine: Path | None = None,
             report: Path | None = None, against: list[str] | None = None, mapping_pairs=(),
             max_chars: int | None = None) -> ValidateOutcome:
    distinct_outputs(out=out, quarantine=quarantine, report=report)
    params = section("validate")
    given, kind = kind, kind_of(kind) if kind else guess_kind(path)
    defaults = Limits()
    limits = Limits(max_chars=pick(max_chars, params, "max_chars", defaults.max_chars),
                    near_duplicates=params.get("near_duplicates", defaults.near_duplicates),
                    contamination_ngram=params.get("contamination_ngram", defaults.contamination_ngram))
    # Eval files are not checked against eval suites: they would all "leak" themselves.
    against = [] if kind == "eval" else (against or params.get("against", []))
    problems = []
    with atomic_outputs(), contextlib.ExitStack() as outputs:
        # Written chunk by chunk as they are checked: memory stays flat on any file size.
        good = outputs.enter_context(record_writer(out, kind)) if out is not None else None
        bad = outputs.enter_context(record_writer(quarantine)) if quarantine is not None else None
        for chunk in check_chunks(path, kind, mapping=parse_mapping(mapping_pairs), limits=limits, against=against):
            if good is not None:
                good.extend(chunk.good)
            if bad is not None:
                bad.extend(chunk.bad)
            problems += chunk.problems
        stats = chunk.stats
        # Not one record of this kind's shape (only missing fields and ids of other content): the wrong --kind.
        if given and stats["read"] and not stats["good"] and set(stats["problems_by_reason"]) <= SHAPE_PROBLEMS:
            wrong_kind(path, kind, stats["read"])
        if report is not None:
            with atomic_path(report) as tmp:
                tmp.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    message = f"{path}: {stats['read']} read as {kind}, {stats['good']} good, {stats['quarantined']} quarantined"
    if stats["problems_by_reason"]:
        message += " (" + ", ".join(f"{code} {n}" for code, n in stats["problems_by_reason"].items()) + ")"
    if problems and quarantine is None:
        message += "\nadd --quarantine BAD.jsonl to keep the bad records with their reasons, --out GOOD.jsonl for the rest"
    return ValidateOutcome(message, stats, params.get("max_problems_shown", 20), problems)
