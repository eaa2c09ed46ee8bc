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
from dataclasses import dataclass, field

from builder.errors import BadInput
from builder.llm.yesno import answers, calibration, question
from builder.validate import load_records
from builder.stages.base import Reject, StageIO, StageResult, provenance, write_result
from builder.stages.llm_task import LLMStageConfig, LLMTask, run_task, settle

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
class Config(LLMStageConfig):
    section_name = "judge"
    mode: str = field(default="logprob", metadata={"help": "json: a structured verdict (strong models); logprob: "
                                                           "yes/no log-probabilities per question (small local models)."})
    template: str | None = field(default=None, metadata={"help": "Preset or file [default: judge_json / judge_question]."})
    keep: dict = field(default_factory=lambda: {"chosen_harmless": True},
                       metadata={"help": "Verdict fields that must hold for a pair to stay (with a strong judge, "
                                         "add rejected_harmful: true)."})
    yes_threshold: float = field(default=0.5, metadata={"help": "logprob: P(yes) at or above this reads as yes."})
    calibrate: bool = field(default=True, metadata={"help": "logprob: divide out the model's yes/no bias measured "
                                                            "on a content-free pair (contextual calibration)."})

    def __post_init__(self):
        if self.mode not in ("json", "logprob"):
            raise BadInput(f"judge.mode {self.mode!r}: accepted: json, logprob")
        unknown = sorted(set(self.keep) - set(VERDICT_FIELDS))
        if unknown:
            raise BadInput(f"judge.keep names unknown verdict fields {unknown}; accepted: {', '.join(VERDICT_FIELDS)}")

    @classmethod
    def load(cls, params: dict, **kwargs):
        mode = kwargs.get("mode") or (params or {}).get("mode") or cls.mode
        # a verdict object needs room; a yes/no choice needs one token
        return super().load(params, gen_defaults={"max_new_tokens": 256 if mode == "json" else 1}, **kwargs)


class Judge(LLMTask):
    """The verdict to record and the keep rule, shared by both modes."""

    stage = "judge"

    def __init__(self, config: Config):
        from builder.prompts import load_template

        self.config = config
        self.template = load_template(config.template or ("judge_json" if config.mode == "json" else "judge_question"))
        self.template.check_fields(("prompt", "chosen", "rejected") if config.mode == "json"
                                   else ("instruction", "response", "question"))

    def decide(self, record: dict, verdict: dict) -> dict | Reject:
        llm = self.config.llm
        judged = {**record, "is_safe": verdict["chosen_harmless"],
                  "meta": provenance(record.get("meta"), "judge", [record["id"]], **verdict, mode=self.config.mode,
                                     model=llm.model, backend=llm.backend, template=self.template.as_meta(),
                                     keep=self.config.keep)}
        failed = [name for name, wanted in self.config.keep.items() if verdict[name] != wanted]
        if failed:
            detail = ", ".join(f"{name} is {verdict[name]}" for name in failed)
            return self.reject(judged, "judge-rule", f"{detail}; rationale: {verdict.get('rationale', '')}")
        return judged


class JsonJudge(Judge):
    """One request per pair asking for a verdict object (server-side JSON schema where supported)."""

    def ask(self, record: dict) -> tuple:
        return (("user", self.template.render(prompt=record["prompt"], chosen=record["chosen"],
                                              rejected=record["rejected"])),)

    def format_input(self, record: dict):
        from builder.llm import Request

        return [Request("verdict", messages=self.ask(record), params=self.config.gen, json_schema=VERDICT_SCHEMA)]

    def failure_reason(self, failure) -> str:
        from builder.llm.runner import UNPARSEABLE

        # answered, but not with a verdict: one repair turn follows, so it is not a failed call
        return "unparseable-verdict" if failure.reason.startswith(UNPARSEABLE) else super().failure_reason(failure)

    def format_output(self, record: dict, completions: list) -> dict | Reject:
        return self.decide(record, json.loads(completions[-1].text))  # the engine checked the schema


