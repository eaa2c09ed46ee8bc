"""`builder show ID`: where a record is, and where it came from, stage by stage, back to its source line.

Every stage records the ids of the records it came from in ``meta.<stage>.parents``
(builder.stages.base.provenance), so the chain is followed through any stage, present or future,
without a table of parent fields.
"""

from __future__ import annotations

import json
from pathlib import Path

from builder.stages.base import parents_of


def find(record_id: str, roots: list[Path]) -> list[tuple[Path, dict]]:
    """Every record with this id in the .jsonl files under ``roots`` (a cheap text test before parsing)."""
    needle = f'"id": "{record_id}"'
    hits = []
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*.jsonl"))
        for path in files:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if needle in line:
                        rec = json.loads(line)
                        if isinstance(rec.get("record"), dict) and "reason" in rec:  # a rejects-file line
                            rec = {**rec["record"], "_rejected": f"{rec.get('stage')}: {rec['reason']} ({rec.get('detail', '')})"}
                        if rec.get("id") == record_id:
                            hits.append((path, rec))
    return hits


# The pipeline's order (dvc.yaml); a stage not listed here (a user's own) counts as the furthest.
PIPELINE = ("ingest", "validate", "induce", "filter", "respond", "judge", "pairs", "mix", "generate", "score")


def furthest(rec: dict) -> tuple[int, int]:
    """How far down the pipeline a copy of a record is: its last stage, then how many stages it passed."""
    stages = [name for name, entry in (rec.get("meta") or {}).items() if isinstance(entry, dict)]
    last = max((PIPELINE.index(s) if s in PIPELINE else len(PIPELINE) for s in stages), default=-1)
    return last, len(stages)


def parents(rec: dict) -> list[str]:
    return parents_of(rec)


def describe(record_id: str, roots: list[Path], depth: int = 0, seen: set | None = None) -> list[str]:
    seen = set() if seen is None else seen
    if record_id in seen:
        return []
    seen.add(record_id)
    pad = "  " * depth
    hits = find(record_id, roots)
    if not hits:
        return [f"{pad}{record_id}: not found under {', '.join(map(str, roots))}"]
    kept = [rec for _, rec in hits if "_rejected" not in rec] or [rec for _, rec in hits]
    rec = max(kept, key=furthest)  # the furthest stage's copy carries the most provenance
    lines = [f"{pad}{record_id} in {', '.join(str(p) for p, _ in hits)}"]
    lines += [f"{pad}  REJECTED by {r['_rejected']}" for _, r in hits if "_rejected" in r]
    for name in ("prompt", "instruction", "text", "chosen", "rejected", "response", "category"):
        if rec.get(name):
            value = str(rec[name]).replace("\n", " ")
            lines.append(f"{pad}  {name}: {value[:160]}{'…' if len(value) > 160 else ''}")
    meta = rec.get("meta") or {}
    if meta.get("source"):
        lines.append(f"{pad}  source: {meta['source']}")
    for stage, info in meta.items():
        if isinstance(info, dict):
            shown = {k: v for k, v in info.items() if k not in ("params", "p_yes", "parents")}
            lines.append(f"{pad}  {stage}: {json.dumps(shown, ensure_ascii=False)[:300]}")
    for parent in parents(rec):
        lines += describe(parent, roots, depth + 1, seen)
    return lines
