"""validate: check a file, split it into good and quarantined records, and write stats."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from builder.config import pick, section
from builder.errors import Problem
from builder.records import atomic_outputs, atomic_path, distinct_outputs, guess_kind, kind_of, parse_mapping, record_writer
from builder.validate import Limits, check_chunks


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
        if report is not None:
            with atomic_path(report) as tmp:
                tmp.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    message = f"{path}: {stats['read']} read as {kind}, {stats['good']} good, {stats['quarantined']} quarantined"
    if stats["problems_by_reason"]:
        message += " (" + ", ".join(f"{code} {n}" for code, n in stats["problems_by_reason"].items()) + ")"
    if problems and quarantine is None:
        message += "\nadd --quarantine BAD.jsonl to keep the bad records with their reasons, --out GOOD.jsonl for the rest"
    return ValidateOutcome(message, stats, params.get("max_problems_shown", 20), problems)
