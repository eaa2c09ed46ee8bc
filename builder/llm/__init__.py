"""One interface for LLM calls, on a laptop CPU (transformers) or an OpenAI-compatible fleet (vLLM,
OpenAI, ...), that never loses a record and never pays twice.

    from builder.llm import LLMSpec, GenParams, Request, run_requests
    spec = LLMSpec.from_params(section("induce"), model=cli_model)
    outcome = run_requests(spec, [Request(key, prompt=p, params=GenParams(max_new_tokens=64))], desc="induce")
    outcome.completions[key].text ; outcome.failures ; print(outcome.summary)

Every request ends in exactly one of ``outcome.completions`` / ``outcome.failures``. This module stays
import-light: torch, transformers and openai load only when a backend actually runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from builder.llm.base import Backend, Completion, Failure, GenParams, Request, RunStats
from builder.llm.outcome import Outcome, Summary
from builder.llm.redact import redact

__all__ = ["LLMSpec", "Outcome", "Summary", "run_requests", "gen_params", "GenParams", "Request", "Completion",
           "Failure", "Backend", "LLM_KEYS", "GEN_KEYS"]

BACKENDS = ("hf", "openai")


@dataclass
class LLMSpec:
    """Which model, where, and how hard to push it. Built from params (``llm:`` defaults + a stage's
    section) with command-line flags on top: ``LLMSpec.from_params(section("induce"), model=...)``."""

    backend: str = "hf"
    model: str = "smollm2-135m"
    base_urls: list[str] = field(default_factory=list)  # several: round robin, a failing one cooled down
    adapter: str | None = None  # hf: a PEFT folder; openai: the adapter's served name (vLLM --lora-modules)
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never written anywhere
    concurrency: int = 16  # openai: requests in flight
    batch_size: int = 16  # hf: prompts per generate call
    timeout_s: float = 120.0  # openai: per request
    max_retries: int = 6  # openai: retries per request (408/409/429/5xx, timeouts, dropped connections, bad bodies)
    prices: dict = field(default_factory=dict)  # model -> {input: $ per 1M tokens, output: $ per 1M tokens}
    load_in_8bit: bool = False  # hf on CUDA (bitsandbytes)
    load_in_4bit: bool = False
    use_chat_template: bool | None = None  # None: when the model has one (hf) / chat endpoint (openai); False: raw prompt (openai: /v1/completions)
    batch_api: bool = False  # openai: the Batch API (half price, up to 24 h) instead of online calls
    batch_poll_s: float = 30.0
    backoff_s: float = 0.5  # first retry delay; doubles each attempt, with jitter, capped at max_backoff_s
    max_backoff_s: float = 60.0
    cooldown_s: float = 30.0  # longest pause of a failing base URL
    dry_run: bool = False  # count what is not cached and estimate tokens and cost, send nothing
    max_budget_usd: float | None = None  # openai: send no new request once this much was spent in the run
    max_failed_fraction: float = 0.1  # a stage fails (exit 1) when more than this fraction of its records failed
    max_rpm: float | None = None  # openai: requests per minute (token bucket)
    max_tpm: float | None = None  # openai: tokens per minute (prompt characters / 4 + max_new_tokens)
    lease_s: float = 30.0  # processes sharing a cache: a key being asked for is leased this long, renewed every lease_s/3

    def __post_init__(self):
        from builder.errors import BadInput

        if self.backend not in BACKENDS:
            raise BadInput(f"--backend {self.backend!r}: accepted: {', '.join(BACKENDS)}")
        if isinstance(self.base_urls, str):
            self.base_urls = [self.base_urls]
        self.base_urls = [u.rstrip("/") for u in self.base_urls]
        for name in ("concurrency", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise BadInput(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_retries < 0:
            raise BadInput(f"max_retries must be >= 0, got {self.max_retries}")
        if not 0 <= float(self.max_failed_fraction) <= 1:
            raise BadInput(f"llm.max_failed_fraction must be between 0 and 1, got {self.max_failed_fraction}")
        if float(self.lease_s) <= 0:
            raise BadInput(f"llm.lease_s must be positive, got {self.lease_s}")
        for name in ("max_rpm", "max_tpm"):
            if getattr(self, name) is not None and float(getattr(self, name)) <= 0:
                raise BadInput(f"llm.{name} must be positive (or null for no limit), got {getattr(self, name)}")
        for url in self.base_urls:
            check_base_url(url)

    @classmethod
    def from_params(cls, section: dict, defaults: dict | None = None, **cli_overrides) -> LLMSpec:
        """params ``llm:`` (shared defaults) < the stage's section < command-line flags (None = not given).
        ``base_url`` (a string or a list) and ``base_urls`` are both accepted."""
        if defaults is None:
            from builder.config import section as read_section

            defaults = read_section("llm")
        merged: dict = {}
        for source in (defaults or {}, section or {}, {k: v for k, v in cli_overrides.items() if v is not None}):
            for key, value in source.items():
                if key in ("base_url", "base_urls"):
                    if value in (None, [], ()):
                        continue
                    key, value = "base_urls", [value] if isinstance(value, str) else list(value)
                merged[key] = value
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in merged.items() if k in names})


def check_base_url(url: str) -> None:
    """A base URL must be http(s)://HOST[:PORT][/PATH]: a missing scheme or a bad port would otherwise
    surface as a connection error per request, after retries."""
    from urllib.parse import urlsplit

    from builder.errors import BadInput

    fix = "give it as http://HOST:PORT/v1 (e.g. --base-url http://127.0.0.1:8000/v1)"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"--base-url {redact(url)!r} is not an http(s) URL: {fix}")
    if parts.username or parts.password:  # the client cannot send both these and the API key's header
        raise BadInput(f"--base-url {redact(url)!r} carries credentials: drop them from the URL and put the key in "
                       "the variable named by llm.api_key_env (OPENAI_API_KEY by default)")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in 0..65535
    except ValueError:
        raise BadInput(f"--base-url {redact(url)!r} has a bad port: {fix}") from None


LLM_KEYS = tuple(f.name for f in fields(LLMSpec)) + ("base_url",)
GEN_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "num_beams", "seed", "stop")


def gen_params(section: dict, defaults: dict | None = None, **cli_overrides) -> GenParams:
    """GenParams from params (``llm:`` < stage section < flags). max_new_tokens must be set somewhere."""
    from builder.errors import BadInput

    if defaults is None:
        from builder.config import section as read_section

        defaults = read_section("llm")
    merged = {}
    for source in (defaults or {}, section or {}, {k: v for k, v in cli_overrides.items() if v is not None}):
        merged.update({k: v for k, v in source.items() if k in GEN_KEYS})
    if "max_new_tokens" not in merged:
        raise BadInput("max_new_tokens is not set: give --max-new-tokens or set it in params.yaml "
                       "(it is always sent explicitly; silent server defaults truncate outputs)")
    if "stop" in merged:
        merged["stop"] = tuple([merged["stop"]] if isinstance(merged["stop"], str) else merged["stop"] or ())
    try:
        return GenParams(**merged)
    except (TypeError, ValueError) as e:
        raise BadInput(f"generation params: {e}") from None


def run_requests(spec: LLMSpec, requests, *, use_cache: bool = True, desc: str = "llm",
                 rejects_path: str | Path | None = None, cache=None, backend: Backend | None = None) -> Outcome:
    """Run every request: from the cache when it holds the answer, else through the backend, writing
    each completion to the cache as it arrives. ``use_cache=False`` ignores cached answers (new ones are
    still stored). ``rejects_path`` gets one JSON line per failure (request, reason, raw output)."""
    from builder.llm.runner import run

    return run(spec, list(requests), use_cache=use_cache, desc=desc, rejects_path=rejects_path, cache=cache,
               backend=backend)