class RepairJudge(JsonJudge):
    """The one repair turn: the model sees its unusable answer and what was wrong with it."""

    def __init__(self, config: Config, broken: dict[str, Reject]):
        super().__init__(config)
        self.broken = broken  # record id -> the first attempt's reject (raw answer, problem)

    def format_input(self, record: dict):
        from builder.llm import Request

        first = self.broken[record["id"]]
        turn = (f"That answer could not be used ({first.detail}). Reply with only a JSON object with the boolean "
                f"fields {', '.join(VERDICT_FIELDS)} and a string field rationale.")
        return [Request("repair", params=self.config.gen, json_schema=VERDICT_SCHEMA,
                        messages=(*self.ask(record), ("assistant", first.raw or ""), ("user", turn)))]


class LogprobJudge(Judge):
    """One yes/no question per verdict field, read from P(Yes) vs P(No), re-weighted by the model's
    answer about a content-free pair (contextual calibration)."""

    check_empty = False

    def __init__(self, config: Config):
        super().__init__(config)
        self.baseline = {name: 0.5 for name in QUESTIONS}

    def calibrate(self) -> None:
        self.baseline = calibration(self.config.llm, self.template, self.config.gen,
                                    {name: q for name, (_, q) in QUESTIONS.items()}, use_cache=self.config.use_cache,
                                    desc="judge: calibration", switch_off="set judge.calibrate: false")

    def format_input(self, record: dict):
        return [question(self.template, name, self.config.gen, instruction=record["prompt"], response=record[side],
                         question=q) for name, (side, q) in QUESTIONS.items()]

    def format_output(self, record: dict, completions: list) -> dict | Reject:
        probabilities = answers(QUESTIONS, completions, self.baseline)
        if probabilities is None:
            return self.reject(record, "llm-failure", "no log-probabilities returned",
                               raw="\n".join(c.text for c in completions if c is not None))
        verdict = {**{name: p >= self.config.yes_threshold for name, p in probabilities.items()},
                   "p_yes": {name: round(p, 4) for name, p in probabilities.items()},
                   "rationale": "logprob mode: " + ", ".join(f"P(yes | {n}) = {p:.2f}" for n, p in probabilities.items())}
        return self.decide(record, verdict)


def run(config: Config, io: StageIO) -> StageResult:
    records = config.take(load_records(io.input, "preference"))
    if config.mode == "logprob":
        task = LogprobJudge(config)
        if config.calibrate and records:
            task.calibrate()
        result = run_task(task, records, config.llm, use_cache=config.use_cache).result
        result.extra["calibration_p_yes"] = {k: round(v, 4) for k, v in task.baseline.items()}
    else:
        result = _judge_json(config, records)
    result.extra.update(mode=config.mode, keep=config.keep)
    return write_result(result, io, "preference")


def _judge_json(config: Config, records: list[dict]) -> StageResult:
    result = run_task(JsonJudge(config), records, config.llm, use_cache=config.use_cache).result
    broken = {r.id: r for r in result.rejects if r.reason == "unparseable-verdict"}
    if not broken:
        return result
    by_id = {r["id"]: r for r in records}
    repair = run_task(RepairJudge(config, broken), [by_id[i] for i in broken], config.llm,
                      use_cache=config.use_cache).result
    for rej in repair.rejects:
        if rej.reason == "unparseable-verdict":
            first = broken[rej.id]
            rej.detail = f"{first.detail}; after one repair attempt: {rej.detail}"
            rej.raw = f"{first.raw}\n--- repair ---\n{rej.raw or ''}"
    order = {rec["id"]: n for n, rec in enumerate(records)}
    result.kept = sorted(result.kept + repair.kept, key=lambda r: order[r["meta"]["judge"]["parents"][0]])
    result.rejects = [r for r in result.rejects if r.reason != "unparseable-verdict"] + repair.rejects
    result.notes += [f"repair turn: {repair.notes[0]}"]
    return settle(result, config.llm)
