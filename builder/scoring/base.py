"""What every scorer returns, and the shape a scorer has (kept apart from the registry in
``builder.scoring`` so scorers import it without importing the registry that imports them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from builder.stages.base import Reject


@dataclass
class Scored:
    values: dict[str, float | bool | None] = field(default_factory=dict)  # record id -> value
    rejects: list[Reject] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # what produced the values (preset, version, model)


class Scorer(Protocol):
    name: str

    def score(self, records: list[dict]) -> Scored: ...
