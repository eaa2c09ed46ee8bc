"""respond: the expert writes the preferred (safe) response for each instruction; the original harmful
text becomes ``rejected``. Output: preference records carrying the whole lineage in ``meta``."""

from __future__ import annotations

from pathlib import Path

from builder.metrics import reject, write_outputs
from builder.records import record_id
from builder.stages.base import provenance


def respond(records: list[dict], out: Path, *, llm, gen, system, drop_truncated: bool = True,
            use_cache: bool = True, rejects_path: Path | None = None, metrics_path: Path | None = None) -> dict:
    """``system`` is a builder.prompts.Template (no placeholders) sent as the system message."""
    from builder.llm import Request, run_requests

    system_text = system.render()
    requests = [Request(rec["id"], messages=(("system", system_text), ("user", _user_turn(rec))), params=gen)
                for rec in records]
    outcome = run_requests(llm, requests, use_cache=use_cache, desc="respond")
    kept, rejects = [], []
    for rec in records:
        failure = outcome.failures.get(rec["id"])
        if failure is not None:
            rejects.append(reject("respond", rec, "llm-failure", failure.reason, raw=failure.raw))
            continue
        completion = outcome.completions[rec["id"]]
        chosen = (completion.text or "").strip()
        if not chosen:
            rejects.append(reject("respond", rec, "empty-output", "the expert returned no text", raw=completion.text))
            continue
        if drop_truncated and completion.finish_reason == "length":
            rejects.append(reject("respond", rec, "truncated",
                                  f"stopped at max_new_tokens={gen.max_new_tokens}; raise respond.max_new_tokens",
                                  raw=completion.text))
            continue
        pair = {"prompt": _user_turn(rec), "chosen": chosen, "rejected": rec["response"],
                "category": rec.get("category")}
        # parents: the instruction, then the response it was induced from (the pair's rejected text)
        meta = provenance(rec.get("meta"), "respond", [rec["id"], rec.get("response_id")],
                          model=llm.model, backend=llm.backend, adapter=llm.adapter, template=system.as_meta(),
                          params=gen.as_dict(), finish_reason=completion.finish_reason)
        kept.append({"id": record_id("preference", pair), **pair, "meta": meta})
    return write_outputs("respond", out, kept, "preference", read=records, rejects=rejects,
                         rejects_path=rejects_path, metrics_path=metrics_path, llm=outcome.summary.as_metrics())


def _user_turn(rec: dict) -> str:
    """The instruction as the user would send it (Alpaca-style input appended when present)."""
    instruction = rec["instruction"].strip()
    extra = (rec.get("input") or "").strip()
    return f"{instruction}\n\n{extra}" if extra else instruction


def run(in_path: str, out: Path, *, rejects: Path | None = None, metrics: Path | None = None,
        limit: int | None = None, use_cache: bool = True, llm_flags: dict | None = None,
        gen_flags: dict | None = None, system: str | None = None) -> dict:
    """The `builder respond` command: params ``respond:`` (over ``llm:``) with command-line flags on top."""
    from builder.config import pick, section
    from builder.llm import LLMSpec, gen_params
    from builder.prompts import load_template
    from builder.validate import load_records

    params = section("respond")
    llm = LLMSpec.from_params(params, **(llm_flags or {}))
    gen = gen_params(params, **(gen_flags or {}))
    template = load_template(pick(system, params, "system", "respond_system"))
    records = load_records(in_path, "instruction")[:limit]
    return respond(records, out, llm=llm, gen=gen, system=template, use_cache=use_cache,
                   drop_truncated=params.get("drop_truncated", True), rejects_path=rejects, metrics_path=metrics)
