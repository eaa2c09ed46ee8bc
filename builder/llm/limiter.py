"""Requests- and tokens-per-minute limits (``llm.max_rpm``, ``llm.max_tpm``): token buckets that
refill continuously and hold about one second's worth, so the send rate is smooth, not bursty."""

from __future__ import annotations

import asyncio
import time


class _Bucket:
    def __init__(self, per_minute: float):
        self.rate = float(per_minute) / 60.0
        self.capacity = max(1.0, self.rate)  # about one second's worth
        self.level = self.capacity
        self.at = time.monotonic()

    def wait_s(self, amount: float, now: float) -> float:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now
        need = min(amount, self.capacity)  # a request bigger than the bucket goes when it is full (then owes)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class RateLimiter:
    """``await limiter.acquire(tokens)`` before each HTTP request (retries included). Event-loop only."""

    def __init__(self, max_rpm: float | None, max_tpm: float | None):
        self.requests = _Bucket(max_rpm) if max_rpm else None
        self.tokens = _Bucket(max_tpm) if max_tpm else None

    async def acquire(self, tokens: int) -> None:
        while True:
            now = time.monotonic()
            wait = max(self.requests.wait_s(1, now) if self.requests else 0.0,
                       self.tokens.wait_s(tokens, now) if self.tokens else 0.0)
            if wait <= 0:
                if self.requests:
                    self.requests.level -= 1
                if self.tokens:
                    self.tokens.level -= tokens
                return
            await asyncio.sleep(wait)


def estimated_tokens(request) -> int:
    """Prompt characters / 4 plus the most the answer may take (what a TPM limit counts)."""
    chars = len(request.prompt or "") + sum(len(content) for _, content in (request.messages or ()))
    return chars // 4 + request.params.max_new_tokens
