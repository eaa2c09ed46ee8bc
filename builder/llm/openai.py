"""Any OpenAI-compatible server (OpenAI, vLLM, TGI, `transformers serve`, ...): an async client with a
bounded number of requests in flight, retries with exponential backoff and jitter (honouring
Retry-After), a per-request timeout, several base URLs at once (round robin; a failing one is cooled
down), token usage and cost, JSON-schema output where the server supports it, and the Batch API.

The API key is read from the environment variable named by ``LLMSpec.api_key_env`` and never written
anywhere (not in the cache, the rejects file, provenance or logs).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import os
import random
import sys

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from builder.errors import BadInput, RunFailed
from builder.llm.base import Completion, Emit, Failure, Rejected, Request, Retryable, RunStats, now_iso
from builder.llm.cache import CacheWriteFailed
from builder.llm.limiter import RateLimiter, estimated_tokens
from builder.llm.pricing import cost_of
from builder.llm.redact import redact

OPENAI_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 409, 429}
# Delay between worker starts: about one response's client work, so answers come back spread out.
# Measured through the CLI (benchmarks/bench_llm.py, 64 in flight, 200 ms): 2 ms kept the server
# busy 0.93 of ideal, 1 ms 0.95, 0.5 ms 0.94, no ramp 0.91-0.92 (the burst queues behind itself).
RAMP_S = 0.001
RAMP_MAX_S = 0.5  # the whole ramp never takes longer than this


HOPELESS_TRIES = 3  # refused/DNS/TLS errors in a row on the only URL before the run stops


def network_problem(exc: BaseException, url: str, timeout_s: float) -> tuple[str, bool]:
    """What went wrong on the wire, in words, and whether retrying the same URL is hopeless. The
    transport wraps the OS error a few levels deep (a refused connect even surfaces as a timeout)."""
    import socket
    import ssl

    chain, seen = [], exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return f"connection refused by {url}: is the server running and listening on that port?", True
        if isinstance(e, socket.gaierror) or type(e).__name__ == "ClientConnectorDNSError":
            return f"DNS: cannot resolve the host of {url}; check the spelling of --base-url", True
        if isinstance(e, ssl.SSLError) or "certificate" in str(e).lower():
            return f"TLS handshake with {url} failed ({e}); check https vs http and the server's certificate", True
    for e in chain:
        if isinstance(e, TimeoutError) or "timeout" in type(e).__name__.lower() or "timed out" in str(e).lower():
            return f"timeout after {timeout_s:g}s waiting for {url}", False
    last = chain[-1]
    return f"connection error with {url}: {type(last).__name__}: {last}".strip(), False


@dataclass
class Endpoint:
    url: str
    clients: list  # a few clients per URL: httpx's pool scans all its connections on every request
    cool_until: float = 0.0
    failures_in_a_row: int = 0
    hopeless_in_a_row: int = 0  # refused / DNS / TLS
    schema_ok: bool = True  # server accepts response_format json_schema
    max_tokens_field: str = "max_tokens"


def retry_after_seconds(headers) -> float | None:
    """Retry-After as seconds (a number or an HTTP date), or retry-after-ms; None when absent."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class OpenAIBackend:
    kind = "openai"

    def __init__(self, spec):
        self.spec = spec
        self.base_urls = list(spec.base_urls) or [os.environ.get("OPENAI_BASE_URL", OPENAI_URL).rstrip("/")]
        key = os.environ.get(spec.api_key_env)
        if not key:
            if any(u.startswith(OPENAI_URL) for u in self.base_urls) and not spec.dry_run:  # a dry run sends nothing
                raise BadInput(f"the openai backend needs an API key in ${spec.api_key_env} for {OPENAI_URL} "
                               "(or pass --base-url for a local/vLLM server)")
            key = "EMPTY"  # local servers (vLLM, transformers serve) accept any key
        if key != key.strip() or any(c in key for c in "\r\n\t "):
            raise BadInput(f"the API key in ${spec.api_key_env} contains whitespace or a newline (a copy-paste "
                           f"slip?); set it again without it, e.g. export {spec.api_key_env}=\"$(printf %s KEY)\"")
        self._api_key = key  # only the clients below see it
        from builder.llm.models import packaged_name, resolve

        model = spec.model
        if packaged_name(model):  # a packaged model served locally (transformers serve DIR): the server names it DIR
            model = resolve(model).path
        self.model = spec.adapter or model  # vLLM serves LoRA adapters under their own model names
        self.chat = spec.use_chat_template is not False
        self.prices = spec.prices or {}

    def identity(self) -> dict:
        # Base URLs are not part of the key: every replica of a fleet serves the same model.
        return {"backend": "openai", "model": self.model, "adapter": self.spec.adapter,
                "endpoint": "chat" if self.chat else "completions"}

    # ----------------------------------------------------------------------------- request bodies

    def body(self, r: Request, endpoint: Endpoint | None = None) -> dict:
        p = r.params
        if p.num_beams != 1:
            raise BadInput("num_beams > 1 (beam search) is not part of the OpenAI API; use --backend hf or num_beams: 1")
        chat = self.chat or r.messages is not None
        body: dict = {"model": self.model}
        if chat:
            body["messages"] = r.messages_list()
        else:
            body["prompt"] = r.prompt
        body[endpoint.max_tokens_field if endpoint else "max_tokens"] = p.max_new_tokens
        body["temperature"] = p.temperature
        if p.top_p != 1.0:
            body["top_p"] = p.top_p
        if p.seed is not None:
            body["seed"] = p.seed
        if p.stop:
            body["stop"] = list(p.stop)
        if p.top_k:
            body["top_k"] = p.top_k  # vLLM extension (sent in the body)
        if r.choices is not None:
            if not chat:
                body["logprobs"] = 5  # the legacy completions API allows at most 5
            else:
                body["logprobs"] = True
                body["top_logprobs"] = 20
            body[endpoint.max_tokens_field if endpoint else "max_tokens"] = 1
        if r.json_schema is not None and (endpoint is None or endpoint.schema_ok) and chat:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": r.json_schema}}
        return body

    def path(self, body: dict) -> str:
        """The endpoint a request body goes to, relative to the base URL."""
        return "/chat/completions" if "messages" in body else "/completions"

    def parse(self, r: Request, data, factor: float = 1.0) -> Completion | Failure:
        """A response body (dict or openai model) -> Completion; raises Retryable on a malformed body."""
        if hasattr(data, "model_dump"):
            data = data.model_dump()
        if not isinstance(data, dict) or not data.get("choices"):
            raise Retryable("malformed response body (no choices)", raw=_short(data))
        choice = data["choices"][0]
        if "message" in choice:
            text = (choice.get("message") or {}).get("content") or ""
        else:
            text = choice.get("text") or ""
        usage = data.get("usage") or {}
        pt, ct = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        cost = cost_of(self.prices, self.spec.model if self.spec.model in self.prices else self.model, pt, ct, factor)
        model = data.get("model") or self.model
        if r.choices is not None:
            scores = _choice_logprobs(choice, r.choices)
            if scores is None:
                return Failure(r.key, "the server returned no logprobs; scoring choices needs logprobs/top_logprobs "
                                      "(vLLM and OpenAI give them, `transformers serve` does not): use --backend hf",
                               raw=text)
            if all(v == -math.inf for v in scores.values()):
                return Failure(r.key, "none of the choices is among the server's top logprobs", raw=text)
            best = max(r.choices, key=lambda c: scores[c])
            return Completion(r.key, best, "choices", pt, ct, cost, model, False, scores, now_iso())
        return Completion(r.key, text, choice.get("finish_reason"), pt, ct, cost, model, False, None, now_iso())

    # ----------------------------------------------------------------------------- online

    def run(self, items: Sequence[tuple[str, Request]], emit: Emit, stats: RunStats, store=None) -> None:
        if not items:
            return
        for _, r in items:
            self.body(r)  # bad params fail before anything is sent
        if self.spec.batch_api:
            from builder.llm.batch import run_batch

            return run_batch(self, items, emit, stats, store)
        coro = self._run_async(items, emit, stats)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        # Called from inside an event loop (a notebook): run ours in a thread.
        errors = []
        thread = threading.Thread(target=lambda: _capture(errors, asyncio.run, coro))
        thread.start()
        thread.join()
        if errors:
            raise errors[0]

    def redact(self, text: str | None) -> str | None:
        """Error text with credentials masked, this run's API key included."""
        return redact(text, (self._api_key,))

    def sync_client(self, url: str, max_retries: int):
        """A blocking client (the Batch API's uploads and polls)."""
        import openai

        return openai.OpenAI(base_url=url, api_key=self._api_key, max_retries=max_retries, timeout=self.spec.timeout_s)

    def _client(self, url: str):
        import openai

        http_client = None
        if os.environ.get("BUILDER_HTTP", "aiohttp") == "aiohttp":
            try:  # openai's aiohttp transport: its C HTTP parser halves the client's per-request CPU
                http_client = openai.DefaultAioHttpClient(timeout=self.spec.timeout_s)
            except (RuntimeError, ImportError):
                http_client = None
        return openai.AsyncOpenAI(base_url=url, api_key=self._api_key, max_retries=0, timeout=self.spec.timeout_s,
                                  http_client=http_client)

    async def _run_async(self, items, emit: Emit, stats: RunStats) -> None:
        shards = max(1, min(8, -(-int(self.spec.concurrency) // (16 * len(self.base_urls)))))
        self.endpoints = [Endpoint(url, [self._client(url) for _ in range(shards)]) for url in self.base_urls]
        self._turn = 0
        self._rr = 0
        self.limiter = RateLimiter(self.spec.max_rpm, self.spec.max_tpm) if (self.spec.max_rpm or self.spec.max_tpm) else None
        queue: asyncio.Queue = asyncio.Queue()
        for item in items:
            queue.put_nowait(item)
        fatal: list[BaseException] = []

        def record(ck, result):
            try:
                return emit(ck, result)
            except BaseException as e:  # surfaced after the workers stop, never swallowed by the loop
                fatal.append(e)
                return None

        async def worker(n: int):
            # Workers start RAMP_S apart: responses then come back spread out instead of in one burst
            # that queues behind itself on every round trip (and servers see no thundering herd).
            await asyncio.sleep(n * min(RAMP_S, RAMP_MAX_S / max(1, int(self.spec.concurrency))))
            committed = None
            budget = self.spec.max_budget_usd
            while not fatal:
                if budget is not None and stats.cost_usd >= budget:
                    stats.stopped = (f"not sent: max_budget_usd ${budget:g} reached (${stats.cost_usd:.4f} spent in "
                                     "this run); rerun with a higher --max-budget to continue: completed prompts "
                                     "come from the cache")
                    return
                if committed is not None:
                    # A slot is free only once its last completion is committed, so a kill loses at most
                    # `concurrency` answers: those in flight or not yet on disk.
                    try:
                        await asyncio.wrap_future(committed)
                    except CacheWriteFailed as e:  # the ledger is broken: every worker stops sending
                        fatal.append(e)
                        return
                try:
                    ck, r = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    result = await self._one(r, stats)
                except RunFailed as e:
                    fatal.append(e)
                    return
                committed = record(ck, result)

        workers = [asyncio.create_task(worker(n)) for n in range(min(int(self.spec.concurrency), len(items)))]
        # Workers wait for the cache writer thread; a short GIL switch interval lets it commit promptly.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)
        try:
            await asyncio.gather(*workers)
            await asyncio.sleep(0)  # the last scheduled records run
        finally:
            sys.setswitchinterval(switch_interval)
            for w in workers:
                w.cancel()
            for ep in self.endpoints:
                for client in ep.clients:
                    await client.close()
        if fatal:
            raise fatal[0]

    def _pick(self) -> Endpoint:
        """Round robin over endpoints that are not cooling down; if all are, the one that recovers first."""
        now = time.monotonic()
        n = len(self.endpoints)
        for i in range(n):
            ep = self.endpoints[(self._rr + i) % n]
            if ep.cool_until <= now:
                self._rr = (self._rr + i + 1) % n
                return ep
        return min(self.endpoints, key=lambda e: e.cool_until)

    async def _one(self, r: Request, stats: RunStats) -> Completion | Failure:
        attempt = 0
        while True:
            if self.limiter is not None:
                await self.limiter.acquire(estimated_tokens(r))
            ep = self._pick()
            stats.sent += 1
            try:
                result = await self._call(ep, r)
                ep.failures_in_a_row = ep.hopeless_in_a_row = 0
                if isinstance(result, Completion):
                    stats.prompt_tokens += result.prompt_tokens
                    stats.completion_tokens += result.completion_tokens
                    stats.cost_usd += result.cost_usd
                if attempt:
                    stats.retried += 1
                return result
            except Rejected as e:
                if attempt:
                    stats.retried += 1
                return Failure(r.key, self.redact(e.reason), self.redact(e.raw))
            except Retryable as e:
                attempt += 1
                stats.retries += 1
                if e.hopeless:
                    ep.hopeless_in_a_row += 1
                    if ep.hopeless_in_a_row >= HOPELESS_TRIES and all(
                            other.hopeless_in_a_row >= HOPELESS_TRIES for other in self.endpoints):
                        raise RunFailed(self.redact(f"{e.reason} (stopped after {ep.hopeless_in_a_row} tries: "
                                                    "retrying cannot help)"))
                if e.endpoint_fault or e.retry_after:
                    ep.failures_in_a_row += 1
                    pause = e.retry_after if e.retry_after is not None else min(
                        self.spec.cooldown_s, self.spec.backoff_s * 2 ** (ep.failures_in_a_row - 1))
                    if len(self.endpoints) > 1:
                        ep.cool_until = max(ep.cool_until, time.monotonic() + pause)
                if attempt > self.spec.max_retries:
                    stats.retried += 1
                    return Failure(r.key, self.redact(f"gave up after {attempt} attempts; last error: {e.reason} ({ep.url})"),
                                   self.redact(e.raw))
                delay = min(self.spec.max_backoff_s, self.spec.backoff_s * 2 ** (attempt - 1))
                delay = delay / 2 + random.uniform(0, delay / 2)  # jitter: retries do not arrive in waves
                if e.retry_after is not None:
                    delay = max(delay, e.retry_after)
                await asyncio.sleep(delay)

    async def _call(self, ep: Endpoint, r: Request) -> Completion | Failure:
        import openai

        import httpx2

        body = self.body(r, ep)
        path = self.path(body)
        try:
            # The client's generic post: its auth, base URL, timeout and typed errors, without building
            # pydantic models for every request and response (a few ms each, the bottleneck at high
            # concurrency); the body is already the wire JSON.
            self._turn += 1
            client = ep.clients[self._turn % len(ep.clients)]
            response = await client.post(path, cast_to=httpx2.Response, body=body)
            try:
                data = json.loads(response.content)
            except ValueError:
                raise Retryable("response body is not JSON", raw=response.text[:2000]) from None
        except openai.APIConnectionError as e:  # APITimeoutError included: the transport reports a refused connect as one
            reason, hopeless = network_problem(e, ep.url, self.spec.timeout_s)
            raise Retryable(reason, hopeless=hopeless) from None
        except openai.APIStatusError as e:
            status = e.status_code
            raw = _body_text(e)
            if status in RETRY_STATUS or status >= 500:
                wait_s = retry_after_seconds(getattr(e.response, "headers", None))
                raise Retryable(f"HTTP {status}", raw=raw, retry_after=wait_s,
                                endpoint_fault=status != 409) from None
            if status in (401, 403):
                raise RunFailed(self.redact(f"HTTP {status} from {ep.url}: the key in ${self.spec.api_key_env} was refused; "
                                            "check it (and that it is meant for this server)")) from None
            if status == 404:
                raise RunFailed(self.redact(f"HTTP 404 from {ep.url}: no model {self.model!r} there (or no such "
                                            f"endpoint); {raw[:200] if raw else ''}")) from None
            lowered = (raw or "").lower()
            if status in (400, 422) and "response_format" in body and ("response_format" in lowered or "json_schema" in lowered):
                ep.schema_ok = False  # the server does not do structured output: ask again, parse tolerantly
                raise Retryable("server does not support response_format; retrying without it", raw=raw,
                                endpoint_fault=False) from None
            if status == 400 and ep.max_tokens_field == "max_tokens" and "max_tokens" in lowered and "max_completion_tokens" in lowered:
                ep.max_tokens_field = "max_completion_tokens"
                raise Retryable("server wants max_completion_tokens; retrying", raw=raw, endpoint_fault=False) from None
            raise Rejected(f"HTTP {status}: {_short(raw, 300)}", raw=raw) from None
        except openai.APIResponseValidationError as e:
            raise Retryable("response body is not valid JSON", raw=_body_text(e)) from None
        except ValueError as e:  # a body that does not parse as JSON
            raise Retryable(f"response body is not valid JSON ({type(e).__name__})", raw=str(e)[:500]) from None
        return self.parse(r, data)

    def close(self) -> None:
        pass


def _choice_logprobs(choice: dict, choices: tuple[str, ...]) -> dict[str, float] | None:
    """log P(choice) from the first generated token's top logprobs (single-token choices such as Yes/No
    are exact; longer ones are scored by their first token)."""
    top: list[tuple[str, float]] = []
    lp = choice.get("logprobs")
    if not lp:
        return None
    if lp.get("content"):  # chat
        first = lp["content"][0]
        top = [(t["token"], t["logprob"]) for t in first.get("top_logprobs") or []] or [(first["token"], first["logprob"])]
    elif lp.get("top_logprobs"):  # completions
        top = list((lp["top_logprobs"][0] or {}).items())
    if not top:
        return None
    scores = {}
    for c in choices:
        want = c.strip()
        exact = [v for t, v in top if t.strip() == want]
        prefix = [v for t, v in top if t.strip() and want.startswith(t.strip())]
        values = exact or prefix
        scores[c] = math.log(sum(math.exp(v) for v in values)) if values else -math.inf
    return scores


def _body_text(e) -> str | None:
    response = getattr(e, "response", None)
    try:
        return response.text if response is not None else None
    except Exception:  # a streamed or closed body
        return None


def _short(value, n: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str) if value is not None else ""
    return text if len(text) <= n else text[:n] + "..."


def _capture(errors, fn, *args):
    try:
        fn(*args)
    except BaseException as e:  # re-raised in the caller's thread
        errors.append(e)
