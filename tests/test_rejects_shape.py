"""One Reject shape (issue 8 item 2): ingest's and validate's quarantine, the pairs rejects file, mix's
exclusions and an LLM stage's rejects all load into ONE datasets.Dataset with one schema."""

from __future__ import annotations

import json

from builder.stages.base import Reject
from tests.conftest import REPO, builder, read_jsonl

SAMPLE = REPO / "data" / "sample"
SHAPE = set(Reject("x", "y").as_dict())


def pref(prompt: str, **extra) -> dict:
    return {"prompt": prompt, "chosen": "I can't help with that, but here is a safer idea.", "rejected": "do it anyway",
            "category": "hate", **extra}


def test_every_rejects_file_loads_into_one_dataset(tmp_path):
    import datasets

    good = [pref(f"question number {n} about topic {n * 7}") for n in range(1, 6)]
    lines = [json.dumps(r) for r in good] + ['{"prompt": "truncated', json.dumps(pref("   ")), json.dumps(good[0])]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")

    ingested, ingest_q = tmp_path / "ingested.jsonl", tmp_path / "ingest_q.jsonl"
    assert builder("ingest", src, "--kind", "preferences", "--out", ingested, "--rejects", ingest_q).returncode == 2
    validate_q = tmp_path / "validate_q.jsonl"
    builder("validate", src, "--kind", "preferences", "--rejects", validate_q)
    pairs_rejects = tmp_path / "pairs_rejects.jsonl"
    result = builder("pairs", "--in", ingested, "--out", tmp_path / "pairs", "--rejects", pairs_rejects)
    assert result.returncode == 0, result.stderr

    safety = json.loads((SAMPLE / "safety.json").read_text(encoding="utf-8"))
    dup_safety = tmp_path / "safety.json"
    dup_safety.write_text(json.dumps(safety + safety[:1]), encoding="utf-8")
    result = builder("mix", "--general", SAMPLE / "general.json", "--safety", dup_safety, "--n", 1,
                     "--out", tmp_path / "mix.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "mix.manifest.json").read_text(encoding="utf-8"))

    llm_reject = Reject("judge", "judge-rule", "the judge preferred the rejected answer", record=good[1], raw="B").as_dict()
    entries = {"ingest": read_jsonl(ingest_q), "validate": read_jsonl(validate_q), "pairs": read_jsonl(pairs_rejects),
               "mix": manifest["safety"]["excluded"], "judge": [llm_reject]}
    for stage, found in entries.items():
        assert found, f"{stage} rejected nothing: the test input must give every stage a reject"
        assert all(set(e) == SHAPE and e["stage"] == stage for e in found), (stage, found)
    assert {e["reason"] for e in entries["validate"]} == {"unparseable", "empty", "duplicate"}
    assert entries["mix"][0]["reason"] == "duplicate"

    everything = [e for found in entries.values() for e in found]
    table = datasets.Dataset.from_list(everything)
    assert set(table.column_names) == SHAPE and table.num_rows == len(everything)
    # a jsonl written by one stage and another by a different stage read as one dataset, too
    both = datasets.load_dataset("json", data_files=[str(validate_q), str(pairs_rejects)], split="train")
    assert both.num_rows == len(entries["validate"]) + len(entries["pairs"])
