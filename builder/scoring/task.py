"""A scorer that asks a model (the moderation endpoint, an LLM judge) is an ``LLMTask`` run by
``run_task``: the one loop for the cache, failures (rejects with their reason), the LLM summary line
and the exit code. ``format_output`` returns ``{"id": record id, "values": {...}}``."""

from __future__ import annotations

from builder.scoring.base import Scored
from builder.stages.base import Reject
from builder.stages.llm_task import LLMTask, run_task


class ScoreTask(LLMTask):
    stage = "score"
    scorer = ""  # the scorer's name: its rejects name the field they could not fill, scores.<scorer>

    def reject(self, record: dict, reason: str, detail: str = "", raw: str | None = None) -> Reject:
        return Reject(self.stage, reason, f"{self.scorer}: {detail}", record=record, field=f"scores.{self.scorer}",
                      raw=raw)

    def scored(self, records: list[dict], llm, meta: dict, *, use_cache: bool = True, backend=None) -> Scored:
        result = run_task(self, records, llm, use_cache=use_cache, backend=backend).result
        notes = [f"{self.scorer}: {note}" for note in result.notes]
        return Scored({r["id"]: r["values"] for r in result.kept}, result.rejects, meta, notes, result.exit_code)
