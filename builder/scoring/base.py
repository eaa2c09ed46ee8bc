"""What every scorer returns, and the shape a scorer has (kept apart from the registry in
``builder.scoring`` so scorers import it without importing the registry that imports them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from builder.stages.base import Reject


@dataclass
class Scored:
    """``values``: record id -> the value stored under the scorer's name, or a dict of named values
    (the scorer's name among them) when a scorer gives more than one (moderation: flagged and the
    highest category score)."""

    values: dict[str, float | bool | str | dict | None] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # what produced the values (preset, version, model)
    notes: list[str] = field(default_factory=list)  # printed after the stage's summary (the LLM summary)
    exit_code: int = 0  # 1: the scorer's calls failed beyond llm.max_failed_fraction


class Scorer(Protocol):
    name: str

    def score(self, records: list[dict]) -> Scored: ...
