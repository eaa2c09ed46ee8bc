"""The same Safer-Instruct stages with every LLM call sent through the openai backend: to a real
`transformers serve` of the packaged model, and to the loopback fault server for outputs that are empty
or cut off. Switching backend is a flag (or params) change only."""

from __future__ import annotations

import json

from tests.conftest import REPO, builder, read_jsonl, write_jsonl


def run_ok(*args, cwd):
    result = builder(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_every_llm_stage_through_transformers_serve(transformers_serve, smollm2_dir, tmp_path):
    lines = (REPO / "data/sample/responses.jsonl").read_text(encoding="utf-8").splitlines()[:4]
    (tmp_path / "sample.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_ok("ingest", "sample.jsonl", "--kind", "responses", "--out", "responses.jsonl", cwd=tmp_path)
    served = ["--backend", "openai", "--base-url", transformers_serve.url, "--model", smollm2_dir, "--concurrency", "4"]
    run_ok("induce", "--in", "responses.jsonl", "--out", "induced.jsonl", "--rejects", "r1.jsonl",
           "--max-new-tokens", "32", *served, cwd=tmp_path)
    run_ok("filter", "--in", "induced.jsonl", "--out", "filtered.jsonl", "--rejects", "r2.jsonl", cwd=tmp_path)
    run_ok("respond", "--in", "filtered.jsonl", "--out", "responded.jsonl", "--rejects", "r3.jsonl",
           "--max-new-tokens", "64", *served, cwd=tmp_path)
    # transformers serve ignores response_format: the verdict goes through the tolerant parser + one repair.
    run_ok("judge", "--in", "responded.jsonl", "--out", "judged.jsonl", "--rejects", "r4.jsonl", "--mode", "json",
           "--max-new-tokens", "48", *served, cwd=tmp_path)
    induced = read_jsonl(tmp_path / "induced.jsonl")
    assert len(induced) + len(read_jsonl(tmp_path / "r1.jsonl")) == 4
    assert all(r["meta"]["induce"]["backend"] == "openai" for r in induced)
    responded = read_jsonl(tmp_path / "responded.jsonl")
    assert responded and all(p["meta"]["respond"]["backend"] == "openai" and p["chosen"] for p in responded)
    judged, rejects = read_jsonl(tmp_path / "judged.jsonl"), read_jsonl(tmp_path / "r4.jsonl")
    assert len(judged) + len(rejects) == len(responded)
    assert all(x["reason"] in {"unparseable-verdict", "judge-rule"} and x["detail"] for x in rejects)


def test_empty_and_cut_off_outputs_go_to_rejects_with_a_reason(faults, tmp_path):
    instructions = [{"instruction": f"Say something kind about person {n} {marker}", "response": f"harsh words {n}",
                     "category": "hate"} for n, marker in enumerate(["", "EMPTYOUT", "TRUNCOUT", ""])]
    write_jsonl(tmp_path / "instructions.jsonl", instructions)
    run_ok("respond", "--in", "instructions.jsonl", "--out", "pairs.jsonl", "--rejects", "rejects.jsonl",
           "--backend", "openai", "--base-url", faults.url, "--model", "expert", "--max-new-tokens", "64", cwd=tmp_path)
    rejects = {x["record"]["instruction"].split()[-1]: x for x in read_jsonl(tmp_path / "rejects.jsonl")}
    assert rejects["EMPTYOUT"]["reason"] == "empty-output"
    assert rejects["TRUNCOUT"]["reason"] == "truncated" and rejects["TRUNCOUT"]["raw"]
    assert len(read_jsonl(tmp_path / "pairs.jsonl")) == 2


def test_judge_json_mode_keeps_by_the_rule_and_logprob_mode_needs_logprobs(faults, tmp_path):
    """The fault server answers with fixed text, so json verdicts are unparseable: after one repair
    attempt they are rejected with the raw output; logprob mode reads its Yes/No logprobs when enabled."""
    pairs = [{"prompt": f"question {n}", "chosen": f"a safe answer {n}", "rejected": f"a rude answer {n}",
              "category": "hate"} for n in range(3)]
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    common = ["--backend", "openai", "--base-url", faults.url, "--model", "judge", "--max-new-tokens", "32"]
    run_ok("judge", "--in", "pairs.jsonl", "--out", "kept.jsonl", "--rejects", "rejects.jsonl", "--mode", "json",
           *common, cwd=tmp_path)
    rejects = read_jsonl(tmp_path / "rejects.jsonl")
    assert len(rejects) == 3 and {x["reason"] for x in rejects} == {"unparseable-verdict"}
    assert all("--- repair ---" in x["raw"] for x in rejects)
    faults.configure(logprobs=True)  # Yes at -0.2, No at -1.7 for every question
    run_ok("judge", "--in", "pairs.jsonl", "--out", "kept.jsonl", "--rejects", "rejects.jsonl", "--mode", "logprob",
           "--no-cache", *common, cwd=tmp_path)
    kept = read_jsonl(tmp_path / "kept.jsonl")
    assert len(kept) == 3  # calibration divides out the constant bias: every P(yes) is exactly 0.5 -> yes
    assert all(v == 0.5 for rec in kept for v in rec["meta"]["judge"]["p_yes"].values())


def test_every_llm_stage_prints_the_llm_summary_and_all_failed_calls_exit_1(faults, tmp_path):
    """Issue 12.6 and 9.2: respond (like induce, filter and judge) says what the LLM did; a stage whose
    every call failed exits 1 and leaves no output for DVC to record as done."""
    (tmp_path / "params.yaml").write_text("respond:\n  max_retries: 1\n  backoff_s: 0.01\n  max_backoff_s: 0.02\n")
    common = ["--out", "pairs.jsonl", "--rejects", "rejects.jsonl", "--backend", "openai", "--base-url", faults.url,
              "--model", "expert", "--max-new-tokens", "16"]
    write_jsonl(tmp_path / "good.jsonl", [{"instruction": f"Say something kind {n}", "response": f"harsh {n}"}
                                          for n in range(3)])
    ok = builder("respond", "--in", "good.jsonl", *common, cwd=tmp_path)
    assert ok.returncode == 0 and "llm (openai, expert): 3/3 done" in ok.stderr, ok.stderr
    (tmp_path / "pairs.jsonl").unlink()
    write_jsonl(tmp_path / "bad.jsonl", [{"instruction": f"ALWAYS500 kind {n}", "response": f"harsh {n}"}
                                         for n in range(3)])
    failed = builder("respond", "--in", "bad.jsonl", *common, cwd=tmp_path)
    assert failed.returncode == 1 and "every LLM call failed" in failed.stderr, failed.stderr
    assert not (tmp_path / "pairs.jsonl").exists() and len(read_jsonl(tmp_path / "rejects.jsonl")) == 3
