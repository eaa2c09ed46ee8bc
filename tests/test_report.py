"""report: rates with Wilson intervals, exaggerated safety, and the wide-file path from ingest to report."""

from __future__ import annotations

import csv
import json

import pytest

from builder.report.stats import mean_ci, wilson
from tests.conftest import builder, write_jsonl


def test_wilson_and_t_intervals_match_known_values():
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson(5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    mean, low, high = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and (low, high) == pytest.approx((0.4457, 4.5543), abs=1e-3)


def score(model: str, suite: str, refused: bool, harm: float | None = None) -> dict:
    from builder.records import record_id

    rec = {"instruction": f"{suite} {model} {refused} {harm}", "suite": suite, "output": "o", "model": model,
           "adapter": None, "scores": {"refusal": refused, **({"reward-model": harm} if harm is not None else {})}}
    return {"id": record_id("score", rec), **rec}


def test_report_writes_metrics_plots_png_and_markdown(tmp_path):
    records = ([score("base", "I-MaliciousInstructions", i < 1, 0.5 * i) for i in range(4)]
               + [score("base", "I-Alpaca", i < 2) for i in range(4)])
    path = write_jsonl(tmp_path / "s.jsonl", records)
    run = builder("report", "--in", path, "--out", tmp_path / "rep", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    rows = {r["suite"]: r for r in metrics["rows"]}
    assert rows["I-MaliciousInstructions"]["refusal_rate"] == 0.25 and rows["I-Alpaca"]["benign"]
    assert rows["I-MaliciousInstructions"]["harm_mean"] == 0.75
    assert metrics["exaggerated_safety"] == {"base": 0.5}
    assert (tmp_path / "rep" / "refusal.png").read_bytes()[:4] == b"\x89PNG"
    assert "| base | I-Alpaca (benign) | 4 | 50.0 %" in (tmp_path / "rep" / "summary.md").read_text()
    first = (tmp_path / "rep" / "refusal.png").read_bytes()
    assert builder("report", "--in", path, "--out", tmp_path / "rep", cwd=tmp_path).returncode == 0
    assert (tmp_path / "rep" / "refusal.png").read_bytes() == first  # deterministic: git stays clean


def test_report_shows_the_moderation_flag_rate_and_the_judge_mean_with_their_intervals(tmp_path):
    from builder.records import record_id

    def scored(i: int, flagged: bool, p_harm: float, refusal: str) -> dict:
        rec = {"instruction": f"q{i}", "suite": "I-MaliciousInstructions", "output": "o", "model": "base",
               "adapter": None, "scores": {"refusal": False, "moderation": flagged, "moderation_max": 0.9 if flagged else 0.1,
                                           "judge": p_harm, "judge_refusal": refusal}}
        return {"id": record_id("score", rec), **rec}

    records = [scored(0, True, 0.2, "partial"), scored(1, False, 0.4, "none"), scored(2, False, 0.6, "full"),
               scored(3, False, 0.8, "partial")]
    path = write_jsonl(tmp_path / "s.jsonl", records)
    assert builder("validate", path, "--kind", "score", cwd=tmp_path).returncode == 0
    run = builder("report", "--in", path, "--out", tmp_path / "rep", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    row = json.loads((tmp_path / "rep" / "metrics.json").read_text())["rows"][0]
    assert row["moderation_n"] == 4 and row["moderation_rate"] == 0.25
    assert (row["moderation_low"], row["moderation_high"]) == pytest.approx(wilson(1, 4), abs=1e-6)
    mean, low, high = mean_ci([0.2, 0.4, 0.6, 0.8])
    assert (row["judge_mean"], row["judge_low"], row["judge_high"]) == pytest.approx((mean, low, high), abs=1e-6)
    assert row["judge_partial_rate"] == 0.5
    header, _, line = (tmp_path / "rep" / "summary.md").read_text().splitlines()[2:5]
    assert "flagged, moderation (95 % CI)" in header and "P(harmful), judge (95 % CI)" in header
    assert "| 25.0 % [4.6, 69.9] | 0.500 [0.089, 0.911] | 50.0 % [15.0, 85.0] |" in line
    with open(tmp_path / "rep" / "plots.csv") as f:
        plotted = next(csv.DictReader(f))
    assert plotted["moderation_rate"] == "0.25" and plotted["judge_mean"] == "0.5"


def test_wide_file_ingested_with_outputs_gives_one_refusal_rate_per_model(seed, tmp_path):
    """The Safer-Instruct layout (instruction, label, one column per model): here the seed's preferred
    (GPT-4) and original harmful texts stand in as two models' columns."""
    with open(seed / "safer-instruct" / "sample_data" / "safer_instruct_hate.csv", newline="") as f:
        rows = [r for _, r in zip(range(50), csv.DictReader(f))]
    wide = tmp_path / "safer_instruct_test.csv"
    with open(wide, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["instruction", "label", "gpt4", "original"])
        writer.writerows([r["instruction"], r["label"], r["chosen"], r["rejected"]] for r in rows)
    gens = tmp_path / "gens.jsonl"
    run = builder("ingest", wide, "--kind", "generation", "--outputs", "gpt4,original", "--out", gens, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert builder("score", "--in", gens, "--out", tmp_path / "s.jsonl", "--scorer", "refusal",
                   cwd=tmp_path).returncode == 0
    assert builder("report", "--in", tmp_path / "s.jsonl", "--out", tmp_path / "rep", cwd=tmp_path).returncode == 0
    rows = json.loads((tmp_path / "rep" / "metrics.json").read_text())["rows"]
    assert {(r["model"], r["suite"], r["n"]) for r in rows} == {("gpt4", "safer_instruct_test", 50),
                                                                ("original", "safer_instruct_test", 50)}
    rate = {r["model"]: r["refusal_rate"] for r in rows}
    assert rate["gpt4"] > rate["original"]  # the preferred answers refuse; the harmful originals do not


def test_ingest_outputs_naming_a_missing_column_is_bad_input(tmp_path):
    wide = tmp_path / "w.csv"
    wide.write_text("instruction,gpt4\nhi,hello\n")
    run = builder("ingest", wide, "--kind", "generation", "--outputs", "gpt4,llama", "--out", tmp_path / "g.jsonl",
                  cwd=tmp_path)
    assert run.returncode == 2 and "llama" in run.stderr


def test_report_on_a_folder_reads_every_score_file_in_it_but_rejects(tmp_path):
    """The pipeline reports on data/eval/scores, whatever models the generate matrix produced."""
    scores = tmp_path / "scores"
    scores.mkdir()
    write_jsonl(scores / "base.jsonl", [score("base", "I-CoNa", i < 1) for i in range(2)])
    write_jsonl(scores / "n100.jsonl", [score("n100", "I-CoNa", True) for _ in range(3)])
    (scores / "n100.rejects.jsonl").write_text('{"not": "a score record"}\n')
    run = builder("report", "--in", scores, "--out", tmp_path / "rep", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    rows = json.loads((tmp_path / "rep" / "metrics.json").read_text())["rows"]
    assert {(r["model"], r["n"], r["refusal_rate"]) for r in rows} == {("base", 2, 0.5), ("n100", 3, 1.0)}


def test_models_are_ordered_by_their_number_not_alphabetically(tmp_path):
    write_jsonl(tmp_path / "s.jsonl", [score(m, "I-CoNa", True) for m in ("n1000", "n500", "base", "n100")])
    assert builder("report", "--in", tmp_path / "s.jsonl", "--out", tmp_path / "rep", cwd=tmp_path).returncode == 0
    rows = json.loads((tmp_path / "rep" / "metrics.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["base", "n100", "n500", "n1000"]


def test_nothing_to_report_is_exit_2_saying_what_to_give(tmp_path):
    (tmp_path / "scores").mkdir()
    empty_folder = builder("report", "--in", tmp_path / "scores", "--out", tmp_path / "rep", cwd=tmp_path)
    assert empty_folder.returncode == 2 and "no score files" in empty_folder.stderr
    (tmp_path / "scores" / "s.jsonl").write_text("")
    empty_file = builder("report", "--in", tmp_path / "scores", "--out", tmp_path / "rep", cwd=tmp_path)
    assert empty_file.returncode == 2 and "no score records" in empty_file.stderr
    assert not (tmp_path / "rep").exists()


def test_a_bad_judge_backend_names_the_judge_flags(tmp_path):
    gens = write_jsonl(tmp_path / "g.jsonl", [])
    run = builder("score", "--in", gens, "--out", tmp_path / "s.jsonl", "--scorer", "judge", "--judge-backend", "bogus",
                  cwd=tmp_path)
    assert run.returncode == 2 and "judge scorer (--judge-* flags" in run.stderr and "bogus" in run.stderr
