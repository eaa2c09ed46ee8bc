"""induce: write the instruction each response answers (Safer-Instruct's reversed induction).

Each response record's text fills the template (default ``safer_instruct_reverse``, whose ``{output}``
is the response); the model's continuation is the instruction. ``n_candidates`` K > 1 keeps K sampled
instructions per response (seeds seed, seed+1, ...). Every record carries its provenance in ``meta``
(``meta.induce``: model, backend, template name and hash, params; no wall-clock time, so a
rerun writes byte-identical output). Failed requests and empty instructions go to the rejects file with
a reason, in the format every stage uses (builder.metrics.reject).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from builder.config import pick, section
from builder.errors import BadInput, RunFailed
from builder.metrics import reject, write_outputs
from builder.records import to_record, write_records
from builder.stages.base import provenance
from builder.validate import load_records

DEFAULT_TEMPLATE = "safer_instruct_reverse"


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


@dataclass
class InduceOutcome:
    written: int
    rejected: int
    responses: int
    message: str
    summary: object = None
    rejects: list[dict] = field(default_factory=list)


def induce(in_path: str, out: Path, *, rejects: Path | None = None, metrics: Path | None = None,
           template: str | None = None, n_candidates: int | None = None, limit: int | None = None,
           use_cache: bool = True, llm_flags: dict | None = None, gen_flags: dict | None = None) -> InduceOutcome:
    """The `builder induce` command: params ``induce:`` (over ``llm:``) with command-line flags on top."""
    from builder.llm import LLMSpec, Request, gen_params, run_requests
    from builder.prompts import load_template

    params = section("induce")
    spec = LLMSpec.from_params(params, **(llm_flags or {}))
    gp = gen_params(params, **(gen_flags or {}))
    tpl = load_template(pick(template, params, "template", DEFAULT_TEMPLATE))
    tpl.check_fields(FIELDS)  # before any record is read or any request is sent
    k = int(pick(n_candidates, params, "n_candidates", 1))
    if k < 1:
        raise BadInput(f"--n-candidates must be at least 1, got {k}")
    if k > 1 and gp.greedy:
        raise BadInput(f"--n-candidates {k} with temperature 0 would give {k} identical instructions; "
                       "set --temperature (e.g. 0.7) so each candidate is sampled with its own seed")
    limit = pick(limit, params, "limit")
    records = load_records(str(in_path), "response")
    if limit is not None:
        if int(limit) < 0:
            raise BadInput(f"--limit must be >= 0, got {limit}")
        records = records[: int(limit)]

    requests, origin = [], {}
    for n, rec in enumerate(records):
        prompt = tpl.render(**template_fields(rec))
        for i in range(k):
            key = f"{n}:{rec['id']}" + (f":{i}" if k > 1 else "")
            p = replace(gp, seed=gp.seed + i) if k > 1 else gp
            requests.append(Request(key, prompt=prompt, params=p))
            origin[key] = (rec, i, prompt)

    outcome = run_requests(spec, requests, use_cache=use_cache, desc="induce")

    written, rejected, seen = [], [], set()
    for req in requests:
        rec, i, prompt = origin[req.key]
        detail = f"candidate {i}; " if k > 1 else ""
        if req.key in outcome.failures:
            fail = outcome.failures[req.key]
            rejected.append(reject("induce", rec, "llm-failure", detail + fail.reason, raw=fail.raw))
            continue
        c = outcome.completions[req.key]
        instruction = clean_instruction(c.text, tpl.response_split)
        if not instruction:
            rejected.append(reject("induce", rec, "empty-output", detail + "the model wrote no instruction", raw=c.text))
            continue
        meta = provenance({"source": (rec.get("meta") or {}).get("source") or rec.get("source")}, "induce", rec["id"],
                          model=c.model, backend=spec.backend, adapter=spec.adapter, template=tpl.as_meta(),
                          params=req.params.as_dict(), candidate=i, finish_reason=c.finish_reason)
        data = {"instruction": instruction, "response": rec["text"], "response_id": rec["id"],
                "category": rec.get("category"), "meta": meta}
        record, _ = to_record("instruction", data)
        if record["id"] in seen:  # two candidates that came out the same
            rejected.append(reject("induce", rec, "duplicate", detail + "same instruction as another candidate", raw=c.text))
            continue
        seen.add(record["id"])
        written.append(record)

    if requests and not written and len(outcome.failures) == len(requests):
        first = next(iter(outcome.failures.values()))
        if rejects is not None:
            write_records(rejects, rejected)
        raise RunFailed(f"induce: every request failed ({len(requests)}); first reason: {first.reason}"
                        + (f"; all are in {rejects}" if rejects else ""))
    write_outputs("induce", out, written, "instruction", read=records, rejects=rejected, rejects_path=rejects,
                  metrics_path=metrics, candidates=k, llm=outcome.summary.as_metrics())
    message = (f"induced {len(written)} instructions from {len(records)} responses into {out}"
               + (f" ({k} candidates each)" if k > 1 else "")
               + (f"; {len(rejected)} rejected" + (f" -> {rejects}" if rejects else " (add --rejects PATH to keep them)")
                  if rejected else "")
               + f"\nllm ({spec.backend}, {spec.model}): {outcome.summary}")
    return InduceOutcome(len(written), len(rejected), len(records), message, outcome.summary, rejected)
