"""Every seed file ingests with its intended kind and exact record count; ids are stable across formats."""

from __future__ import annotations

import json

import pytest

from builder.records import read_rows, record_id, to_record, write_records
from tests.conftest import builder, read_jsonl

SAFER = "safer-instruct/sample_data/safer_instruct_{}.csv"
EVAL_DIR = "safety-defense/instruction-llms-safety-eval/data/evaluation/"
CASES = [
    *[(SAFER.format(c), "preferences", n) for c, n in
      [("hate", 3274), ("illegal", 2384), ("nsfw", 2149), ("self-harm", 2447)]],
    ("safety-tuned-llamas/data/training/safety_only_data_Instructions.json", "sft", 2483),
    ("safety-defense/instruction-llms-safety-eval/data/training/safety_only_data_Instructions.json", "sft", 2483),
    *[(f"safety-tuned-llamas/data/evaluation/{name}.json", "eval", n) for name, n in
      [("I-Alpaca", 50), ("I-CoNa", 178), ("I-Controversial", 40), ("I-MaliciousInstructions", 100),
       ("I-PhysicalSafetySafe", 100), ("I-PhysicalSafetyUnsafe", 100)]],
    *[(f"{EVAL_DIR}test_{task}{variant}.json", "eval", 100)
      for task in ("case", "cloze", "sentiment", "summarize", "translate") for variant in ("", "_cnn", "_useful")],
]


@pytest.mark.parametrize("relpath,kind,count", CASES, ids=[c[0].rsplit("/", 1)[-1] for c in CASES])
def test_every_seed_file_ingests_with_its_exact_count(seed, tmp_path, relpath, kind, count):
    out = tmp_path / "out.jsonl"
    result = builder("ingest", seed / relpath, "--kind", kind, "--out", out)
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out)
    assert len(records) == count
    assert all(len(r["id"]) == 16 and r["meta"]["source"].startswith(str(seed / relpath)) for r in records)


def test_safer_instruct_csv_with_empty_rejected_keeps_every_row_and_says_so(seed, tmp_path):
    out = tmp_path / "illegal.jsonl"
    result = builder("ingest", seed / SAFER.format("illegal"), "--kind", "preferences", "--out", out)
    assert result.returncode == 0
    records = read_jsonl(out)
    assert len(records) == 2384 and all(r["rejected"] == "" for r in records)
    assert {r["category"] for r in records} == {"illegal"}
    assert "2384 with empty rejected" in result.stderr


def test_eval_layout_carries_suite_and_tags(seed, tmp_path):
    out = tmp_path / "mal.jsonl"
    assert builder("ingest", seed / "safety-tuned-llamas/data/evaluation/I-MaliciousInstructions.json",
                   "--kind", "eval", "--out", out).returncode == 0
    records = read_jsonl(out)
    assert {r["suite"] for r in records} == {"I-MaliciousInstructions"}
    tags = [r["tags"][0] for r in records]
    assert tags.count("hate") == 66 and tags.count("crime") == 34


def test_csv_as_responses_takes_the_rejected_texts(seed, tmp_path):
    out = tmp_path / "responses.parquet"
    result = builder("ingest", seed / SAFER.format("hate"), "--kind", "responses", "--out", out)
    assert result.returncode == 0, result.stderr
    rows = list(read_rows(str(out)))
    assert len(rows) == 3274 and all(row.data["text"] for row in rows)
    assert "exact duplicates kept" in result.stderr  # counted, not dropped


def test_prompt_template_config_is_not_a_record_file(seed, tmp_path):
    result = builder("ingest", seed / "safety-tuned-llamas/configs/alpaca.json", "--kind", "sft",
                     "--out", tmp_path / "x.jsonl")
    assert result.returncode == 2
    assert "alpaca.json:1: file: expected a JSON list" in result.stderr


def test_ids_are_stable_across_formats(seed, tmp_path):
    first = tmp_path / "first.jsonl"
    assert builder("ingest", seed / SAFER.format("hate"), "--kind", "preferences", "--out", first).returncode == 0
    records = read_jsonl(first)[:200]
    ids = [r["id"] for r in records]
    for suffix in ("jsonl", "parquet", "csv", "json"):
        path = tmp_path / f"copy.{suffix}"
        write_records(path, records, "preference")
        again = [to_record("preference", row.data)[0]["id"] for row in read_rows(str(path))]
        assert again == ids, suffix
    assert ids[0] == record_id("preference", records[0])


def test_map_renames_columns_and_names_a_missing_one(tmp_path):
    src = tmp_path / "posts.csv"
    src.write_text("body,label\nyou people are all idiots,hate\nskip the toll booth,illegal\n", encoding="utf-8")
    out = tmp_path / "r.jsonl"
    assert builder("ingest", src, "--kind", "responses", "--map", "text=body", "--out", out).returncode == 0
    assert [r["text"] for r in read_jsonl(out)] == ["you people are all idiots", "skip the toll booth"]
    bad = builder("ingest", src, "--kind", "responses", "--map", "text=post", "--out", out)
    assert bad.returncode == 2 and "post" in bad.stderr and "columns: body, label" in bad.stderr


def test_missing_field_names_the_columns_and_the_fix(tmp_path):
    src = tmp_path / "posts.csv"
    src.write_text("body,label\nhello there,hate\n", encoding="utf-8")
    result = builder("ingest", src, "--kind", "responses", "--out", tmp_path / "r.jsonl")
    assert result.returncode == 2
    assert f"{src}:2: text: missing; rename a column with --map text=COLUMN (columns: body, label)" in result.stderr


def test_hf_source_offline_is_one_clear_line(tmp_path):
    result = builder("ingest", "hf://no-such-org/no-such-set/train", "--kind", "sft", "--out", tmp_path / "x.jsonl",
                     env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "hf://no-such-org/no-such-set/train" in error[0] and "Traceback" not in result.stderr


def test_unknown_kind_and_format_exit_2(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("x", encoding="utf-8")
    assert "unknown format" in builder("ingest", src, "--kind", "sft", "--out", tmp_path / "o.jsonl").stderr
    result = builder("ingest", src, "--kind", "pairs", "--out", tmp_path / "o.jsonl")
    assert result.returncode == 2 and "unknown kind 'pairs'" in result.stderr


def test_seed_json_layouts_round_trip(seed, tmp_path):
    """The .json writer reproduces the seeds' own layouts (Alpaca list, eval object)."""
    src = seed / "safety-tuned-llamas/data/evaluation/I-MaliciousInstructions.json"
    out = tmp_path / "I-MaliciousInstructions.json"
    assert builder("ingest", src, "--kind", "eval", "--out", out).returncode == 0
    assert json.loads(out.read_text()) == json.loads(src.read_text())
    sft_src = seed / "safety-tuned-llamas/data/training/safety_only_data_Instructions.json"
    sft_out = tmp_path / "safety.json"
    assert builder("ingest", sft_src, "--kind", "sft", "--out", sft_out).returncode == 0
    assert json.loads(sft_out.read_text()) == json.loads(sft_src.read_text())
