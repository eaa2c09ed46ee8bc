"""score: one score record per generation; ``scores`` holds {scorer name: value} for every scorer
(moderation and judge add a second value each: moderation_max, judge_refusal).

A generation a scorer could not score goes to rejects with the reason (never a silent gap).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from builder.config import StageConfig
from builder.stages.base import StageIO, StageResult, provenance, write_result


@dataclass
class ScoreConfig(StageConfig):
    section_name = "score"
    scorers: list = field(default_factory=lambda: ["refusal"],
                          metadata={"help": "refusal | reward-model | moderation | judge"})
    refusal_preset: str = field(default="xstest-v1", metadata={"help": "xstest-v1 | gcg-v1 | seeds-v1 (builder/scoring/refusal.py)"})
    reward_model: str | None = field(default=None, metadata={"help": "sequence-classification model folder or hub id"})
    batch_size: int = field(default=128, metadata={"help": "reward-model: texts per forward pass"})
    max_length: int = field(default=512, metadata={"help": "reward-model: tokens kept per text"})
    moderation: dict = field(default_factory=dict, metadata={
        "help": "moderation: the endpoint, as llm: keys (model [omni-moderation-latest], base_url [$OPENAI_BASE_URL "
                "or api.openai.com], api_key_env, concurrency, max_retries, max_rpm, ...; the transport keys of "
                "llm: are inherited, its model and base_url are not)"})
    judge: dict = field(default_factory=dict, metadata={
        "help": "judge: the judge model, as llm: keys over llm: (backend, model [smollm2-135m], base_url, adapter, "
                "batch_size, ...)"})
    judge_calibrate: bool = field(default=True, metadata={"help": "judge: divide out the judge's yes/no bias measured "
                                                                  "on a content-free pair (contextual calibration)"})
    use_cache: bool = field(default=True, metadata={"help": "moderation, judge: answer from the completion cache when it can"})
    moderation_llm: object = None  # builder.llm.LLMSpec, built by load
    judge_llm: object = None

    @classmethod
    def load(cls, params: dict, *, llm_defaults: dict | None = None, moderation_flags: dict | None = None,
             judge_flags: dict | None = None, **flags):
        """The score section with flags on top; the moderation and judge LLMSpecs from their sub-sections
        (``*_flags``: e.g. model, base_url, dry_run; None = not given)."""
        from builder.errors import BadInput
        from builder.llm import LLM_KEYS, LLMSpec
        from builder.scoring.moderation import moderation_spec

        config = cls.from_params(params, **flags)
        for name in ("moderation", "judge"):
            unknown = sorted(set(getattr(config, name)) - set(LLM_KEYS))
            if unknown:
                raise BadInput(f"params.yaml: score.{name}: unknown key(s) {unknown}; accepted: the llm: keys "
                               f"({', '.join(LLM_KEYS)})")
        if llm_defaults is None:
            from builder.config import section

            llm_defaults = section("llm")
        # The messages of LLMSpec name the plain flags (--backend ...): say which scorer they are about.
        try:
            config.moderation_llm = moderation_spec(config.moderation, llm_defaults, **(moderation_flags or {}))
        except BadInput as error:
            raise BadInput(f"moderation scorer (--moderation-* flags, score.moderation in params.yaml): {error}") from None
        try:
            config.judge_llm = LLMSpec.from_params(config.judge, llm_defaults, **(judge_flags or {}))
        except BadInput as error:
            raise BadInput(f"judge scorer (--judge-* flags, score.judge in params.yaml): {error}") from None
        return config


def run(config: ScoreConfig, io: StageIO) -> StageResult:
    """One score record per generation with every scorer's value in ``scores`` (the score schema's id
    covers the generation's content only, so one record per (generation, scorer) would repeat ids).
    A generation some scorer failed on keeps the others' values and goes to rejects for that scorer."""
    from builder.records import record_id
    from builder.validate import load_records
    from builder.scoring import make_scorer

    records = load_records(io.input, "generation")
    scores: dict[str, dict] = {rec["id"]: {} for rec in records}
    rejects, used, notes, exit_code = [], {}, [], 0
    for name in config.scorers:
        scored = make_scorer(name, config).score(records)
        rejects += scored.rejects
        used[name] = scored.meta
        notes += scored.notes
        exit_code = max(exit_code, scored.exit_code)
        for rec_id, value in scored.values.items():
            scores[rec_id].update(value if isinstance(value, dict) else {name: value})
    kept = []
    for rec in records:
        if not scores[rec["id"]]:
            continue
        out = {k: v for k, v in rec.items() if k not in ("id", "meta", "scores")}
        out["scores"] = scores[rec["id"]]
        out["meta"] = provenance(rec.get("meta"), "score", rec["id"], scorers=used)
        kept.append({"id": record_id("score", out), **out})
    by_scorer = {name: sum(1 for s in scores.values() if name in s) for name in config.scorers}
    result = StageResult("score", read=len(records), kept=kept, rejects=rejects, notes=notes, exit_code=exit_code,
                         extra={"by_scorer": by_scorer})
    return write_result(result, io, "score")
