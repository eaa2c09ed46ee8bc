"""What run_requests returns: every request's result and the run's summary.

Below both ``builder.llm`` (which re-exports them) and ``builder.llm.runner`` (which builds them), so the
runner does not import its own package.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from builder.llm.base import Completion, Failure


@dataclass
class Summary:
    total: int = 0
    done: int = 0  # completions, cached ones included
    cached: int = 0  # answered from the cache (no request sent)
    waited: int = 0  # answered by another process that had the request in flight (no request sent)
    retried: int = 0  # requests that succeeded or failed only after retries
    failed: int = 0
    prompt_tokens: int = 0  # spent in this run (cached completions cost nothing again)
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        waited = f", {self.waited} waited for another process" if self.waited else ""
        line = (f"{self.done}/{self.total} done ({self.cached} from cache{waited}), {self.retried} retried, "
                f"{self.failed} failed; tokens {self.prompt_tokens} in / {self.completion_tokens} out")
        if self.cost_usd:
            line += f"; cost ${self.cost_usd:.4f}"
        line += f"; {self.seconds:.1f}s"
        return line

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    def as_metrics(self) -> dict:
        """Only what depends on inputs, params and the cache's answers. Timings, cache hits, retries,
        tokens spent and money differ between identical reruns, so they go to stderr (``str(self)``),
        not into metrics that git and dvc.lock keep."""
        return {"total": self.total, "done": self.done, "failed": self.failed}


@dataclass
class Outcome:
    completions: dict[str, Completion]
    failures: dict[str, Failure]
    summary: Summary
