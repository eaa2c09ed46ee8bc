"""judge: the expert keeps only good pairs, with a structured verdict per pair.

Two modes. ``json``: one request per pair asking for a verdict object (server-side JSON-schema output
where supported, a tolerant parse otherwise, then one repair attempt). ``logprob``: one yes/no question
per verdict field, read from the log-probabilities of "Yes" and "No", for small local models whose
free-text verdicts are unreliable; their yes/no bias is divided out by contextual calibration (Zhao et
al., 2021: the same question asked about a content-free "N/A" pair defines P(yes) = 0.5). The keep rule (``judge.keep`` in params) says which verdict fields
must hold for a pair to stay.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import BadInput, RunFailed
from builder.metrics import reject, write_outputs
from builder.stages.base import provenance

VERDICT_FIELDS = ("chosen_harmless", "chosen_helpful", "rejected_harmful", "instruction_matches_response")
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {**{name: {"type": "boolean"} for name in VERDICT_FIELDS}, "rationale": {"type": "string"}},
    "required": [*VERDICT_FIELDS, "rationale"],
    "additionalProperties": False,
}
# logprob mode: which side of the pair each question looks at, and the question.
QUESTIONS = {
    "chosen_harmless": ("chosen", "Is the response free of hateful, illegal, sexual and self-harm content?"),
    "chosen_helpful": ("chosen", "Does the response address the instruction helpfully, or refuse it politely?"),
    "rejected_harmful": ("rejected", "Does the response contain hateful, illegal, sexual or self-harm content?"),
    "instruction_matches_response": ("rejected", "Is the response an answer to the instruction?"),
}


@dataclass
class JudgeSetup:
    mode: str  # json | logprob
    template: object  # json: {prompt}{chosen}{rejected}; logprob: {instruction}{response}{question}
    keep: dict = field(default_factory=lambda: {"chosen_harmless": True, "rejected_harmful": True})
    yes_threshold: float = 0.5  # logprob: P(yes) at or above this reads as yes
    calibrate: bool = True  # logprob: divide out the model's yes/no bias, measured on a content-free pair

    def __post_init__(self):
        if self.mode not in ("json", "logprob"):
            raise BadInput(f"judge.mode {self.mode!r}: accepted: json, logprob")
        unknown = sorted(set(self.keep) - set(VERDICT_FIELDS))
        if unknown:
            raise BadInput(f"judge.keep names unknown verdict fields {unknown}; accepted: {', '.join(VERDICT_FIELDS)}")


def judge(records: list[dict], out: Path, *, setup: JudgeSetup, llm, gen, use_cache: bool = True,
          rejects_path: Path | None = None, metrics_path: Path | None = None) -> dict:
    verdicts, failures, summary = (_json_verdicts if setup.mode == "json" else _logprob_verdicts)(
        records, setup, llm, gen, use_cache)
    kept, rejects = [], []
    for rec in records:
        if rec["id"] in failures:
            reason, detail, raw = failures[rec["id"]]
            rejects.append(reject("judge", rec, reason, detail, raw=raw))
            continue
        verdict = verdicts[rec["id"]]
        judged = {**rec, "is_safe": verdict["chosen_harmless"],
                  "meta": provenance(rec.get("meta"), "judge", rec["id"], **verdict, mode=setup.mode, model=llm.model,
                                     backend=llm.backend, template=setup.template.as_meta(), keep=setup.keep)}
        failed = [name for name, wanted in setup.keep.items() if verdict[name] != wanted]
        if failed:
            detail = ", ".join(f"{name} is {verdict[name]}" for name in failed)
            rejects.append(reject("judge", judged, "judge-rule", f"{detail}; rationale: {verdict.get('rationale', '')}"))
        else:
            kept.append(judged)
    return write_outputs("judge", out, kept, "preference", read=records, rejects=rejects, rejects_path=rejects_path,
                         metrics_path=metrics_path, mode=setup.mode, keep=setup.keep, llm=summary)


def _json_verdicts(records, setup: JudgeSetup, llm, gen, use_cache):
    from builder.llm import Request, run_requests
    from builder.llm.runner import UNPARSEABLE

    def ask(rec):
        return (("user", setup.template.render(prompt=rec["prompt"], chosen=rec["chosen"], rejected=rec["rejected"])),)

    first = run_requests(llm, [Request(r["id"], messages=ask(r), params=gen, json_schema=VERDICT_SCHEMA) for r in records],
                         use_cache=use_cache, desc="judge")
    verdicts, failures, broken = {}, {}, {}
    for rec in records:
        failure = first.failures.get(rec["id"])
        if failure is not None and failure.reason.startswith(UNPARSEABLE):
            broken[rec["id"]] = (failure.raw, failure.reason)  # answered, but not with a verdict: repair
        elif failure is not None:
            failures[rec["id"]] = ("llm-failure", failure.reason, failure.raw)
        else:
            verdicts[rec["id"]] = json.loads(first.completions[rec["id"]].text)  # the engine checked the schema
    if broken:  # one repair attempt: show the model its answer and what was wrong with it
        by_id = {r["id"]: r for r in records}
        repairs = [Request(f"{rid}:repair", params=gen, json_schema=VERDICT_SCHEMA, messages=(
            *ask(by_id[rid]), ("assistant", text or ""),
            ("user", f"That answer could not be used ({problem}). Reply with only a JSON object with the boolean "
                     f"fields {', '.join(VERDICT_FIELDS)} and a string field rationale.")))
            for rid, (text, problem) in broken.items()]
        second = run_requests(llm, repairs, use_cache=use_cache, desc="judge: repair")
        for rid, (text, problem) in broken.items():
            completion, failure = second.completions.get(f"{rid}:repair"), second.failures.get(f"{rid}:repair")
            if completion is not None:
                verdicts[rid] = json.loads(completion.text)
            else:
                raw = f"{text}\n--- repair ---\n{failure.raw or ''}"
                failures[rid] = ("unparseable-verdict", f"{problem}; after one repair attempt: {failure.reason}", raw)
    return verdicts, failures, {"first": first.summary.as_metrics()}


def _logprob_verdicts(records, setup: JudgeSetup, llm, gen, use_cache):
    from builder.llm import Request, run_requests

    def ask(key, instruction, response, question):
        prompt = setup.template.render(instruction=instruction, response=response, question=question)
        return Request(key, prompt=prompt, params=gen, choices=("Yes", "No"))

    requests = [ask(f"{rec['id']}:{name}", rec["prompt"], rec[side], question)
                for rec in records for name, (side, question) in QUESTIONS.items()]
    if setup.calibrate:  # contextual calibration: the same question about a content-free pair
        requests += [ask(f"calibration:{name}", "N/A", "N/A", question) for name, (_, question) in QUESTIONS.items()]
    outcome = run_requests(llm, requests, use_cache=use_cache, desc="judge (logprob)")

    def p_yes(key):
        completion = outcome.completions.get(key)
        if completion is None or not completion.choice_logprobs:
            failure = outcome.failures.get(key)
            return None, (failure.reason, failure.raw) if failure else ("no log-probabilities returned", None)
        yes, no = completion.choice_logprobs["Yes"], completion.choice_logprobs["No"]
        return 1 / (1 + math.exp(no - yes)), None  # P(yes) among {yes, no}

    baseline = {name: 0.5 for name in QUESTIONS}
    if setup.calibrate:
        for name in QUESTIONS:
            p, problem = p_yes(f"calibration:{name}")
            if problem:
                raise RunFailed(f"judge: the calibration request failed ({problem[0]}); set judge.calibrate: false "
                                "to judge without it")
            baseline[name] = p
    verdicts, failures = {}, {}
    for rec in records:
        probabilities, problem = {}, None
        for name in QUESTIONS:
            p, problem = p_yes(f"{rec['id']}:{name}")
            if problem:
                break
            b = baseline[name]  # P(yes) re-weighted so that the content-free answer sits at 0.5
            probabilities[name] = (p / b) / (p / b + (1 - p) / (1 - b))
        if problem:
            failures[rec["id"]] = ("llm-failure", problem[0], problem[1])
            continue
        verdicts[rec["id"]] = {
            **{name: p >= setup.yes_threshold for name, p in probabilities.items()},
            "p_yes": {name: round(p, 4) for name, p in probabilities.items()},
            "rationale": "logprob mode: " + ", ".join(f"P(yes | {n}) = {p:.2f}" for n, p in probabilities.items()),
        }
    return verdicts, failures, {**outcome.summary.as_metrics(), "calibration_p_yes": {k: round(v, 4) for k, v in baseline.items()}}


def run(in_path: str, out: Path, *, rejects: Path | None = None, metrics: Path | None = None,
        mode: str | None = None, limit: int | None = None, use_cache: bool = True,
        llm_flags: dict | None = None, gen_flags: dict | None = None) -> dict:
    """The `builder judge` command: params ``judge:`` (over ``llm:``) with command-line flags on top."""
    from builder.config import pick, section
    from builder.llm import LLMSpec, gen_params
    from builder.prompts import load_template
    from builder.validate import load_records

    params = section("judge")
    mode = pick(mode, params, "mode", "json")
    template = load_template(params.get("template") or ("judge_json" if mode == "json" else "judge_question"))
    template.check_fields(("prompt", "chosen", "rejected") if mode == "json" else ("instruction", "response", "question"))
    setup = JudgeSetup(mode, template, keep=params.get("keep", {"chosen_harmless": True, "rejected_harmful": True}),
                       yes_threshold=params.get("yes_threshold", 0.5), calibrate=params.get("calibrate", True))
    llm = LLMSpec.from_params(params, **(llm_flags or {}))
    gen = gen_params({"max_new_tokens": 256 if mode == "json" else 1, **params}, **(gen_flags or {}))
    records = load_records(in_path, "preference")[:limit]
    return judge(records, out, setup=setup, llm=llm, gen=gen, use_cache=use_cache, rejects_path=rejects,
                 metrics_path=metrics)
