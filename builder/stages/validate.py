"""validate: check a file, split it into good and quarantined records, and write stats."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from builder.config import pick, section
from builder.errors import BadInput, Problem
from builder.records import atomic_path, guess_kind, kind_of, parse_mapping, write_records
from builder.validate import Limits, check


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
    params = section("validate")
    given, kind = kind, kind_of(kind) if kind else guess_kind(path)
    defaults = Limits()
    limits = Limits(max_chars=pick(max_chars, params, "max_chars", defaults.max_chars),
                    near_duplicates=params.get("near_duplicates", defaults.near_duplicates),
                    contamination_ngram=params.get("contamination_ngram", defaults.contamination_ngram))
    # Eval files are not checked against eval suites: they would all "leak" themselves.
    against = [] if kind == "eval" else (against or params.get("against", []))
    result = check(path, kind, mapping=parse_mapping(mapping_pairs), limits=limits, against=against)
    # Not one record of this kind's shape (only missing fields and ids of other content): the wrong --kind.
    if given and result.read and not result.good and set(result.stats["problems_by_reason"]) <= SHAPE_PROBLEMS:
        wrong_kind(path, kind, result.read)
    if out is not None:
        write_records(out, result.good, kind)
    if quarantine is not None:
        write_records(quarantine, result.bad)
    if report is not None:
        with atomic_path(report) as tmp:
            tmp.write_text(json.dumps(result.stats, indent=2) + "\n", encoding="utf-8")
    stats = result.stats
    message = f"{path}: {stats['read']} read as {kind}, {stats['good']} good, {stats['quarantined']} quarantined"
    if stats["problems_by_reason"]:
        message += " (" + ", ".join(f"{code} {n}" for code, n in stats["problems_by_reason"].items()) + ")"
    if result.problems and quarantine is None:
        message += "\nadd --quarantine BAD.jsonl to keep the bad records with their reasons, --out GOOD.jsonl for the rest"
    return ValidateOutcome(message, stats, params.get("max_problems_shown", 20), result.problems)
