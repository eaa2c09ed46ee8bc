"""score: one score record per generation; ``scores`` holds {scorer name: value} for every scorer.

A generation a scorer could not score goes to rejects with the reason (never a silent gap).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from builder.config import StageConfig
from builder.stages.base import StageIO, StageResult, provenance, write_result


@dataclass
class ScoreConfig(StageConfig):
    section_name = "score"
    scorers: list = field(default_factory=lambda: ["refusal"], metadata={"help": "refusal | reward-model"})
    refusal_preset: str = field(default="xstest-v1", metadata={"help": "xstest-v1 | gcg-v1 | seeds-v1 (builder/scoring/refusal.py)"})
    reward_model: str | None = field(default=None, metadata={"help": "sequence-classification model folder or hub id"})
    batch_size: int = field(default=128, metadata={"help": "reward-model: texts per forward pass"})
    max_length: int = field(default=512, metadata={"help": "reward-model: tokens kept per text"})


def run(config: ScoreConfig, io: StageIO) -> StageResult:
    """One score record per generation with every scorer's value in ``scores`` (the score schema's id
    covers the generation's content only, so one record per (generation, scorer) would repeat ids).
    A generation some scorer failed on keeps the others' values and goes to rejects for that scorer."""
    from builder.records import record_id
    from builder.validate import load_records
    from builder.scoring import make_scorer

    records = load_records(io.input, "generation")
    scores: dict[str, dict] = {rec["id"]: {} for rec in records}
    rejects, used = [], {}
    for name in config.scorers:
        scored = make_scorer(name, config).score(records)
        rejects += scored.rejects
        used[name] = scored.meta
        for rec_id, value in scored.values.items():
            scores[rec_id][name] = value
    kept = []
    for rec in records:
        if not scores[rec["id"]]:
            continue
        out = {k: v for k, v in rec.items() if k not in ("id", "meta", "scores")}
        out["scores"] = scores[rec["id"]]
        out["meta"] = provenance(rec.get("meta"), "score", rec["id"], scorers=used)
        kept.append({"id": record_id("score", out), **out})
    by_scorer = {name: sum(1 for s in scores.values() if name in s) for name in config.scorers}
    result = StageResult("score", read=len(records), kept=kept, rejects=rejects, extra={"by_scorer": by_scorer})
    return write_result(result, io, "score")
