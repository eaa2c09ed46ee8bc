"""The OpenAI moderation endpoint (``POST {base_url}/moderations``) through the same machinery as chat
completions: the async client with its retries, backoff, Retry-After, rate limits, several base URLs,
redaction of the API key, the completion cache (a kill -9 loses at most what was in flight) and dry runs.

    backend = ModerationBackend(spec)        # spec.model: e.g. omni-moderation-latest
    run_requests(spec, [Request(key, prompt=text, params=GenParams(max_new_tokens=1))], backend=backend)

One text per request (``input: [text]``), so each text is cached on its own. The cached "completion"
is the endpoint's result object as JSON (flagged, categories, category_scores), untouched: how it is
read into a score can change without asking again. The cache key holds the endpoint kind, the model,
the base URLs and the text (a moderation server is not a replica of a chat fleet: its answers depend on
where it runs).
"""

from __future__ import annotations

import json

from builder.errors import BadInput
from builder.llm.base import Completion, Request, Retryable, now_iso
from builder.llm.openai import OpenAIBackend, _short

DEFAULT_MODEL = "omni-moderation-latest"


class ModerationBackend(OpenAIBackend):
    def __init__(self, spec):
        if spec.batch_api:
            raise BadInput("the moderation scorer sends online requests only: set batch_api: false for it")
        super().__init__(spec)

    def identity(self) -> dict:
        return {"backend": "openai", "endpoint": "moderations", "model": self.model, "base_urls": sorted(self.base_urls)}

    def body(self, r: Request, endpoint=None) -> dict:
        return {"model": self.model, "input": [r.prompt if r.prompt is not None else r.messages_list()[-1]["content"]]}

    def path(self, body: dict) -> str:
        return "/moderations"

    def parse(self, r: Request, data, factor: float = 1.0) -> Completion:
        """The result object as JSON text; raises Retryable on a body without one (a proxy's error page)."""
        if hasattr(data, "model_dump"):
            data = data.model_dump()
        results = data.get("results") if isinstance(data, dict) else None
        if not results or not isinstance(results[0], dict) or "flagged" not in results[0]:
            raise Retryable("malformed moderation response (no results[0].flagged)", raw=_short(data))
        return Completion(r.key, json.dumps(results[0], sort_keys=True), None, 0, 0, 0.0,
                          data.get("model") or self.model, False, None, now_iso())


def read_result(text: str) -> tuple[bool, float, str | None]:
    """(flagged, the highest category score, that category) from a cached result."""
    result = json.loads(text)
    scores = {k: float(v) for k, v in (result.get("category_scores") or {}).items() if v is not None}
    top = max(scores, key=scores.get) if scores else None
    return bool(result["flagged"]), (scores[top] if top else 0.0), top
