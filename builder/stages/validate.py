"""validate: check a file, split it into good and quarantined records, and write stats."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from builder.config import pick, section
from builder.errors import Problem
from builder.records import atomic_outputs, atomic_path, distinct_outputs, guess_kind, kind_of, parse_mapping, write_records
from builder.validate import Limits, check


@dataclass
class ValidateOutcome:
    message: str
    stats: dict
    shown: int
    problems: list[Problem] = field(default_factory=list)


def validate(path: str, kind: str | None = None, *, out: Path | None = None, quarantine: Path | None = None,
             report: Path | None = None, against: list[str] | None = None, mapping_pairs=(),
             max_chars: int | None = None) -> ValidateOutcome:
    distinct_outputs(out=out, quarantine=quarantine, report=report)
    params = section("validate")
    kind = kind_of(kind) if kind else guess_kind(path)
    defaults = Limits()
    limits = Limits(max_chars=pick(max_chars, params, "max_chars", defaults.max_chars),
                    near_duplicates=params.get("near_duplicates", defaults.near_duplicates),
                    contamination_ngram=params.get("contamination_ngram", defaults.contamination_ngram))
    # Eval files are not checked against eval suites: they would all "leak" themselves.
    against = [] if kind == "eval" else (against or params.get("against", []))
    result = check(path, kind, mapping=parse_mapping(mapping_pairs), limits=limits, against=against)
    with atomic_outputs():
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
