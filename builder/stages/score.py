"""score: one score record per (generation, scorer); ``scores`` holds {scorer name: value}.

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


def score_id(generation_id: str, scorer: str) -> str:
    """One record per (generation, scorer): the schema's content fields alone would give the scorers of
    one generation the same id, so the id hashes the generation's id with the scorer's name."""
    import hashlib

    return hashlib.sha256(f"{generation_id}|{scorer}".encode()).hexdigest()[:16]


def run(config: ScoreConfig, io: StageIO) -> StageResult:
    from builder.records import load_records
    from builder.scoring import make_scorer

    records = load_records(io.input, "generation")
    kept, rejects, by_scorer = [], [], {}
    for name in config.scorers:
        scorer = make_scorer(name, config)
        scored = scorer.score(records)
        rejects += scored.rejects
        for rec in records:
            if rec["id"] not in scored.values:
                continue
            value = scored.values[rec["id"]]
            out = {k: v for k, v in rec.items() if k not in ("id", "meta", "scores")}
            out["scores"] = {name: value}
            out["meta"] = provenance(rec.get("meta"), "score", rec["id"], scorer=name, **scored.meta)
            kept.append({"id": score_id(rec["id"], name), **out})
        by_scorer[name] = len(scored.values)
    result = StageResult("score", read=len(records), kept=kept, rejects=rejects, extra={"by_scorer": by_scorer})
    return write_result(result, io, "score")
