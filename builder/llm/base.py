"""The types every LLM stage codes against: what is asked (Request), what comes back (Completion or
Failure), and what a backend must do (Backend). Import-light: no torch, no openai."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class GenParams:
    """Generation parameters. ``max_new_tokens`` has no default and is always sent explicitly: a silent
    server default (often 16 or 128 tokens) truncates outputs."""

    max_new_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int | None = None
    num_beams: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if isinstance(self.stop, (list, str)):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass(frozen=True)
class Request:
    """One call. ``key`` is the caller's record key (unique within a run); the cache key is computed
    from the content, so two records with the same prompt share one completion."""

    key: str
    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # ((role, content), ...)
    params: GenParams = None  # type: ignore[assignment]  # required; checked below
    json_schema: dict | None = None  # ask for JSON matching this schema (server-side when supported)
    choices: tuple[str, ...] | None = None  # score these continuations: log-probability of each

    def __post_init__(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError(f"request {self.key}: give exactly one of prompt or messages")
        if self.params is None:
            raise ValueError(f"request {self.key}: params (GenParams with max_new_tokens) is required")
        if self.messages is not None and not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(tuple(m) for m in self.messages))
        if self.choices is not None:
            if not isinstance(self.choices, tuple):
                object.__setattr__(self, "choices", tuple(self.choices))
            if not self.choices:
                raise ValueError(f"request {self.key}: choices must not be empty")

    def messages_list(self) -> list[dict]:
        if self.messages is not None:
            return [{"role": role, "content": content} for role, content in self.messages]
        return [{"role": "user", "content": self.prompt}]


@dataclass
class Completion:
    key: str
    text: str
    finish_reason: str | None = None  # stop | length | choices | ...
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    model: str = ""
    cached: bool = False
    choice_logprobs: dict[str, float] | None = None
    created_at: str = ""  # ISO time the completion was first produced (kept by the cache: reruns are identical)


@dataclass
class Failure:
    key: str
    reason: str  # one line: what went wrong and, where known, what to do
    raw: str | None = None  # the raw output or error body, never dropped


Result = Completion | Failure
Emit = Callable[[str, "Completion | Failure"], object]  # (cache key, result) -> the cache write's Future or None


@dataclass
class RunStats:
    """Counters a backend updates while it runs (read by the progress bar and the summary)."""

    sent: int = 0  # HTTP requests or generate calls, retries included
    retried: int = 0  # requests that needed at least one retry
    retries: int = 0  # retry attempts in total
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    notes: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the backend stopped sending early (budget reached, ...): the unsent items' reason


@runtime_checkable
class Backend(Protocol):
    """A way to run requests. ``identity`` goes into every cache key (backend kind, model, adapter and
    whatever else changes outputs); ``run`` calls ``emit(cache_key, result)`` for each request as soon
    as its result is known (so the cache is written as completions arrive) and must emit exactly one
    result per item, or set ``stats.stopped`` to say why it stopped early. ``store`` is the run's Cache
    (the Batch API keeps its batch ids there)."""

    kind: str

    def identity(self) -> dict: ...

    def run(self, items: Sequence[tuple[str, Request]], emit: Emit, stats: RunStats, store=None) -> None: ...

    def close(self) -> None: ...


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def cache_key(identity: dict, request: Request) -> str:
    """sha256 of backend kind, model, adapter (identity), prompt or messages, params, schema, choices."""
    payload = {
        "identity": identity,
        "prompt": request.prompt,
        "messages": [list(m) for m in request.messages] if request.messages is not None else None,
        "params": request.params.as_dict(),
        "json_schema": request.json_schema,
        "choices": list(request.choices) if request.choices is not None else None,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# The two ways a call can fail, shared by the online client and the Batch API.
class Retryable(Exception):
    """A failure worth another try. ``hopeless``: retrying the same URL will not help (refused, DNS, TLS):
    a few quick tries, then the run stops when no other URL is left."""

    def __init__(self, reason: str, raw: str | None = None, retry_after: float | None = None,
                 endpoint_fault: bool = True, hopeless: bool = False):
        super().__init__(reason)
        self.reason, self.raw, self.retry_after, self.endpoint_fault = reason, raw, retry_after, endpoint_fault
        self.hopeless = hopeless


class Rejected(Exception):
    """The server refused this request for good (400, 422, ...): no retry."""

    def __init__(self, reason: str, raw: str | None = None):
        super().__init__(reason)
        self.reason, self.raw = reason, raw
