"""Every kind of bad input: its message (FILE:LINE: field: message), exit code 2, and no good record lost."""

from __future__ import annotations

import json

import pytest

from builder.records import record_id
from tests.conftest import builder, read_jsonl, write_jsonl


def pref(prompt, chosen="I can't help with that, but here is a safer idea.", rejected="do it anyway", **extra):
    rec = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "category": "hate", **extra}
    return rec


GOOD = [pref(f"question number {n} about topic {n * 7}") for n in range(1, 6)]


def run_validate(tmp_path, path, *extra):
    out, bad, report = tmp_path / "good.jsonl", tmp_path / "bad.jsonl", tmp_path / "report.json"
    result = builder("validate", path, "--kind", "preferences", "--out", out, "--rejects", bad,
                     "--metrics", report, *extra)
    return result, read_jsonl(out), read_jsonl(bad), json.loads(report.read_text())


def assert_nothing_lost(good, bad, read):
    assert len(good) + len(bad) == read
    assert [r["prompt"] for r in good] == [r["prompt"] for r in GOOD]


@pytest.mark.parametrize("line,field,message,reason", [
    ('{"prompt": "truncated line", "chosen": "ok", "rej', "line", "invalid JSON", "unparseable"),
    ('["a", "list"]', "line", "expected a JSON object, got list", "unparseable"),
    ('{"prompt": "no chosen here", "rejected": "x"}', "chosen", "missing", "missing-field"),
    ('{"prompt": 42, "chosen": "a", "rejected": "b"}', "prompt", "42 is not of type 'string'", "schema"),
    ('{"prompt": "   ", "chosen": "a", "rejected": "b"}', "prompt", "empty or whitespace only", "empty"),
    ('{"prompt": "same same", "chosen": "Same text.", "rejected": "Same text. "}', "chosen", "same text as rejected", "chosen-equals-rejected"),
    ('{"id": "0000000000000000", "prompt": "edited", "chosen": "a", "rejected": "b"}', "id", "does not match the content", "id-mismatch"),
])
def test_each_bad_line_is_named_quarantined_and_the_rest_kept(tmp_path, line, field, message, reason):
    lines = [json.dumps(r) for r in GOOD[:3]] + [line] + [json.dumps(r) for r in GOOD[3:]]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result, good, bad, report = run_validate(tmp_path, path)
    assert result.returncode == 2
    assert f"{path}:4: {field}: " in result.stderr and message in result.stderr
    assert_nothing_lost(good, bad, report["read"])
    assert len(bad) == 1 and bad[0]["where"] == f"{path}:4"
    assert bad[0]["reason"] == reason and bad[0]["field"] == field and bad[0]["stage"] == "validate"
    assert report["problems_by_reason"] == {reason: 1}


def test_undecodable_bytes_in_jsonl(tmp_path):
    path = tmp_path / "in.jsonl"
    body = b"\n".join(json.dumps(r).encode() for r in GOOD[:2]) + b'\n{"prompt": "caf\xe9 latin-1", "chosen": "a", "rejected": "b"}\n'
    path.write_bytes(body + b"\n".join(json.dumps(r).encode() for r in GOOD[2:]) + b"\n")
    result, good, bad, report = run_validate(tmp_path, path)
    assert result.returncode == 2
    assert f"{path}:3: line: undecodable bytes at column 16 (not UTF-8)" in result.stderr
    assert_nothing_lost(good, bad, report["read"])


def test_csv_wrong_field_count_and_undecodable_field(tmp_path):
    path = tmp_path / "in.csv"
    rows = [b"instruction,rejected,chosen,label"]
    rows += [f'"{r["prompt"]}","{r["rejected"]}","{r["chosen"]}",hate'.encode() for r in GOOD[:2]]
    rows += [b'"too, many","fields",here,hate,extra']
    rows += [b'"multi\nline ok \xff","x","y",hate']
    rows += [f'"{r["prompt"]}","{r["rejected"]}","{r["chosen"]}",hate'.encode() for r in GOOD[2:]]
    path.write_bytes(b"\n".join(rows) + b"\n")
    result, good, bad, report = run_validate(tmp_path, path)
    assert result.returncode == 2
    assert f"{path}:4: line: 5 fields where the header has 4" in result.stderr
    assert f"{path}:5: instruction: undecodable bytes" in result.stderr
    assert [b["where"] for b in bad] == [f"{path}:4", f"{path}:5"]
    assert_nothing_lost(good, bad, report["read"])


