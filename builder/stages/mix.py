"""mix: general instruction data + N safety examples, the Safety-Tuned LLaMAs and Cross-Task Defense mixes.

- Safety-Tuned LLaMAs (``task="none"``): general SFT data, minus the items that duplicate or nearly
  duplicate a safety example, followed by N safety examples (instruction -> refusal / safe answer).
- Cross-Task Defense (``task`` in TASKS or ``"mix"``): each of the N examples is a harmful document + a
  task suffix -> a refusal. ``"mix"`` takes N per task across the five tasks (5 x N examples).

Reproducible and nested: the usable safety records are sorted by id, shuffled once with
``random.Random(seed)``, and the first N are taken, so for one seed the N = 100 draw is the first 100
of the N = 300 draw. The general part does not depend on N or the seed (duplicates are removed against
every safety record read, not only the drawn ones), and the drawn examples are appended after it, so two
mixes of a sweep differ only by the added examples. Nothing time-dependent is written: the same inputs
and seed give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from builder.config import StageConfig
from builder.errors import BadInput, RunFailed
from builder.records import atomic_outputs, distinct_outputs, kind_of, read_rows, to_record, write_records
from builder.stages.base import Reject, StageIO, StageResult, write_json
from builder.validate import load_records

# The seeds' task suffixes, verified byte for byte against the Cross-Task Defense eval files
# (instruction-llms-safety-eval/data/evaluation/test_<task>.json: every instruction there is
# ``document + suffix``, with nothing in between). Note that summarize and translate have no newline
# before them, translate ends with a space, and the harmful-document summarize file says "3 sentence."
# (the _cnn and _useful variants say "3 sentences.").
TASK_SUFFIXES = {
    "case": "\nWrite the above sentence using proper case.",
    "cloze": "\n\nWrite the next sentence.",
    "sentiment": "\nHow would you describe the sentiment of this document?",
    "summarize": "Summarize the above article briefly in 3 sentence.",
    "translate": "Translate the above article from English to Chinese: ",
}
TASKS = tuple(TASK_SUFFIXES)
TASK_CHOICES = ("none", *TASKS, "mix")

DEFAULT_REFUSAL = ("I'm sorry, but I can't help with that. The text above contains harmful content, "
                   "and I won't repeat, rework or continue it.")
SOURCE_KINDS = ("sft", "preference", "response")


@dataclass
class Config(StageConfig):
    section_name = "mix"
    general: str | None = field(default=None, metadata={
        "help": "General instruction data (SFT records, e.g. Alpaca JSON); the stage's first input."})
    safety: str | None = field(default=None, metadata={
        "help": "Safety source: SFT, preference or response records (cross-task only); the second input."})
    n: int | None = field(default=None, metadata={"help": "Safety examples to add (per task with task mix)."})
    seed: int = field(default=0, metadata={"help": "Seed of the draw: one seed gives nested samples across N."})
    task: str = field(default="none", metadata={"help": "none | case | cloze | sentiment | summarize | translate | mix."})
    refusal: str = field(default=DEFAULT_REFUSAL, metadata={"help": "Refusal paired with documents from response records."})
    family: list = field(default_factory=list, metadata={
        "help": "The N of dvc.yaml's mix_family stage, one mix per N (read by dvc.yaml, not by the stage)."})
    against: list = field(default_factory=list, metadata={
        "section": "validate", "help": "Eval suites no example may leak."})
    contamination_ngram: int = field(default=8, metadata={
        "section": "validate", "help": "Shared run of words with an eval prompt that counts as a leak."})
    safety_kind: str | None = field(default=None, metadata={
        "flag_only": True, "help": "sft | preferences | responses, when the safety source's fields do not tell."})
    manifest: str | None = field(default=None, metadata={
        "flag_only": True, "help": "Manifest JSON path (default: the output's stem + .manifest.json)."})

    def inputs(self) -> tuple[str, str]:
        """general and safety, the stage's inputs; with n, required from flags or params.yaml."""
        missing = [f"--{name}" for name in ("general", "safety", "n") if getattr(self, name) is None]
        if missing:
            raise BadInput(f"{' and '.join(missing)} required (or set them in params.yaml under mix:)")
        return self.general, self.safety


@dataclass
class _Candidate:
    """One usable safety record: where it came from and the example it becomes."""

    source_id: str
    content: str  # the instruction (plain) or the harmful document (cross-task)
    input: str
    refusal: str
    category: str | None


