"""The Safer-Instruct stages (induce -> filter -> respond -> judge -> pairs) on real outputs of the
packaged model, their rejects, the lineage of one record, and what lands in the final dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, builder, read_jsonl

N_RESPONSES = 8
FILTER_REASONS = {"empty", "too-short", "too-long", "template-leak", "degenerate", "refusal", "copies-response", "duplicate"}


def run_ok(*args, cwd):
    result = builder(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def chain(tmp_path_factory, builder_cache_session):
    """Every stage through the real CLI, in a folder with no params.yaml (flags only)."""
    work = tmp_path_factory.mktemp("chain")
    lines = (REPO / "data/sample/responses.jsonl").read_text(encoding="utf-8").splitlines()[:N_RESPONSES]
    (work / "sample.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_ok("ingest", "sample.jsonl", "--kind", "responses", "--out", "responses.jsonl", cwd=work)
    run_ok("induce", "--in", "responses.jsonl", "--out", "induced.jsonl", "--rejects", "induce_rejects.jsonl",
           "--max-new-tokens", "40", cwd=work)
    run_ok("filter", "--in", "induced.jsonl", "--out", "filtered.jsonl", "--rejects", "filter_rejects.jsonl",
           "--metrics", "filter.json", cwd=work)
    run_ok("respond", "--in", "filtered.jsonl", "--out", "responded.jsonl", "--rejects", "respond_rejects.jsonl",
           "--max-new-tokens", "96", "--metrics", "respond.json", cwd=work)
    run_ok("judge", "--in", "responded.jsonl", "--out", "judged.jsonl", "--rejects", "judge_rejects.jsonl",
           "--mode", "logprob", "--metrics", "judge.json", cwd=work)
    return work


def test_induce_writes_one_instruction_per_response_with_provenance(chain):
    induced = read_jsonl(chain / "induced.jsonl")
    responses = read_jsonl(chain / "responses.jsonl")
    assert len(induced) + len(read_jsonl(chain / "induce_rejects.jsonl")) == N_RESPONSES
    assert {r["response"] for r in induced} <= {r["text"] for r in responses}
    meta = induced[0]["meta"]["induce"]
    assert meta["model"] == "smollm2-135m" and meta["template"]["name"] == "safer_instruct_reverse"


def test_filter_splits_every_instruction_into_kept_or_rejected_with_a_reason(chain):
    kept, rejects = read_jsonl(chain / "filtered.jsonl"), read_jsonl(chain / "filter_rejects.jsonl")
    induced = read_jsonl(chain / "induced.jsonl")
    assert sorted(r["id"] for r in kept + [x["record"] for x in rejects]) == sorted(r["id"] for r in induced)
    assert all(x["reason"] in FILTER_REASONS and x["detail"] for x in rejects)
    metrics = json.loads((chain / "filter.json").read_text())
    assert metrics["in"] == len(induced) and metrics["out"] == len(kept)
    assert sum(metrics["rejected_by_reason"].values()) == len(rejects)


def test_respond_pairs_the_expert_answer_with_the_original_text(chain):
    filtered = {r["id"]: r for r in read_jsonl(chain / "filtered.jsonl")}
    pairs, rejects = read_jsonl(chain / "responded.jsonl"), read_jsonl(chain / "respond_rejects.jsonl")
    assert len(pairs) + len(rejects) == len(filtered) and pairs
    for pair in pairs:
        source = filtered[pair["meta"]["respond"]["parents"][0]]
        assert pair["prompt"] == source["instruction"] and pair["rejected"] == source["response"]
        assert pair["chosen"].strip() and pair["chosen"] != pair["rejected"]
        assert pair["meta"]["respond"]["template"]["name"] == "respond_system"


def test_judge_logprob_mode_gives_a_verdict_per_pair(chain):
    responded = read_jsonl(chain / "responded.jsonl")
    kept, rejects = read_jsonl(chain / "judged.jsonl"), read_jsonl(chain / "judge_rejects.jsonl")
    assert len(kept) + len(rejects) == len(responded)
    for rec in kept + [x["record"] for x in rejects if x["reason"] == "judge-rule"]:
        verdict = rec["meta"]["judge"]
        assert set(verdict["p_yes"]) == {"chosen_harmless", "chosen_helpful", "rejected_harmful", "instruction_matches_response"}
        assert all(0 <= p <= 1 for p in verdict["p_yes"].values())
        assert verdict["rejected_harmful"] == (verdict["p_yes"]["rejected_harmful"] >= 0.5)
    for rec in kept:  # the default keep rule
        assert rec["meta"]["judge"]["chosen_harmless"] and rec["meta"]["judge"]["rejected_harmful"]


def test_pairs_dataset_loads_and_show_prints_the_lineage(chain, tmp_path):
    # The judge's keep rule on a 135M model may keep few pairs; the dataset step is shown on all responded pairs.
    out = tmp_path / "pairs"
    run_ok("pairs", "--in", chain / "responded.jsonl", "--out", out, "--test-size", "0.25", "--export", "csv",
           "--rejects", tmp_path / "rejects.jsonl", cwd=chain)
    import datasets

    ds = datasets.load_dataset(str(out))
    total = ds["train_prefs"].num_rows + (ds["test_prefs"].num_rows if "test_prefs" in ds else 0)
    assert total + len(read_jsonl(tmp_path / "rejects.jsonl")) == len(read_jsonl(chain / "responded.jsonl"))
    row = ds["train_prefs"][0]
    assert {"prompt", "chosen", "rejected", "prompt_id", "category"} <= set(row)
    shown = builder("show", row["id"], "--in", str(chain), cwd=chain)
    assert shown.returncode == 0, shown.stderr
    meta = json.loads(row["meta"])
    assert all(parent in shown.stdout for parent in meta["respond"]["parents"]) and len(meta["respond"]["parents"]) == 2
    assert "source: sample.jsonl:" in shown.stdout  # back to the source line


def test_truncated_outputs_are_rejected_with_a_reason_not_kept(chain, tmp_path):
    run_ok("respond", "--in", chain / "filtered.jsonl", "--out", tmp_path / "r.jsonl", "--rejects", tmp_path / "x.jsonl",
           "--max-new-tokens", "3", "--limit", "3", cwd=chain)
    rejects = read_jsonl(tmp_path / "x.jsonl")
    assert len(rejects) == 3 and all(x["reason"] == "truncated" and x["raw"] for x in rejects)
    assert "respond.max_new_tokens" in rejects[0]["detail"]
    assert read_jsonl(tmp_path / "r.jsonl") == []


def test_unparseable_json_verdicts_end_in_rejects_with_the_raw_output(chain, tmp_path):
    """json mode on a 135M model: whatever it writes, every pair ends kept or rejected with a reason."""
    run_ok("judge", "--in", chain / "responded.jsonl", "--out", tmp_path / "j.jsonl", "--rejects", tmp_path / "x.jsonl",
           "--mode", "json", "--max-new-tokens", "48", "--limit", "3", cwd=chain)
    kept, rejects = read_jsonl(tmp_path / "j.jsonl"), read_jsonl(tmp_path / "x.jsonl")
    assert len(kept) + len(rejects) == 3
    for x in rejects:
        assert x["reason"] in {"unparseable-verdict", "judge-rule"}
        if x["reason"] == "unparseable-verdict":
            assert "after one repair attempt" in x["detail"] and "--- repair ---" in x["raw"]
