"""filter: drop low-quality induced instructions, each with its reason.

Heuristics first (free): empty, too short or long, degenerate repetition, template leakage, an
instruction that copies its response, refusal-like text, duplicates. Then, optionally, an expert
quality score 1-5 (self-curation style) with a threshold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from builder.metrics import reject, write_outputs
from builder.stages.base import provenance

DEFAULT_LEAK_MARKERS = ("### response", "### instruction", "### input", "below is a response",
                        "write the instruction", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "[inst]")
DEFAULT_REFUSAL_MARKERS = ("i'm sorry", "i am sorry", "i cannot", "i can't", "as an ai", "i won't",
                           "i will not", "i'm not able to", "i apologize")
_WORD = re.compile(r"\w+")
_NON_WORD = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class Rules:
    min_words: int = 3
    max_words: int = 300
    max_repeat_ratio: float = 0.5  # share of repeated word 3-grams that makes an instruction degenerate
    max_copy_overlap: float = 0.8  # word-set Jaccard with its response that makes it a copy
    leak_markers: tuple[str, ...] = DEFAULT_LEAK_MARKERS
    refusal_markers: tuple[str, ...] = DEFAULT_REFUSAL_MARKERS

    @classmethod
    def from_params(cls, params: dict) -> "Rules":
        names = {f for f in cls.__dataclass_fields__}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items() if k in names}
        return cls(**values)


def heuristic_reason(rec: dict, rules: Rules) -> tuple[str, str] | None:
    """(reason, detail) when an instruction fails a heuristic, else None."""
    text = (rec.get("instruction") or "").strip()
    words = _WORD.findall(text.lower())
    if not words:
        return "empty", "no words"
    if len(words) < rules.min_words:
        return "too-short", f"{len(words)} words < filter.min_words {rules.min_words}"
    if len(words) > rules.max_words:
        return "too-long", f"{len(words)} words > filter.max_words {rules.max_words}"
    lowered = text.lower()
    for marker in rules.leak_markers:
        if marker in lowered:
            return "template-leak", f"contains {marker!r}"
    if len(words) >= 6:
        grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
        repeated = 1 - len(set(grams)) / len(grams)
        if repeated > rules.max_repeat_ratio:
            return "degenerate", f"{repeated:.0%} of word 3-grams repeat (> {rules.max_repeat_ratio:.0%})"
    for marker in rules.refusal_markers:
        if lowered.startswith(marker) or f". {marker}" in lowered:
            return "refusal", f"reads as a refusal ({marker!r})"
    response_words = set(_WORD.findall((rec.get("response") or "").lower()))
    if response_words:
        overlap = len(set(words) & response_words) / len(set(words) | response_words)
        if overlap >= rules.max_copy_overlap:
            return "copies-response", f"word overlap with its response {overlap:.2f} >= {rules.max_copy_overlap}"
    return None


@dataclass
class QualityCheck:
    """Optional expert score: the request for each record and how to read the answer."""

    template: object  # builder.prompts.Template with {instruction} and {response}
    min_quality: int = 3
    mode: str = "logprob"  # logprob: score the choices 1..5 (small local models); text: parse a digit
    choices: tuple[str, ...] = field(default=("1", "2", "3", "4", "5"))


def filter_instructions(records: list[dict], out: Path, *, rules: Rules, quality: QualityCheck | None = None,
                        llm=None, gen=None, use_cache: bool = True, rejects_path: Path | None = None,
                        metrics_path: Path | None = None) -> dict:
    """Keep the instructions that pass; everything dropped goes to rejects with its reason."""
    kept, rejects, seen = [], [], {}
    for rec in records:
        found = heuristic_reason(rec, rules)
        if found is None:
            # the same normalisation as validate's near-duplicates: case, punctuation and spacing do not count
            key = (_NON_WORD.sub(" ", rec["instruction"].lower()).strip(), rec.get("response_id") or rec.get("response"))
            if key in seen:
                found = ("duplicate", f"same instruction as {seen[key]} for the same response")
            else:
                seen[key] = rec["id"]
        if found:
            rejects.append(reject("filter", rec, *found))
        else:
            kept.append(rec)
    extra = {}
    if quality is not None and kept:
        kept, quality_rejects, extra = _score_quality(kept, quality, llm, gen, use_cache)
        rejects += quality_rejects
    return write_outputs("filter", out, kept, "instruction", read=records, rejects=rejects,
                         rejects_path=rejects_path, metrics_path=metrics_path, **extra)


def _score_quality(records, quality: QualityCheck, llm, gen, use_cache):
    from builder.llm import Request, run_requests

    requests = []
    for rec in records:
        prompt = quality.template.render(instruction=rec["instruction"], response=rec["response"])
        requests.append(Request(rec["id"], prompt=prompt, params=gen,
                                choices=quality.choices if quality.mode == "logprob" else None))
    outcome = run_requests(llm, requests, use_cache=use_cache, desc="filter: quality")
    kept, rejects, scores = [], [], []
    for rec in records:
        if rec["id"] in outcome.failures:
            failure = outcome.failures[rec["id"]]
            rejects.append(reject("filter", rec, "llm-failure", failure.reason, raw=failure.raw))
            continue
        completion = outcome.completions[rec["id"]]
        score = _read_score(completion, quality)
        if score is None:
            rejects.append(reject("filter", rec, "unparseable-score", "no score 1-5 in the output", raw=completion.text))
            continue
        scores.append(score)
        # the same record, scored: its own id is its parent (parents_of skips it; the chain goes on)
        rec = {**rec, "meta": provenance(rec.get("meta"), "filter", rec["id"], quality=score, model=llm.model,
                                         backend=llm.backend, template=quality.template.as_meta())}
        if score < quality.min_quality:
            rejects.append(reject("filter", rec, "low-quality", f"score {score} < filter.min_quality {quality.min_quality}"))
        else:
            kept.append(rec)
    extra = {"quality_scores": {str(s): scores.count(s) for s in sorted(set(scores))}, "llm": outcome.summary.as_metrics()}
    return kept, rejects, extra


def _read_score(completion, quality: QualityCheck) -> int | None:
    if quality.mode == "logprob" and completion.choice_logprobs:
        best = max(completion.choice_logprobs, key=completion.choice_logprobs.get)
        return int(best)
    match = re.search(r"[1-5]", completion.text or "")
    return int(match.group()) if match else None


def run(in_path: str, out: Path, *, rejects: Path | None = None, metrics: Path | None = None,
        quality: bool | None = None, limit: int | None = None, use_cache: bool = True,
        llm_flags: dict | None = None, gen_flags: dict | None = None) -> dict:
    """The `builder filter` command: params ``filter:`` with command-line flags on top."""
    from builder.config import pick, section
    from builder.validate import load_records

    params = section("filter")
    rules = Rules.from_params(params)
    records = load_records(in_path, "instruction")[:limit]
    check, llm, gen = None, None, None
    if pick(quality, params, "quality", False):
        from builder.llm import LLMSpec, gen_params
        from builder.prompts import load_template

        template = load_template(params.get("quality_template", "filter_quality"))
        template.check_fields(("instruction", "response"))
        check = QualityCheck(template, int(params.get("min_quality", 3)), params.get("quality_mode", "logprob"))
        llm = LLMSpec.from_params(params, **(llm_flags or {}))
        gen = gen_params({"max_new_tokens": 4, **params}, **(gen_flags or {}))
    return filter_instructions(records, out, rules=rules, quality=check, llm=llm, gen=gen, use_cache=use_cache,
                               rejects_path=rejects, metrics_path=metrics)
