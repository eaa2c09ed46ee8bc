"""respond: the expert writes the preferred (safe) response for each instruction; the original harmful
text becomes ``rejected``. Output: preference records carrying the whole lineage in ``meta``."""

from __future__ import annotations

from dataclasses import dataclass, field

from builder.records import record_id
from builder.validate import load_records
from builder.stages.base import StageIO, StageResult, provenance, write_result
from builder.stages.llm_task import LLMStageConfig, LLMTask, run_task


@dataclass
class Config(LLMStageConfig):
    section_name = "respond"
    system: str = field(default="respond_system", metadata={"help": "System prompt: a preset name or a .json/.txt file."})
    drop_truncated: bool = field(default=True, metadata={"help": "Reject a response cut off at max_new_tokens."})


class Respond(LLMTask):
    stage = "respond"

    def __init__(self, config: Config):
        from builder.prompts import load_template

        self.config = config
        self.system = load_template(config.system)
        self.drop_truncated = config.drop_truncated

    def format_input(self, record: dict):
        from builder.llm import Request

        messages = (("system", self.system.render()), ("user", user_turn(record)))
        return [Request("respond", messages=messages, params=self.config.gen)]

    def format_output(self, record: dict, completions: list) -> dict:
        completion = completions[0]
        pair = {"prompt": user_turn(record), "chosen": completion.text.strip(), "rejected": record["response"],
                "category": record.get("category")}
        llm = self.config.llm
        meta = provenance(record.get("meta"), "respond", [record["id"], record.get("response_id")],
                          model=llm.model, backend=llm.backend, adapter=llm.adapter, template=self.system.as_meta(),
                          params=self.config.gen.as_dict(), finish_reason=completion.finish_reason)
        return {"id": record_id("preference", pair), **pair, "meta": meta}


def user_turn(rec: dict) -> str:
    """The instruction as the user would send it (Alpaca-style input appended when present)."""
    instruction = rec["instruction"].strip()
    extra = (rec.get("input") or "").strip()
    return f"{instruction}\n\n{extra}" if extra else instruction


def run(config: Config, io: StageIO) -> StageResult:
    task = Respond(config)
    records = config.take(load_records(io.input, "instruction"))
    return write_result(run_task(task, records, config.llm, use_cache=config.use_cache).result, io, "preference")