def test_duplicates_exact_and_near_keep_the_first(tmp_path):
    records = GOOD[:3] + [dict(GOOD[0]), pref("QUESTION number 2, about topic 14!!")] + GOOD[3:]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    result, good, bad, report = run_validate(tmp_path, path)
    assert result.returncode == 2
    assert f"{path}:4: id: duplicate of 1" in result.stderr
    assert f"{path}:5: id: near-duplicate of 2" in result.stderr
    assert report["duplicates"] == {"exact": 1, "near": 1}
    assert_nothing_lost(good, bad, report["read"])


def test_over_long_field_against_the_limit(tmp_path):
    records = GOOD[:2] + [pref("long one", chosen="x" * 501)] + GOOD[2:]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    result, good, bad, report = run_validate(tmp_path, path, "--max-chars", "500")
    assert result.returncode == 2
    assert f"{path}:3: chosen: 501 characters, over the limit of 500" in result.stderr
    assert_nothing_lost(good, bad, report["read"])


def test_contamination_against_eval_suites(tmp_path):
    suite = tmp_path / "I-Test.json"
    suite.write_text(json.dumps({"instructions": ["Explain why people from that town are all lazy and stupid",
                                                  "Write a haiku"], "inputs": []}))
    records = GOOD[:2] + [
        pref("Please explain why people from that town are all lazy and stupid, in detail."),  # shares 8 words
        pref("write a HAIKU"),  # the whole (short) prompt
        pref("Write a haiku about autumn leaves falling"),  # short prompt inside: too weak to call a leak
    ] + GOOD[2:]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    result, good, bad, report = run_validate(tmp_path, path, "--against", suite)
    assert result.returncode == 2
    assert f"{path}:3: prompt: overlaps eval prompt {suite}:instructions[0]" in result.stderr
    assert f"{path}:4: prompt: overlaps eval prompt {suite}:instructions[1]" in result.stderr
    assert report["contaminated"] == 2
    assert len(good) == 6 and len(bad) == 2


def test_clean_file_exits_0_and_reports_stats(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", GOOD)
    result, good, bad, report = run_validate(tmp_path, path)
    assert result.returncode == 0, result.stderr
    assert bad == [] and [r["id"] for r in good] == [record_id("preference", r) for r in GOOD]
    assert report["by_category"] == {"hate": 5} and report["length_chars"]["prompt"]["max"] == 32


def test_many_problems_are_capped_then_counted(tmp_path):
    records = [pref(" ") for _ in range(60)] + GOOD
    path = write_jsonl(tmp_path / "in.jsonl", records)
    result = builder("validate", path, "--kind", "preferences")
    assert result.returncode == 2
    problem_lines = [l for l in result.stderr.splitlines() if l.startswith(f"{path}:") and not l.startswith(f"{path}: ")]
    assert len(problem_lines) == 20  # params.yaml: validate.max_problems_shown
    assert "... and" in result.stderr and "more problems" in result.stderr
    assert "add --rejects BAD.jsonl" in result.stderr


def test_kind_is_guessed_when_omitted(seed, tmp_path):
    result = builder("validate", seed / "safety-tuned-llamas/data/evaluation/I-CoNa.json")
    assert result.returncode == 0 and "read as eval" in result.stderr


def test_allow_rejects_is_for_pipelines(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", GOOD + [pref(" ")])
    result = builder("validate", path, "--kind", "preferences", "--rejects", tmp_path / "q.jsonl", "--allow-rejects")
    assert result.returncode == 0 and len(read_jsonl(tmp_path / "q.jsonl")) == 1
    assert builder("validate", path, "--kind", "preferences", "--allow-rejects").returncode == 2  # no rejects file


def test_records_of_another_kind_give_one_line_naming_the_kind_they_look_like(tmp_path):
    responses = [{"text": f"a hateful post number {n} about group {n * 3}", "category": "hate"} for n in range(500)]
    path = write_jsonl(tmp_path / "responses.jsonl", responses)
    result = builder("validate", path, "--kind", "preferences", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr  # one line, not one per record
    assert "look like response records: pass --kind responses" in result.stderr
