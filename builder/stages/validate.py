"""validate: check a file, split it into good and quarantined records, and write stats."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from builder.config import StageConfig
from builder.errors import BadInput, FirstProblems
from builder.records import atomic_outputs, distinct_outputs, guess_kind, kind_of, parse_mapping, record_writer
from builder.stages.base import StageIO, StageResult, write_json
from builder.validate import Limits, check_chunks

DEFAULTS = Limits()


@dataclass
class Config(StageConfig):
    section_name = "validate"
    max_chars: int = field(default=DEFAULTS.max_chars, metadata={"help": "A text field longer than this is quarantined."})
    near_duplicates: bool = field(default=DEFAULTS.near_duplicates, metadata={
        "help": "Quarantine records equal up to case, punctuation and spacing."})
    contamination_ngram: int = field(default=DEFAULTS.contamination_ngram, metadata={
        "help": "Shared run of words with an eval prompt that counts as a leak."})
    max_problems_shown: int = field(default=20, metadata={"help": "Problems printed before the rest are only counted."})
    against: list = field(default_factory=list, metadata={"help": "Eval suites checked for contamination."})
    kind: str | None = field(default=None, metadata={"flag_only": True, "help": "Record kind; guessed from the fields if None."})
    map: list = field(default_factory=list, metadata={"flag_only": True, "help": "Column renames NEW=OLD."})
    allow_rejects: bool = field(default=False, metadata={
        "flag_only": True, "help": "Exit 0 when the bad records were written to the rejects file (pipelines)."})

    @property
    def limits(self) -> Limits:
        return Limits(self.max_chars, self.near_duplicates, self.contamination_ngram)


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


def run(config: Config, io: StageIO) -> StageResult:
    """Good records to ``io.out``, bad ones (with reasons) to ``io.rejects``, the stats to ``io.metrics``.
    Exit code 2 when a record was bad, unless ``allow_rejects`` and they went to a rejects file."""
    path = io.input
    distinct_outputs(out=io.out, rejects=io.rejects, metrics=io.metrics)
    kind = kind_of(config.kind) if config.kind else guess_kind(path)
    # Eval files are not checked against eval suites: they would all "leak" themselves.
    against = [] if kind == "eval" else list(config.against)
    problems = FirstProblems(max(1000, config.max_problems_shown))
    with atomic_outputs(), contextlib.ExitStack() as outputs:
        # Written chunk by chunk as they are checked: memory stays flat on any file size.
        good = outputs.enter_context(record_writer(io.out, kind)) if io.out is not None else None
        bad = outputs.enter_context(record_writer(io.rejects)) if io.rejects is not None else None
        for chunk in check_chunks(path, kind, mapping=parse_mapping(config.map), limits=config.limits, against=against):
            if good is not None:
                good.extend(chunk.good)
            if bad is not None:
                bad.extend(chunk.bad)
            problems.add(chunk.problems)
        stats = chunk.stats
        # Not one record of this kind's shape (only missing fields and ids of other content): the wrong --kind.
        if config.kind and stats["read"] and not stats["good"] and set(stats["problems_by_reason"]) <= SHAPE_PROBLEMS:
            wrong_kind(path, kind, stats["read"])
        if io.metrics is not None:
            write_json(io.metrics, stats)
    headline = f"{path}: {stats['read']} read as {kind}, {stats['good']} good, {stats['quarantined']} quarantined"
    if stats["problems_by_reason"]:
        headline += " (" + ", ".join(f"{code} {n}" for code, n in stats["problems_by_reason"].items()) + ")"
    notes = []
    if problems and io.rejects is None:
        notes.append("add --rejects BAD.jsonl to keep the bad records with their reasons, --out GOOD.jsonl for the rest")
    failed = problems and not (config.allow_rejects and io.rejects is not None)
    return StageResult("validate", read=stats["read"], out=io.out, headline=headline, notes=notes, own_metrics=stats,
                       problems=problems, exit_code=2 if failed else 0)
