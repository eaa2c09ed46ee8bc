"""The stage contract: every stage, old and new, is ``run(config, io) -> StageResult``.

- ``StageIO``: where a stage reads and writes (inputs, out, rejects, metrics). The CLI and dvc.yaml
  build it from flags; the stage never reads flags or params itself.
- A typed config (a dataclass deriving from ``builder.config.StageConfig``) holds everything else.
- ``Reject``: the one shape of a dropped record, used by every stage's rejects file and by validate's
  quarantine, so all of them load into one ``datasets.Dataset`` with one schema.
- ``StageResult``: counts in / out / rejected (by reason, by category), the summary line, the metrics
  JSON, and the exit code the CLI returns.
- ``provenance``: writes ``meta.<stage>`` with ``parents`` (the ids of the records it came from), so
  ``builder show`` follows any stage, present or future, without a table of parent fields.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class StageIO:
    """Where a stage reads and writes. ``inputs`` are paths (or ``hf://`` sources) in the order the
    stage documents; ``out`` is a file or, for dataset stages, a folder."""

    inputs: tuple[str, ...] = ()
    out: Path | None = None
    rejects: Path | None = None
    metrics: Path | None = None

    @property
    def input(self) -> str:
        """The single input of a one-input stage."""
        return self.inputs[0]

    def outputs(self) -> list[Path]:
        """Every path the stage writes (they must be distinct: checked by the CLI)."""
        return [p for p in (self.out, self.rejects, self.metrics) if p is not None]


@dataclass
class Reject:
    """One dropped record and why. ``reason`` is a short code (counted in metrics); ``detail`` says
    what to do; ``where`` is ``FILE:LINE`` for read-time problems; ``raw`` keeps a model's raw output or
    an unparseable line, never dropped."""

    stage: str
    reason: str
    detail: str = ""
    record: dict | None = None
    id: str | None = None
    where: str | None = None
    field: str | None = None
    raw: str | None = None

    def __post_init__(self):
        if self.id is None and isinstance(self.record, dict):
            self.id = self.record.get("id")

    @property
    def category(self) -> str:
        return (self.record or {}).get("category") or "none"

    def as_dict(self) -> dict:
        """The rejects-file line. Every key is always present (None when unknown): one schema."""
        return {"id": self.id, "stage": self.stage, "reason": self.reason, "detail": self.detail,
                "where": self.where, "field": self.field, "record": self.record, "raw": self.raw}

    @classmethod
    def from_dict(cls, entry: dict) -> Reject:
        return cls(**{k: entry.get(k) for k in ("stage", "reason", "detail", "record", "id", "where", "field", "raw")})


def by_category(records) -> dict[str, int]:
    return dict(sorted(Counter((r.get("category") or "none") for r in records).items()))


@dataclass
class StageResult:
    """What a stage did. ``extra`` goes into the metrics JSON beside the counts (deterministic values
    only: no timings, so a rerun writes the same metrics and git stays clean)."""

    stage: str
    read: int
    kept: list[dict] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    out: Path | None = None
    extra: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # printed after the summary line (the LLM summary, hints)
    exit_code: int = 0  # 1: the run failed (e.g. every LLM call failed); 2: bad input rows were set aside
    # Stages that stream (ingest, validate) write as they read and hold no records, so they say what
    # they did in their own words and give their own metrics (validate's stats, mix's composition: the
    # layouts dvc metrics, the README and `make demo` read). ``problems`` (FILE:LINE: field: message)
    # are printed before the summary.
    headline: str | None = None
    own_metrics: dict | None = None
    problems: list = field(default_factory=list)

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.rejects).items()))

    @property
    def rejected_by_category(self) -> dict[str, int]:
        return dict(sorted(Counter(r.category for r in self.rejects).items()))

    def metrics(self) -> dict:
        if self.own_metrics is not None:
            return self.own_metrics
        return {"stage": self.stage, "in": self.read, "out": len(self.kept), "rejected": len(self.rejects),
                "rejected_by_reason": self.rejected_by_reason, "out_by_category": by_category(self.kept),
                "rejected_by_category": self.rejected_by_category, **self.extra}

    def summary(self) -> str:
        if self.headline is not None:
            return "\n".join([self.headline, *self.notes])
        line = f"{self.stage}: {self.read} in, {len(self.kept)} out"
        if self.out is not None:
            line += f" -> {self.out}"
        line += f", {len(self.rejects)} rejected"
        if self.rejects:
            line += " (" + ", ".join(f"{k} {v}" for k, v in self.rejected_by_reason.items()) + ")"
        return "\n".join([line, *self.notes])


def provenance(meta: dict | None, stage: str, parents, **fields) -> dict:
    """A copy of ``meta`` with ``meta[stage] = {"parents": [ids], **fields}``. Earlier stages' entries
    are kept, so a record carries its whole lineage."""
    ids = [parents] if isinstance(parents, str) else list(parents or ())
    return {**(meta or {}), stage: {"parents": [p for p in ids if p], **fields}}


def parents_of(record: dict) -> list[str]:
    """Every parent id named by any stage's provenance entry in ``record['meta']``."""
    found = []
    for entry in (record.get("meta") or {}).values():
        if isinstance(entry, dict):
            found += [p for p in entry.get("parents") or () if isinstance(p, str)]
    return [p for p in dict.fromkeys(found) if p != record.get("id")]


def write_result(result: StageResult, io: StageIO, kind: str | None) -> StageResult:
    """Write a stage's output, rejects and metrics (each atomically) and return the result.
    A failed stage (exit_code 1) that kept nothing writes no output; one that kept records (e.g. sending
    stopped when the disk filled) writes them, since they were paid for. DVC records no failed stage."""
    from builder.records import atomic_outputs, write_records

    with atomic_outputs(out=io.out, rejects=io.rejects, metrics=io.metrics):  # all appear together
        if io.out is not None and (result.exit_code == 0 or result.kept):
            write_records(io.out, result.kept, kind)
        if io.rejects is not None:
            write_records(io.rejects, [r.as_dict() for r in result.rejects])
        if io.metrics is not None:
            write_json(io.metrics, result.metrics())
    result.out = io.out
    return result


def write_json(path: Path, doc: dict) -> None:
    """A metrics, stats or manifest JSON, written atomically (in key order: a rerun writes the same bytes)."""
    from builder.records import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def as_jsonable(obj) -> dict:
    """A dataclass config as a JSON-able dict (for meta and manifests)."""
    return json.loads(json.dumps(asdict(obj), default=str))
