"""filter: drop low-quality induced instructions, each with its reason.

Heuristics first (free): empty, too short or long, degenerate repetition, template leakage, an
instruction that copies its response, refusal-like text, duplicates. Then, optionally, an expert
quality score 1-5 (self-curation style) with a threshold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from builder.errors import BadInput
from builder.validate import load_records
from builder.stages.base import Reject, StageIO, StageResult, provenance, write_result
from builder.stages.llm_task import LLMStageConfig, LLMTask, run_task

DEFAULT_LEAK_MARKERS = ("### response", "### instruction", "### input", "below is a response",
                        "write the instruction", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "[inst]")
DEFAULT_REFUSAL_MARKERS = ("i'm sorry", "i am sorry", "i cannot", "i can't", "as an ai", "i won't",
                           "i will not", "i'm not able to", "i apologize")
_WORD = re.compile(r"\w+")
_NON_WORD = re.compile(r"[\W_]+")



@dataclass
class Config(LLMStageConfig):
    section_name = "filter"
    min_words: int = field(default=3, metadata={"help": "Fewer words: too-short."})
    max_words: int = field(default=300, metadata={"help": "More words: too-long."})
    max_repeat_ratio: float = field(default=0.5, metadata={"help": "Share of repeated word 3-grams that makes an instruction degenerate."})
    max_copy_overlap: float = field(default=0.8, metadata={"help": "Word-set Jaccard with its response that makes it a copy."})
    leak_markers: list = field(default_factory=lambda: list(DEFAULT_LEAK_MARKERS), metadata={"help": "Template text that must not appear (lower case)."})
    refusal_markers: list = field(default_factory=lambda: list(DEFAULT_REFUSAL_MARKERS), metadata={"help": "Openings that read as a refusal (lower case)."})
    quality: bool = field(default=False, metadata={"help": "Also ask the expert for a 1-5 quality score (self-curation)."})
    min_quality: int = field(default=3, metadata={"help": "Lowest quality score kept."})
    quality_mode: str = field(default="logprob", metadata={"help": "logprob: score the choices 1..5 (small local models); text: parse a digit."})
    quality_template: str = field(default="filter_quality", metadata={"help": "Preset or file with {instruction} and {response}."})

    def __post_init__(self):
        if self.quality_mode not in ("logprob", "text"):
            raise BadInput(f"filter.quality_mode {self.quality_mode!r}: accepted: logprob, text")

    @classmethod
    def load(cls, params: dict, **kwargs):
        return super().load(params, gen_defaults={"max_new_tokens": 4}, **kwargs)


def heuristic_reason(rec: dict, rules: Config) -> tuple[str, str] | None:
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


class QualityScore(LLMTask):
    """The optional expert score 1-5, read from choice log-probabilities or a digit in the answer."""

    stage = "filter"
    choices = ("1", "2", "3", "4", "5")

    def __init__(self, config: Config):
        from builder.prompts import load_template

        self.config = config
        self.template = load_template(config.quality_template)
        self.template.check_fields(("instruction", "response"))
        self.check_empty = config.quality_mode == "text"
        self.drop_truncated = False  # a digit is all that is read

    def format_input(self, record: dict):
        from builder.llm import Request

        prompt = self.template.render(instruction=record["instruction"], response=record["response"])
        return [Request("quality", prompt=prompt, params=self.config.gen,
                        choices=self.choices if self.config.quality_mode == "logprob" else None)]

    def format_output(self, record: dict, completions: list) -> dict | Reject:
        completion = completions[0]
        score = read_score(completion, self.config.quality_mode)
        if score is None:
            return self.reject(record, "unparseable-score", "no score 1-5 in the output", raw=completion.text)
        llm = self.config.llm
        scored = {**record, "meta": provenance(record.get("meta"), "filter", [record["id"]], quality=score,
                                               model=llm.model, backend=llm.backend, template=self.template.as_meta())}
        if score < self.config.min_quality:
            return self.reject(scored, "low-quality", f"score {score} < filter.min_quality {self.config.min_quality}")
        return scored


def read_score(completion, mode: str) -> int | None:
    if mode == "logprob" and completion.choice_logprobs:
        return int(max(completion.choice_logprobs, key=completion.choice_logprobs.get))
    match = re.search(r"[1-5]", completion.text or "")
    return int(match.group()) if match else None


def run(config: Config, io: StageIO) -> StageResult:
    """Heuristics first (free), then the optional expert score on what passed them."""
    records = config.take(load_records(io.input, "instruction"))
    kept, rejects, seen = [], [], {}
    for rec in records:
        found = heuristic_reason(rec, config)
        if found is None:
            # the same normalisation as validate's near-duplicates: case, punctuation and spacing do not count
            key = (_NON_WORD.sub(" ", rec["instruction"].lower()).strip(), rec.get("response_id") or rec.get("response"))
            if key in seen:
                found = ("duplicate", f"same instruction as {seen[key]} for the same response")
            else:
                seen[key] = rec["id"]
        if found:
            rejects.append(Reject("filter", *found, record=rec))
        else:
            kept.append(rec)
    result = StageResult("filter", read=len(records), kept=kept, rejects=rejects)
    if config.quality and kept:
        scored = run_task(QualityScore(config), kept, config.llm, use_cache=config.use_cache).result
        scores = [r["meta"]["filter"]["quality"] for r in scored.kept] + [
            r.record["meta"]["filter"]["quality"] for r in scored.rejects if r.reason == "low-quality"]
        result = StageResult("filter", read=len(records), kept=scored.kept, rejects=rejects + scored.rejects,
                             extra={**scored.extra, "quality_scores": {str(s): scores.count(s) for s in sorted(set(scores))}},
                             notes=scored.notes, exit_code=scored.exit_code)
    return write_result(result, io, "instruction")
