"""What every stage leaves behind besides its output: a rejects file (each dropped record with its
reason) and a metrics JSON (counts in / out / rejected, by reason and by category) for DVC."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from builder.records import atomic_path, write_records
from builder.stages.base import Reject


def reject(stage: str, record: dict, reason: str, detail: str = "", raw: str | None = None) -> dict:
    """One rejects-file line: enough to see why a record was dropped and to recover it (the one
    shape, ``builder.stages.base.Reject``)."""
    return Reject(stage, reason, detail, record=record, raw=raw).as_dict()


def by_category(records: list[dict]) -> dict[str, int]:
    return dict(sorted(Counter((r.get("category") or "none") for r in records).items()))


def stage_metrics(stage: str, read: list[dict], kept: list[dict], rejects: list[dict], **extra) -> dict:
    reasons = Counter(r["reason"] for r in rejects)
    rejected_records = [r["record"] for r in rejects if isinstance(r.get("record"), dict)]
    return {"stage": stage, "in": len(read), "out": len(kept), "rejected": len(rejects),
            "rejected_by_reason": dict(sorted(reasons.items())),
            "out_by_category": by_category(kept), "rejected_by_category": by_category(rejected_records), **extra}


def write_outputs(stage: str, out: Path, kept: list[dict], kind: str, *, read: list[dict], rejects: list[dict],
                  rejects_path: Path | None, metrics_path: Path | None, **extra) -> dict:
    """Write a stage's output, rejects and metrics (each atomically); return the metrics."""
    write_records(out, kept, kind)
    if rejects_path is not None:
        write_records(rejects_path, rejects)
    metrics = stage_metrics(stage, read, kept, rejects, **extra)
    if metrics_path is not None:
        with atomic_path(metrics_path) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def summary_line(metrics: dict, out: Path | str) -> str:
    line = f"{metrics['stage']}: {metrics['in']} in, {metrics['out']} out -> {out}, {metrics['rejected']} rejected"
    if metrics["rejected_by_reason"]:
        line += " (" + ", ".join(f"{k} {v}" for k, v in metrics["rejected_by_reason"].items()) + ")"
    return line
