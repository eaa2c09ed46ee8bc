"""generate: a model (optionally with a LoRA adapter) answers eval suites; one generation record per prompt.

Reads eval suites as they are: the seeds' ``{"instructions": [...], "inputs": [...]}`` files (suite =
file name) and any ingested eval file (suite from the record). Prompts use the seeds' Alpaca template.

Preset ``safety-tuned-llamas`` reproduces what the Safety-Tuned LLaMAs generation script really does,
not what its flags say: 4 beams, 128 new tokens, the eval files' ``inputs`` dropped (prompt_no_input
always), and the raw Alpaca prompt (no chat template). Every call goes through the LLM cache, so a
rerun after kill -9 sends nothing already done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from builder.config import StageConfig
from builder.stages.base import StageIO, StageResult, provenance, write_result
from builder.stages.llm_task import LLMTask, run_task

# name -> the settings it fixes (flags and params still override them).
PRESETS = {
    "safety-tuned-llamas": {"num_beams": 4, "max_new_tokens": 128, "use_inputs": False, "chat_template": False},
    "none": {},
}


@dataclass
class GenerateConfig(StageConfig):
    section_name = "generate"
    preset: str = field(default="safety-tuned-llamas", metadata={"help": "safety-tuned-llamas (4 beams, 128 tokens, inputs dropped) | none"})
    template: str = field(default="alpaca", metadata={"help": "prompt template preset or file (the seeds' alpaca)"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "tokens to generate [preset]"})
    num_beams: int | None = field(default=None, metadata={"help": "beam search width; 1 = greedy [preset]"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy/beam; > 0 samples"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    use_inputs: bool | None = field(default=None, metadata={"help": "use the suites' inputs (prompt_input) [preset]"})
    chat_template: bool | None = field(default=None, metadata={"help": "wrap the prompt in the model's chat template [preset]"})
    limit: int | None = field(default=None, metadata={"help": "only the first N prompts of each suite"})
    keep_truncated: bool = field(default=True, metadata={"help": "keep outputs cut at max_new_tokens (the seeds keep them)"})

    def __post_init__(self):
        from builder.errors import BadInput

        if self.preset not in PRESETS:
            raise BadInput(f"generate.preset {self.preset!r}: accepted: {', '.join(PRESETS)}")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.max_new_tokens = self.max_new_tokens or 128
        self.num_beams = self.num_beams or 1
        self.use_inputs = True if self.use_inputs is None else self.use_inputs

    @classmethod
    def ignored_keys(cls) -> set[str]:
        from builder.llm import LLM_KEYS

        return set(LLM_KEYS)


class Generate(LLMTask):
    stage = "generate"
    check_empty = False  # an empty answer is an answer (scored as such), not a failure

    def __init__(self, config: GenerateConfig, llm, template):
        from builder.llm import GenParams

        self.config, self.llm, self.template = config, llm, template
        self.drop_truncated = not config.keep_truncated
        self.params = GenParams(max_new_tokens=config.max_new_tokens, num_beams=config.num_beams,
                                temperature=config.temperature, seed=config.seed)

    def prompt(self, record: dict) -> str:
        extra = (record.get("input") or "") if self.config.use_inputs else ""
        return self.template.render(instruction=record["instruction"], input=extra)

    def format_input(self, record: dict) -> list:
        from builder.llm import Request

        return [Request(record["id"], prompt=self.prompt(record), params=self.params)]

    def format_output(self, record: dict, completions: list) -> dict:
        from builder.records import record_id

        c = completions[0]
        gen = {"instruction": record["instruction"], "suite": record["suite"], "output": (c.text or "").strip(),
               "model": self.llm.model, "adapter": self.llm.adapter}
        if self.config.use_inputs and record.get("input"):
            gen["input"] = record["input"]
        if record.get("tags"):
            gen["tags"] = record["tags"]
        meta = provenance(record.get("meta"), "generate", record["id"], backend=self.llm.backend,
                          preset=self.config.preset, template=self.template.name,
                          template_hash=self.template.hash, params=self.params.as_dict(),
                          finish_reason=c.finish_reason)
        return {"id": record_id("generation", gen), **gen, "meta": meta}


def load_suites(paths, limit: int | None) -> list[dict]:
    """Eval records of every file, the first ``limit`` of each suite; a record without a suite takes
    the file name (the seeds' files carry none)."""
    from pathlib import Path

    from builder.records import record_id
    from builder.validate import load_records

    records = []
    for path in paths:
        counts: dict[str, int] = {}
        for rec in load_records(str(path), "eval"):
            rec = dict(rec)
            if not rec.get("suite"):
                rec["suite"] = Path(str(path)).stem
                rec["id"] = record_id("eval", rec)
            n = counts.get(rec["suite"], 0)
            if limit is None or n < limit:
                counts[rec["suite"]] = n + 1
                records.append(rec)
    return records


def seed_layout(records: list[dict], config: GenerateConfig) -> dict:
    """The seeds' generations file: ``{parameters, inputs, instructions, outputs}``."""
    return {"parameters": {"preset": config.preset, "num_beams": config.num_beams,
                           "max_new_tokens": config.max_new_tokens, "temperature": config.temperature,
                           "model": records[0]["model"] if records else None,
                           "adapter": records[0].get("adapter") if records else None},
            "inputs": [r.get("input", "") for r in records],
            "instructions": [r["instruction"] for r in records],
            "outputs": [r["output"] for r in records]}


def run(config: GenerateConfig, io: StageIO, *, llm, use_cache: bool = True, seed_format: bool = False) -> StageResult:
    """``io.inputs`` are eval files; ``llm`` an LLMSpec. ``seed_format`` (or an .json out) writes the
    seeds' layout instead of records."""
    import json
    from collections import Counter

    from builder.prompts import load_template
    from builder.records import atomic_path

    if config.chat_template is not None and llm.use_chat_template is None:
        llm.use_chat_template = config.chat_template
    records = load_suites(io.inputs, config.limit)
    task = Generate(config, llm, load_template(config.template))
    result = run_task(task, records, llm, use_cache=use_cache).result
    result.extra["by_suite"] = dict(sorted(Counter(r["suite"] for r in result.kept).items()))
    if seed_format and io.out is not None and result.exit_code == 0:
        with atomic_path(io.out) as tmp:
            tmp.write_text(json.dumps(seed_layout(result.kept, config), indent=2, ensure_ascii=False) + "\n",
                           encoding="utf-8")
        return write_result(result, StageIO(io.inputs, None, io.rejects, io.metrics), "generation")
    return write_result(result, io, "generation")