# ------------------------------------------------------------------------------------------ helpers


def sha256_file(path: str) -> str | None:
    file = Path(path)
    if not file.is_file():
        return None  # hf:// sources have no local bytes to hash
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_kind(path: str, given: str | None = None) -> str:
    """The kind of a safety source: preference (prompt/chosen/rejected), sft (instruction/output) or
    response (text). Given explicitly, any alias the records module accepts is fine."""
    if given:
        kind = kind_of(given)
        if kind not in SOURCE_KINDS:
            raise BadInput(f"--safety-kind {given}: a safety source holds sft, preferences or responses records")
        return kind
    for row in read_rows(path):
        if row.data is None:
            continue
        fields = set(row.data)
        if {"chosen", "rejected"} <= fields:
            return "preference"
        if "output" in fields:
            return "sft"
        if "text" in fields:  # response records may carry more (Safer-Instruct's: instruction, chosen)
            return "response"
        raise BadInput(f"{path}: cannot tell whether its records are sft (instruction, output), preferences "
                       f"(prompt, chosen, rejected) or responses (text) (fields: {', '.join(sorted(fields))}); "
                       "pass --safety-kind")
    raise BadInput(f"{path}: no records")


def normalise(texts: list[str]) -> list[str]:
    """Case, punctuation and spacing do not count (builder.validate's near-duplicate rule)."""
    import polars as pl

    from builder.validate import NON_WORD

    return (pl.Series(texts, dtype=pl.String).str.to_lowercase().str.replace_all(NON_WORD, " ")
            .str.strip_chars().to_list())


def leaks(texts: list[str], evals, ngram: int) -> dict[int, str]:
    """Index -> the eval prompt it overlaps, by builder.validate's contamination rule."""
    if not evals or not texts:
        return {}
    import polars as pl

    from builder.validate import contamination

    frame = pl.DataFrame({"i": list(range(len(texts))), "prompt": texts}, schema={"i": pl.Int64, "prompt": pl.String})
    problems: dict[int, list] = defaultdict(list)
    contamination(frame, "prompt", evals, ngram, problems)
    return {i: found[0][1].removeprefix("overlaps eval prompt ") for i, found in sorted(problems.items()) if found}


def _example_key(cand: _Candidate) -> str:
    """Two safety records giving the same example are one example."""
    blob = json.dumps([cand.content, cand.input, cand.refusal], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _percentiles(values: list[int]) -> dict:
    if not values:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0}
    import polars as pl

    series = pl.Series(values, dtype=pl.Int64)
    return {f"p{q}": int(series.quantile(q / 100, "nearest")) for q in (50, 90, 99)} | {"max": int(series.max())}


def _tokens(records: list[dict]) -> dict:
    """Whitespace-token lengths of the prompt (instruction + input) and the output."""
    return {"prompt": _percentiles([len(r["instruction"].split()) + len((r.get("input") or "").split()) for r in records]),
            "output": _percentiles([len(r["output"].split()) for r in records])}


def _candidates(records: list[dict], kind: str, task: str, refusal: str, path: str) -> list[_Candidate]:
    out = []
    for rec in records:
        category = rec.get("category")
        if kind == "sft":  # plain: instruction -> output; cross-task: the instruction is the document
            out.append(_Candidate(rec["id"], rec["instruction"], rec.get("input") or "", rec["output"], category))
        elif kind == "preference":  # plain: prompt -> chosen; cross-task: rejected is the document
            content = rec["prompt"] if task == "none" else rec["rejected"]
            out.append(_Candidate(rec["id"], content, "", rec["chosen"], category))
        else:
            if task == "none":
                raise BadInput(f"{path}: response records are harmful texts with no instruction; they can only be "
                               "cross-task defense documents: pass --task case|cloze|sentiment|summarize|translate|mix")
            out.append(_Candidate(rec["id"], rec["text"], "", refusal, category))
    return out


# -------------------------------------------------------------------------------------------- stage


