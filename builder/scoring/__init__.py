"""Scorers: each turns generation records into one value per record (or a reject with its reason).

    class Scorer(Protocol):
        name: str                                   # the key in a score record's ``scores``
        def score(self, records) -> Scored: ...     # values by record id, plus rejects

``make_scorer`` builds the scorer a ``builder score --scorer`` name stands for.
"""

from __future__ import annotations

from builder.scoring.base import Scored, Scorer  # noqa: F401  (the package's public names)


def make_scorer(name: str, config) -> Scorer:
    from builder.errors import BadInput

    if name == "refusal":
        from builder.scoring.refusal import RefusalScorer

        return RefusalScorer(config.refusal_preset)
    if name == "reward-model":
        from builder.scoring.reward_model import RewardModelScorer

        if not config.reward_model:
            raise BadInput("--scorer reward-model needs --reward-model PATH_OR_HUB_ID (or score.reward_model in params.yaml)")
        return RewardModelScorer(config.reward_model, batch_size=config.batch_size, max_length=config.max_length)
    if name == "moderation":
        from builder.scoring.moderation import ModerationScorer

        return ModerationScorer(config.moderation_llm, use_cache=config.use_cache)
    if name == "judge":
        from builder.scoring.judge import JudgeScorer

        return JudgeScorer(config.judge_llm, calibrate=config.judge_calibrate, use_cache=config.use_cache)
    raise BadInput(f"--scorer {name!r}: accepted: {', '.join(SCORER_NAMES)}")


SCORER_NAMES = ("refusal", "reward-model", "moderation", "judge")
