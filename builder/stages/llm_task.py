"""The LLM stage loop, written once. A stage that asks a model something is an ``LLMTask``:

    class Respond(LLMTask):
        stage = "respond"
        def format_input(self, record) -> list[Request]: ...          # one or more requests
        def format_output(self, record, completions) -> dict | Reject: ...  # in format_input's order

``run_task`` does the rest for every task alike: the cache (through ``run_requests``), failures
(``llm-failure`` with the raw error), empty and truncated outputs (``empty-output``, ``truncated``),
the LLM summary line, and the exit code: a stage whose calls all failed, or more than
``llm.max_failed_fraction`` of them, fails (exit 1) and writes no output that DVC could record as done.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.stages.base import Reject, StageResult


class LLMTask:
    stage: str = ""
    check_empty: bool = True  # free-text answers: an empty one is rejected (choice-scoring tasks set False)
    drop_truncated: bool = True  # an answer cut off at max_new_tokens is rejected

    def format_input(self, record: dict) -> list:
        raise NotImplementedError

    def format_output(self, record: dict, completions: list) -> dict | Reject:
        raise NotImplementedError

    def reject(self, record: dict, reason: str, detail: str = "", raw: str | None = None) -> Reject:
        return Reject(self.stage, reason, detail, record=record, raw=raw)


@dataclass
class TaskRun:
    """The raw outcome, for tasks that need more than the kept records (e.g. the summary object)."""

    result: StageResult
    summary: object


def run_task(task: LLMTask, records: list[dict], llm, *, use_cache: bool = True,
             max_failed_fraction: float | None = None) -> TaskRun:
    """Every record ends kept or rejected with a reason; none is lost. ``llm`` is an LLMSpec (its
    ``max_failed_fraction`` unless one is given here)."""
    if max_failed_fraction is None:
        max_failed_fraction = llm.max_failed_fraction
    from builder.llm import run_requests

    per_record: list[tuple[dict, list]] = []
    requests = []
    seen_keys: set[str] = set()
    for n, rec in enumerate(records):
        reqs = task.format_input(rec)
        reqs = [reqs] if not isinstance(reqs, (list, tuple)) else list(reqs)
        for req in reqs:
            if req.key in seen_keys:  # a programming error in the task, not the user's input
                raise ValueError(f"{task.stage}: duplicate request key {req.key!r} (record {n})")
            seen_keys.add(req.key)
        per_record.append((rec, reqs))
        requests += reqs
    from builder.llm.runner import RunStopped

    stopped = None
    try:
        outcome = run_requests(llm, requests, use_cache=use_cache, desc=task.stage)
    except RunStopped as e:  # what arrived is kept (output or rejects); the stage still fails
        outcome, stopped = e.outcome, str(e)

    kept, rejects, failed = [], [], 0
    for rec, reqs in per_record:
        failure = next((outcome.failures[r.key] for r in reqs if r.key in outcome.failures), None)
        if failure is not None:
            failed += 1
            rejects.append(task.reject(rec, "llm-failure", failure.reason, raw=failure.raw))
            continue
        completions = [outcome.completions[r.key] for r in reqs]
        problem = _text_problem(task, rec, reqs, completions)
        if problem is not None:
            rejects.append(problem)
            continue
        out = task.format_output(rec, completions)
        (rejects if isinstance(out, Reject) else kept).append(out)

    result = StageResult(task.stage, read=len(records), kept=kept, rejects=rejects,
                         extra={"llm": _deterministic(outcome.summary)})
    result.notes.append(f"llm ({llm.backend}, {llm.model}): {outcome.summary}")
    if stopped:
        result.exit_code = 1
        result.notes.append(f"error: {stopped}")
    elif records and failed == len(records):
        result.exit_code = 1
        result.notes.append(f"error: every LLM call failed; first reason: {rejects[0].detail}")
    elif records and failed / len(records) > max_failed_fraction:
        result.exit_code = 1
        result.notes.append(f"error: {failed} of {len(records)} records failed (more than llm.max_failed_fraction "
                            f"= {max_failed_fraction}); rerun to retry them (done ones come from the cache)")
    return TaskRun(result, outcome.summary)


def _text_problem(task: LLMTask, rec: dict, reqs, completions) -> Reject | None:
    for req, c in zip(reqs, completions):
        if task.check_empty and not (c.text or "").strip() and c.choice_logprobs is None:
            return task.reject(rec, "empty-output", "the model returned no text", raw=c.text)
        if task.drop_truncated and c.finish_reason == "length":
            return task.reject(rec, "truncated", f"stopped at max_new_tokens={req.params.max_new_tokens}; "
                               f"raise {task.stage}.max_new_tokens", raw=c.text)
    return None


def _deterministic(summary) -> dict:
    """Only what depends on inputs, params and the cache's answers: requests, done, failed. Timings,
    cache hits, retries and money differ between identical reruns, so they go to stderr (the summary
    line), not into metrics that git and dvc.lock keep."""
    data = summary.as_dict()
    return {key: data[key] for key in ("total", "done", "failed")}