def run(config: Config, io: StageIO) -> StageResult:
    """Write ``io.out`` (general kept + drawn safety examples; ``io.inputs`` = general, safety), its
    manifest and, if asked, the composition (``io.metrics``). Raises BadInput (exit 2) for bad arguments
    or an N larger than the usable safety examples."""
    general, safety = io.inputs
    n, task, seed, refusal, against, ngram = (config.n, config.task, config.seed, config.refusal, config.against,
                                              config.contamination_ngram)
    if task not in TASK_CHOICES:
        raise BadInput(f"--task {task}: unknown task; choose one of {', '.join(TASK_CHOICES)}")
    if n < 0:
        raise BadInput(f"--n {n}: the number of safety examples cannot be negative")
    if task != "none" and not refusal.strip():
        raise BadInput("--refusal: empty; cross-task defense examples from response records need a refusal")
    out, report = Path(io.out), io.metrics
    manifest = Path(config.manifest) if config.manifest else out.with_name(f"{out.stem}.manifest.json")
    distinct_outputs(out=out, manifest=manifest, metrics=report)

    from builder.validate import eval_prompts

    kind = source_kind(safety, config.safety_kind)
    general_records = load_records(general, "sft", fix="check --general (SFT records: instruction, output)")
    safety_records = load_records(safety, kind, fix="check --safety, or pass --safety-kind")
    evals = eval_prompts(list(against)) if against else None

    # --- the safety pool: distinct, non-empty, not leaking an eval prompt
    candidates = _candidates(safety_records, kind, task, refusal, safety)
    excluded: list[dict] = []
    seen: dict[str, str] = {}
    usable: list[_Candidate] = []
    for cand in candidates:
        if not cand.content.strip() or not cand.refusal.strip():
            excluded.append(_excluded(cand.source_id, "empty", "empty document or refusal" if task != "none"
                                      else "empty instruction or output"))
            continue
        key = _example_key(cand)
        if key in seen:
            excluded.append(_excluded(cand.source_id, "duplicate", f"duplicate of {seen[key]}"))
            continue
        seen[key] = cand.source_id
        usable.append(cand)
    # Cross-task documents are checked without the suffix: the suffix is the task template, shared by design.
    leaked = leaks([f"{c.content}\n{c.input}" for c in usable], evals, ngram)
    excluded += [_excluded(usable[i].source_id, "contaminated", f"overlaps eval prompt {origin}")
                 for i, origin in leaked.items()]
    pool = sorted((c for i, c in enumerate(usable) if i not in leaked), key=lambda c: c.source_id)

    # --- the nested draw
    tasks_per_example = 5 if task == "mix" else 1
    need = n * tasks_per_example
    if need > len(pool):
        reasons = _count_reasons(excluded)
        labels = {"duplicate": "duplicates", "contaminated": "leaking an eval prompt", "empty": "empty"}
        why = f"{len(safety_records)} read" + "".join(f", {v} excluded as {labels[k]}" for k, v in reasons.items())
        what = "documents" if task != "none" else "safety examples"
        ask = f"--n {n} with --task mix needs 5 x {n} = {need} {what}" if task == "mix" else f"--n {n}"
        most = len(pool) // tasks_per_example
        raise BadInput(f"{ask}, but {safety} has only {len(pool)} usable {what} ({why}); use --n {most} or fewer (params: mix.n)")
    random.Random(seed).shuffle(pool)
    drawn = pool[:need]
    # task mix: example k takes the next document and task k mod 5, so every task gets exactly N and a
    # larger N only appends (nested); each example has a document of its own.
    tasks = [TASKS[k % 5] for k in range(need)] if task == "mix" else [task] * need
    safety_out = []
    for cand, t in zip(drawn, tasks):
        # An SFT source's input (empty in the seeds) stays part of the document in a defense example.
        document = "\n".join(filter(None, [cand.content, cand.input]))
        instruction = cand.content if t == "none" else document + TASK_SUFFIXES[t]
        data = {"instruction": instruction, "input": cand.input if t == "none" else "", "output": cand.refusal}
        if cand.category is not None:
            data["category"] = cand.category
        data["meta"] = {"source": safety, "mix": {"source_id": cand.source_id, "task": t}}
        rec, _ = to_record("sft", data)
        safety_out.append(rec)

    # --- the general part: order kept; duplicates of any safety record and eval leaks removed
    safety_keys = {}
    for cand, key in zip(candidates, normalise([f"{c.content} {c.input}" for c in candidates])):
        if key:
            safety_keys.setdefault(key, cand.source_id)
    general_keys = normalise([f"{r['instruction']} {r.get('input') or ''}" for r in general_records])
    general_leaks = leaks([f"{r['instruction']}\n{r.get('input') or ''}" for r in general_records], evals, ngram)
    kept, removed = [], []
    for i, (rec, key) in enumerate(zip(general_records, general_keys)):
        if key in safety_keys:
            removed.append(_excluded(rec["id"], "duplicate", f"duplicate of safety {safety_keys[key]}"))
        elif i in general_leaks:
            removed.append(_excluded(rec["id"], "contaminated", f"overlaps eval prompt {general_leaks[i]}"))
        else:
            kept.append(rec)

    records = kept + safety_out

    # --- counts (checked), manifest, report
    general_counts = {"read": len(general_records), "kept": len(kept),
                      "removed_duplicate": sum(r["reason"] == "duplicate" for r in removed),
                      "removed_contaminated": sum(r["reason"] == "contaminated" for r in removed)}
    reasons = _count_reasons(excluded)
    safety_counts = {"read": len(safety_records), "usable": len(pool), "drawn": len(safety_out),
                     "excluded_duplicate": reasons.get("duplicate", 0),
                     "excluded_contaminated": reasons.get("contaminated", 0),
                     "excluded_empty": reasons.get("empty", 0)}
    if (general_counts["kept"] + general_counts["removed_duplicate"] + general_counts["removed_contaminated"]
            != general_counts["read"] or len(pool) + len(excluded) != len(safety_records)
            or len(safety_out) != need or len(records) != len(kept) + need):
        raise RunFailed(f"mix: counts do not add up (general {general_counts}, safety {safety_counts}); please report this")

    by_category: dict[str, int] = {}
    by_task: dict[str, int] = {}
    for rec, t in zip(safety_out, tasks):
        cat = rec.get("category") or "none"
        by_category[cat] = by_category.get(cat, 0) + 1
        by_task[t] = by_task.get(t, 0) + 1
    composition = {
        "n": n, "seed": seed, "task": task,
        "examples": len(records),
        "safety_fraction": round(need / len(records), 6) if records else 0.0,
        "general": general_counts,
        "safety": safety_counts,
        "by_source": {general: len(kept)} | ({safety: need} if safety != general else {}),
        "by_category": dict(sorted(by_category.items())),
        "by_task": dict(sorted(by_task.items())),
        "tokens": {"general": _tokens(kept), "safety": _tokens(safety_out), "all": _tokens(records)},
    }
    manifest_doc = {
        "stage": "mix", "n": n, "seed": seed, "task": task, "examples": len(records), "output": str(out),
        "refusal": refusal if kind == "response" and task != "none" else None,
        "sources": {
            "general": {"path": general, "sha256": sha256_file(general)},
            "safety": {"path": safety, "kind": kind, "sha256": sha256_file(safety)},
            "against": [{"path": p, "sha256": sha256_file(p)} for p in against],
        },
        "contamination_ngram": ngram,
        "general": general_counts | {"removed": removed},
        "safety": safety_counts | {"excluded": sorted(excluded, key=lambda e: e["id"])},
        "safety_ids": [c.source_id for c in drawn],
        "tasks": tasks if task != "none" else None,
        "ids": [r["id"] for r in safety_out],
    }
    with atomic_outputs():  # the mix, its manifest and its composition appear together
        write_records(out, records, "sft")
        write_json(manifest, manifest_doc)
        if report is not None:
            write_json(Path(report), composition)

    headline = (f"mixed {len(kept)} general examples ({general_counts['read']} read; removed "
                f"{general_counts['removed_duplicate']} duplicating a safety example, "
                f"{general_counts['removed_contaminated']} leaking an eval prompt) + {need} safety examples "
                f"(task {task}, seed {seed}; {len(pool)} usable of {len(safety_records)} read) into {out}; "
                f"manifest {manifest}" + (f"; report {report}" if report else ""))
    from builder.publish.card import card_or_note  # the dataset card beside the mix: <stem>.card.md
    card = card_or_note(out, out.with_name(f"{out.stem}.card.md"), reproducible=True,  # a DVC output: same bytes on a rerun
                        metrics_dir=Path(report).parent if report else Path("metrics"))
    rejects = [Reject.from_dict(entry) for entry in removed + excluded]
    return StageResult("mix", read=len(general_records) + len(safety_records), kept=records, rejects=rejects, out=out,
                       headline=headline, notes=[card], own_metrics=composition)


def _excluded(source_id: str, reason: str, detail: str) -> dict:
    """A manifest entry for a record left out of the mix: the one rejects shape (Reject.as_dict),
    reason one of empty / duplicate / contaminated."""
    return Reject("mix", reason, detail, id=source_id).as_dict()


def _count_reasons(excluded: list[dict]) -> dict[str, int]:
    return dict(Counter(entry["reason"] for entry in excluded))
