"""Yes/no questions answered from log-probabilities, for small local models whose free-text verdicts are
unreliable: one request per question (choices "Yes" / "No"), P(yes) = P(Yes) / (P(Yes) + P(No)).

A small model leans to one answer whatever it is shown; contextual calibration (Zhao et al., 2021)
divides that out: the same question about a content-free "N/A" pair defines P(yes) = 0.5. Shared by the
judge stage (pairs) and the judge scorer (generations), so both ask and read questions one way.
"""

from __future__ import annotations

import math

CHOICES = ("Yes", "No")
CONTENT_FREE = "N/A"  # the calibration pair's instruction and response


def question(template, key: str, params, *, instruction: str, response: str, question: str):
    """The Request asking ``question`` about (instruction, response) through ``template`` (e.g.
    judge_question: placeholders instruction, response, question)."""
    from builder.llm import Request

    prompt = template.render(instruction=instruction, response=response, question=question)
    return Request(key, prompt=prompt, params=params, choices=CHOICES)


def p_yes(completion) -> float | None:
    """P(yes) among {yes, no}, or None when the completion carries no choice log-probabilities."""
    if completion is None or not completion.choice_logprobs:
        return None
    yes, no = completion.choice_logprobs["Yes"], completion.choice_logprobs["No"]
    return 1 / (1 + math.exp(no - yes))


def calibrated(p: float, baseline: float) -> float:
    """P(yes) re-weighted so that the content-free answer ``baseline`` sits at 0.5."""
    return (p / baseline) / (p / baseline + (1 - p) / (1 - baseline))


def answers(names, completions: list, baseline: dict[str, float]) -> dict[str, float] | None:
    """Calibrated P(yes) per question name (in the order the questions were asked), or None when a
    completion carries no log-probabilities (the caller rejects the record)."""
    found = {}
    for name, completion in zip(names, completions):
        p = p_yes(completion)
        if p is None:
            return None
        found[name] = calibrated(p, baseline[name])
    return found


def calibration(spec, template, params, questions: dict[str, str], *, use_cache: bool = True,
                desc: str = "calibration", switch_off: str = "") -> dict[str, float]:
    """P(yes) of each question (name -> text) about the content-free pair: the baselines ``calibrated``
    divides out. Raises RunFailed when one cannot be read, saying how to ``switch_off`` calibration."""
    from builder.errors import RunFailed
    from builder.llm import run_requests

    requests = [question(template, f"calibration:{name}", params, instruction=CONTENT_FREE, response=CONTENT_FREE,
                         question=text) for name, text in questions.items()]
    outcome = run_requests(spec, requests, use_cache=use_cache, desc=desc)
    baseline = {}
    for name in questions:
        p = p_yes(outcome.completions.get(f"calibration:{name}"))
        if p is None:
            failure = outcome.failures.get(f"calibration:{name}")
            reason = failure.reason if failure else "no log-probabilities returned"
            raise RunFailed(f"{desc}: the calibration request failed ({reason}); {switch_off} to judge without it")
        baseline[name] = p
    return baseline
