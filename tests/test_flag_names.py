"""One vocabulary (issue 8 item 4): --rejects, --metrics and --against in every command; the earlier
names (--quarantine, --report, --allow-quarantine, --exclude) still work and are hidden from --help."""

from __future__ import annotations

import json

from tests.conftest import REPO, builder, read_jsonl, write_jsonl

SAMPLE = REPO / "data" / "sample"


def pref(prompt: str) -> dict:
    return {"prompt": prompt, "chosen": "I can't help with that, but here is a safer idea.", "rejected": "do it anyway",
            "category": "hate"}


GOOD = [pref(f"question number {n} about topic {n * 7}") for n in range(1, 6)]


def test_help_shows_only_the_canonical_names():
    for command, shown in {"ingest": ["--rejects"], "validate": ["--rejects", "--metrics", "--against", "--allow-rejects"],
                           "mix": ["--metrics", "--against"], "pairs": ["--rejects", "--metrics", "--against"]}.items():
        text = builder(command, "--help").stdout
        assert all(name in text for name in shown), (command, text)
        assert not any(old in text for old in ("--quarantine", "--report", "--exclude", "--allow-quarantine")), command


def test_old_names_still_work(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", GOOD + [pref(" ")])
    result = builder("validate", path, "--kind", "preferences", "--quarantine", tmp_path / "q.jsonl",
                     "--report", tmp_path / "r.json", "--allow-quarantine")
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(tmp_path / "q.jsonl")) == 1 and json.loads((tmp_path / "r.json").read_text())["quarantined"] == 1

    assert builder("ingest", path, "--kind", "preferences", "--out", tmp_path / "i.jsonl",
                   "--quarantine", tmp_path / "iq.jsonl").returncode == 0

    suite = tmp_path / "I-Test.json"
    suite.write_text(json.dumps({"instructions": [GOOD[0]["prompt"]], "inputs": []}), encoding="utf-8")
    clean = write_jsonl(tmp_path / "clean.jsonl", GOOD)
    result = builder("pairs", "--in", clean, "--out", tmp_path / "pairs", "--exclude", suite,
                     "--rejects", tmp_path / "pr.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r["reason"] for r in read_jsonl(tmp_path / "pr.jsonl")] == ["contaminated"]

    result = builder("mix", "--general", SAMPLE / "general.json", "--safety", SAMPLE / "safety.json", "--n", 1,
                     "--out", tmp_path / "mix.json", "--report", tmp_path / "mix.report.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "mix.report.json").read_text())["safety"]["drawn"] == 1


def test_an_old_and_a_new_name_with_different_values_is_exit_2(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", GOOD)
    both = builder("validate", path, "--rejects", tmp_path / "a.jsonl", "--quarantine", tmp_path / "b.jsonl")
    assert both.returncode == 2 and "--quarantine is the old name of --rejects; give only --rejects" in both.stderr
