"""`builder show ID`: where a record is, and where it came from, stage by stage, back to its source line.

Every stage writes meta.<stage>.parents (builder.stages.base.provenance), so the chain is followed
through the pipeline's outputs by ``parents_of`` alone: a new stage needs no change here.
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


def stages_passed(rec: dict) -> int:
    """How far down the pipeline this copy is: every stage adds its own entry to meta and keeps the
    earlier ones (judge's copy has respond's and judge's; the dataset's adds pairs' split)."""
    return sum(isinstance(info, dict) for info in (rec.get("meta") or {}).values())


def describe(record_id: str, roots: list[Path], depth: int = 0, seen: set | None = None) -> list[str]:
    seen = set() if seen is None else seen
    if record_id in seen:
        return []
    seen.add(record_id)
    pad = "  " * depth
    hits = find(record_id, roots)
    if not hits:
        return [f"{pad}{record_id}: not found under {', '.join(map(str, roots))}"]
    hits.sort(key=lambda hit: stages_passed(hit[1]))  # pipeline order, not the order of file names
    kept = [rec for _, rec in hits if "_rejected" not in rec]
    rec = (kept or [hits[-1][1]])[-1]  # the furthest stage's copy carries the most provenance
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
    for parent in parents_of(rec):
        lines += describe(parent, roots, depth + 1, seen)
    return lines
