"""The LLM stage loop, written once. A stage that asks a model something is an ``LLMTask``:

    class Respond(LLMTask):
        stage = "respond"
        def format_input(self, record) -> list[Request]: ...          # one or more (keys unique per record)
        def format_output(self, record, completions) -> dict | Reject: ...  # in format_input's order

``run_task`` does the rest for every task alike: the cache (through ``run_requests``), failures
(``llm-failure`` with the raw error), empty and truncated outputs (``empty-output``, ``truncated``),
the LLM summary line, and the exit code: a stage whose calls all failed, or more than
``llm.max_failed_fraction`` of them, fails (exit 1) and writes no output that DVC could record as done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from builder.config import StageConfig
from builder.stages.base import Reject, StageResult

NOT_SENT = "not sent: max_budget_usd"  # the runner's reason for requests a budget stopped: not a failure


@dataclass
class LLMStageConfig(StageConfig):
    """What every LLM stage shares. ``llm`` (which model, where) and ``gen`` (decoding) are built from
    params ``llm:`` < the stage's section < flags by ``load``; the stage's own keys are its fields."""

    limit: int | None = field(default=None, metadata={"help": "Only the first N input records."})
    use_cache: bool = field(default=True, metadata={"flag_only": True, "help": "Answer from the completion cache when it can (--no-cache)."})
    llm: object = None  # builder.llm.LLMSpec, built by load (not a params key)
    gen: object = None  # builder.llm.GenParams, built by load (not a params key)

    @classmethod
    def ignored_keys(cls) -> set[str]:
        from builder.llm import GEN_KEYS, LLM_KEYS

        return set(LLM_KEYS) | set(GEN_KEYS)

    @classmethod
    def load(cls, params: dict, *, llm_flags: dict | None = None, gen_flags: dict | None = None,
             gen_defaults: dict | None = None, llm_defaults: dict | None = None, **flags):
        """The stage's section of params.yaml with flags on top (None = flag not given)."""
        from builder.llm import LLMSpec, gen_params

        own = {k: v for k, v in (params or {}).items() if k not in cls.ignored_keys()}
        config = cls.from_params(own, **flags)
        if config.limit is not None and config.limit < 0:
            from builder.errors import BadInput

            raise BadInput(f"--limit must be >= 0, got {config.limit}")
        config.llm = LLMSpec.from_params(params, llm_defaults, **(llm_flags or {}))
        config.gen = gen_params({**(gen_defaults or {}), **(params or {})}, llm_defaults, **(gen_flags or {}))
        return config

    def take(self, records: list[dict]) -> list[dict]:
        return records if self.limit is None else records[: self.limit]


class LLMTask:
    stage: str = ""
    check_empty: bool = True  # free-text answers: an empty one is rejected (choice-scoring tasks set False)
    drop_truncated: bool = True  # an answer cut off at max_new_tokens is rejected

    def format_input(self, record: dict) -> list:
        raise NotImplementedError

    def format_output(self, record: dict, completions: list) -> dict | Reject | list:
        raise NotImplementedError

    def failure_reason(self, failure) -> str:
        """The reject reason for a request that ended in a Failure. Only ``llm-failure`` counts against
        llm.max_failed_fraction: a budget stop is a choice, not a fault."""
        return "over-budget" if failure.reason.startswith(NOT_SENT) else "llm-failure"

    def reject(self, record: dict, reason: str, detail: str = "", raw: str | None = None) -> Reject:
        return Reject(self.stage, reason, detail, record=record, raw=raw)


@dataclass
class TaskRun:
    """The raw outcome, for tasks that need more than the kept records (e.g. the summary object)."""

    result: StageResult
    summary: object


def run_task(task: LLMTask, records: list[dict], llm, *, use_cache: bool = True, backend=None) -> TaskRun:
    """Every record ends kept or rejected with a reason; none is lost. ``llm`` is an LLMSpec; its
    ``max_failed_fraction`` decides when failed calls fail the stage. ``backend``: one other than the
    spec's own (e.g. the moderation endpoint), with the same cache, retries and summary."""
    from builder.llm import run_requests

    from dataclasses import replace

    per_record: list[tuple[dict, list]] = []
    requests = []
    for n, rec in enumerate(records):
        reqs = task.format_input(rec)
        reqs = [reqs] if not isinstance(reqs, (list, tuple)) else list(reqs)
        # Keys are made unique here (record position + the task's own key), so duplicate input records
        # are simply asked twice from the cache; the cache key is the content, not this key.
        reqs = [replace(r, key=f"{n}:{r.key}") for r in reqs]
        if len({r.key for r in reqs}) != len(reqs):
            raise ValueError(f"{task.stage}: format_input gave two requests the same key (record {n})")
        per_record.append((rec, reqs))
        requests += reqs
    from builder.llm.runner import RunStopped

    stopped = None
    try:
        outcome = run_requests(llm, requests, use_cache=use_cache, desc=task.stage, backend=backend)
    except RunStopped as e:  # what arrived is kept (output or rejects); the stage still fails
        outcome, stopped = e.outcome, str(e)

    kept, rejects = [], []
    for rec, reqs in per_record:
        failure = next((outcome.failures[r.key] for r in reqs if r.key in outcome.failures), None)
        if failure is not None:
            rejects.append(task.reject(rec, task.failure_reason(failure), failure.reason, raw=failure.raw))
            continue
        completions = [outcome.completions[r.key] for r in reqs]
        problem = _text_problem(task, rec, reqs, completions)
        if problem is not None:
            rejects.append(problem)
            continue
        out = task.format_output(rec, completions)
        for item in out if isinstance(out, list) else [out]:  # a task may make several records of one
            (rejects if isinstance(item, Reject) else kept).append(item)

    result = StageResult(task.stage, read=len(records), kept=kept, rejects=rejects,
                         extra={"llm": outcome.summary.as_metrics()})
    result.notes.append(f"llm ({llm.backend}, {llm.model}): {outcome.summary}")
    settle(result, llm)
    if stopped:  # sending stopped (e.g. the cache could not be written): what arrived is kept, the stage fails
        result.exit_code = 1
        result.notes.append(f"error: {stopped}")
    return TaskRun(result, outcome.summary)


def settle(result: StageResult, llm) -> StageResult:
    """The exit code from the calls that failed: all of them, or more than ``llm.max_failed_fraction``
    of the records, fail the stage (exit 1). It only ever raises the exit code."""
    failed = [r for r in result.rejects if r.reason == "llm-failure"]
    if result.read and len(failed) == result.read:
        result.exit_code = 1
        result.notes.append(f"error: every LLM call failed; first reason: {failed[0].detail}")
    elif result.read and len(failed) / result.read > llm.max_failed_fraction:
        result.exit_code = 1
        result.notes.append(f"error: {len(failed)} of {result.read} records failed (more than llm.max_failed_fraction "
                            f"= {llm.max_failed_fraction}); rerun to retry them (done ones come from the cache)")
    return result


def _text_problem(task: LLMTask, rec: dict, reqs, completions) -> Reject | None:
    for req, c in zip(reqs, completions):
        if task.check_empty and not (c.text or "").strip() and c.choice_logprobs is None:
            return task.reject(rec, "empty-output", "the model returned no text", raw=c.text)
        if task.drop_truncated and c.finish_reason == "length":
            return task.reject(rec, "truncated", f"stopped at max_new_tokens={req.params.max_new_tokens}; "
                               f"raise {task.stage}.max_new_tokens", raw=c.text)
    return None
