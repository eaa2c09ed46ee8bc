"""Harmfulness from the OpenAI moderation endpoint (or any server speaking ``/v1/moderations``), sent
through builder's LLM machinery (builder/llm/moderation.py): cached, retried, rate-limited, dry-runnable,
the API key read from the environment only.

The text sent is the generation's ``output`` (the response is what is judged, not the prompt). Each
generation gets two values: ``moderation`` = the endpoint's ``flagged`` (bool) and ``moderation_max`` =
its highest category score (0..1). A generation whose request failed after the retries goes to rejects
with the reason.
"""

from __future__ import annotations

from builder.scoring.task import ScoreTask

MODERATION_KEYS = ("api_key_env", "concurrency", "timeout_s", "max_retries", "backoff_s", "max_backoff_s",
                   "cooldown_s", "max_failed_fraction", "max_rpm", "max_tpm", "dry_run")  # inherited from llm:


def moderation_spec(section: dict, llm_defaults: dict, **flags):
    """The moderation endpoint's LLMSpec: ``score.moderation`` over the transport keys of ``llm:`` (the
    chat model, backend and base URL of ``llm:`` are not a moderation endpoint's)."""
    from builder.errors import BadInput
    from builder.llm import LLMSpec
    from builder.llm.moderation import DEFAULT_MODEL

    defaults = {"backend": "openai", "model": DEFAULT_MODEL,
                **{k: v for k, v in (llm_defaults or {}).items() if k in MODERATION_KEYS}}
    spec = LLMSpec.from_params(section, defaults, **flags)
    if spec.backend != "openai":
        raise BadInput(f"score.moderation.backend {spec.backend!r}: the moderation scorer calls an OpenAI-compatible "
                       "/v1/moderations endpoint: use backend openai")
    return spec


class ModerationTask(ScoreTask):
    scorer = "moderation"

    def __init__(self, spec):
        from builder.llm import GenParams

        self.spec = spec
        self.params = GenParams(max_new_tokens=1)  # a classifier generates nothing; the cache key needs params

    def format_input(self, record: dict):
        from builder.llm import Request

        return [Request("moderation", prompt=record.get("output") or "", params=self.params)]

    def format_output(self, record: dict, completions: list) -> dict:
        from builder.llm.moderation import read_result

        flagged, top, _ = read_result(completions[0].text)
        return {"id": record["id"], "values": {"moderation": flagged, "moderation_max": round(top, 6)}}


class ModerationScorer:
    name = "moderation"

    def __init__(self, spec, *, use_cache: bool = True):
        self.spec, self.use_cache = spec, use_cache

    def score(self, records: list[dict]):
        from builder.llm.moderation import ModerationBackend
        from builder.llm.redact import redact

        backend = ModerationBackend(self.spec)
        meta = {"model": backend.model, "base_urls": [redact(u) for u in backend.base_urls], "input": "output",
                "values": {"moderation": "flagged", "moderation_max": "highest category score"}}
        return ModerationTask(self.spec).scored(records, self.spec, meta, use_cache=self.use_cache, backend=backend)
