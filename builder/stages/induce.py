"""induce: write the instruction each response answers (Safer-Instruct's reversed induction).

Each response record's text fills the template (default ``safer_instruct_reverse``, whose ``{output}``
is the response); the model's continuation is the instruction. ``n_candidates`` K > 1 keeps K sampled
instructions per response (seeds seed, seed+1, ...). Every record carries its provenance in ``meta``
(``meta.induce``: model, backend, template name and hash, params; no wall-clock time, so a
rerun writes byte-identical output). Failed requests and empty instructions go to the rejects file with
a reason, in the shape every stage uses (builder.stages.base.Reject).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from builder.errors import BadInput
from builder.records import to_record
from builder.validate import load_records
from builder.stages.base import StageIO, StageResult, provenance, write_result
from builder.stages.llm_task import LLMStageConfig, LLMTask, run_task


@dataclass
class Config(LLMStageConfig):
    section_name = "induce"
    template: str = field(default="safer_instruct_reverse", metadata={"help": "Preset (safer_instruct_reverse, "
                                                                              "alpaca, llama2) or a .json/.txt file."})
    n_candidates: int = field(default=1, metadata={"help": "Instructions kept per response (> 1 needs temperature > 0)."})

    @classmethod
    def load(cls, params: dict, **kwargs):
        config = super().load(params, **kwargs)
        if config.n_candidates < 1:
            raise BadInput(f"--n-candidates must be at least 1, got {config.n_candidates}")
        if config.n_candidates > 1 and config.gen.greedy:
            raise BadInput(f"--n-candidates {config.n_candidates} with temperature 0 would give {config.n_candidates} "
                           "identical instructions; set --temperature (e.g. 0.7) so each candidate is sampled with its own seed")
        return config


def template_fields(rec: dict) -> dict:
    """What a template can use from a response record: the text under the names the seeds use."""
    text = rec.get("text") or ""
    return {"output": text, "text": text, "response": text, "category": rec.get("category") or "",
            "id": rec.get("id") or "", "input": ""}


FIELDS = tuple(template_fields({}))


def clean_instruction(text: str, response_split: str | None = None) -> str:
    """The instruction from the raw continuation: up to the next template section, trimmed."""
    text = text.strip()
    for marker in ("\n### ", "### response:", "### Response:"):
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut]
    if text.startswith("### Instruction:"):
        text = text[len("### Instruction:"):]
    return text.strip()


class Induce(LLMTask):
    """One request per candidate (seeds seed, seed+1, ...); each candidate becomes its own instruction
    record, so format_output returns the list for one response (run_task keeps lists as they come)."""

    stage = "induce"
    drop_truncated = False  # a long continuation is cut at the next template section anyway
    check_empty = False  # judged per candidate in format_output

    def __init__(self, config: Config):
        from builder.prompts import load_template

        self.config = config
        self.template = load_template(config.template)
        self.template.check_fields(FIELDS)  # before any record is read or any request is sent

    def format_input(self, record: dict):
        from builder.llm import Request

        prompt = self.template.render(**template_fields(record))
        k, gen = self.config.n_candidates, self.config.gen
        return [Request(str(i), prompt=prompt, params=replace(gen, seed=gen.seed + i) if k > 1 else gen) for i in range(k)]

    def format_output(self, record: dict, completions: list):
        llm, out, seen = self.config.llm, [], set()
        for i, c in enumerate(completions):
            detail = f"candidate {i}; " if len(completions) > 1 else ""
            instruction = clean_instruction(c.text, self.template.response_split)
            if not instruction:
                out.append(self.reject(record, "empty-output", detail + "the model wrote no instruction", raw=c.text))
                continue
            params = replace(self.config.gen, seed=self.config.gen.seed + i) if len(completions) > 1 else self.config.gen
            meta = provenance({"source": (record.get("meta") or {}).get("source") or record.get("source")}, "induce",
                              [record["id"]], model=c.model, backend=llm.backend, adapter=llm.adapter,
                              template=self.template.as_meta(), params=params.as_dict(), candidate=i,
                              finish_reason=c.finish_reason)
            data = {"instruction": instruction, "response": record["text"], "response_id": record["id"],
                    "category": record.get("category"), "meta": meta}
            rec, _ = to_record("instruction", data)
            if rec["id"] in seen:  # two candidates that came out the same
                out.append(self.reject(record, "duplicate", detail + "same instruction as another candidate", raw=c.text))
                continue
            seen.add(rec["id"])
            out.append(rec)
        return out


def run(config: Config, io: StageIO) -> StageResult:
    task = Induce(config)
    records = config.take(load_records(io.input, "response"))
    result = run_task(task, records, config.llm, use_cache=config.use_cache).result
    result.extra["candidates"] = config.n_candidates
    return write_result(result, io, "instruction")
