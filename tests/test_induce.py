"""`builder induce` end to end: both backends on data/sample, provenance, byte-identical reruns from the
cache, rejects with reasons under injected faults, candidates, and load-time template checks."""

from __future__ import annotations

import hashlib
import json

import pytest

from builder.prompts import load_template
from tests.conftest import REPO, builder, read_jsonl, write_jsonl
from tests.llm_fixtures import reply_for

SAMPLE = REPO / "data" / "sample" / "responses.jsonl"


def _prompt(text: str) -> str:
    return load_template("safer_instruct_reverse").render(output=text)


def test_induce_hf_on_the_sample_with_provenance_and_identical_rerun(fresh_cache, tmp_path):
    out, rejects = tmp_path / "instructions.jsonl", tmp_path / "rejects.jsonl"
    args = ["induce", "--in", SAMPLE, "--out", out, "--rejects", rejects, "--backend", "hf", "--model", "smollm2-135m",
            "--limit", "8", "--max-new-tokens", "24", "--batch-size", "8", "--temperature", "0"]
    r = builder(*args)
    assert r.returncode == 0, r.stderr
    assert "8/8 done (0 from cache)" in r.stderr
    records = read_jsonl(out)
    sample = read_jsonl(SAMPLE)[:8]
    assert len(records) + len(read_jsonl(rejects)) == 8
    tpl = load_template("safer_instruct_reverse")
    for rec in records:
        assert rec["instruction"].strip() and rec["response"] in {s["text"] for s in sample}
        meta = rec["meta"]["induce"]
        assert meta["model"] == "smollm2-135m" and meta["backend"] == "hf" and meta["parents"] == [rec["response_id"]]
        assert meta["template"] == {"name": "safer_instruct_reverse", "hash": tpl.hash}
        assert meta["params"]["max_new_tokens"] == 24 and "created_at" not in meta  # no wall clock in outputs
    v = builder("validate", out, "--kind", "instructions")
    assert v.returncode == 0, v.stderr

    first = out.read_bytes()
    r = builder(*args)
    assert r.returncode == 0 and "8/8 done (8 from cache)" in r.stderr
    assert out.read_bytes() == first  # byte-identical: outputs hold no wall-clock time


def test_induce_openai_backend_against_transformers_serve(transformers_serve, fresh_cache, tmp_path):
    out = tmp_path / "instructions.jsonl"
    r = builder("induce", "--in", SAMPLE, "--out", out, "--backend", "openai", "--base-url", transformers_serve.url,
                "--model", transformers_serve.model, "--limit", "4", "--max-new-tokens", "16", "--concurrency", "4")
    assert r.returncode == 0, r.stderr
    records = read_jsonl(out)
    assert len(records) == 4 and all(rec["instruction"] for rec in records)
    assert {rec["meta"]["induce"]["backend"] for rec in records} == {"openai"}


def test_induce_under_faults_every_response_ends_in_output_or_rejects(faults, fresh_cache, tmp_path):
    faults.configure(fault_rate=0.2, hang_s=5)
    rows = [{"text": f"harmful text number {i}", "category": "hate"} for i in range(490)]
    rows += [{"text": f"ALWAYS500 text {i}"} for i in range(5)] + [{"text": f"ALWAYS400 text {i}"} for i in range(5)]
    src = write_jsonl(tmp_path / "responses.jsonl", rows)
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    args = ["induce", "--in", src, "--out", out, "--rejects", rejects, "--backend", "openai", "--base-url", faults.url,
            "--model", "fake", "--concurrency", "32", "--max-new-tokens", "16"]
    # fast retries and a short per-request timeout for the hangs come from params (stage section)
    params = tmp_path / "params.yaml"
    params.write_text("induce:\n  timeout_s: 1.0\n  backoff_s: 0.02\n  max_backoff_s: 0.2\n  max_new_tokens: 16\n")
    r = builder(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    done, rejected = read_jsonl(out), read_jsonl(rejects)
    by_text = {rec["response"]: rec for rec in done}
    assert len(by_text) == len(done)  # no duplicates
    rejected_texts = {rec["record"]["text"] for rec in rejected}
    assert {rec["response"] for rec in done} | rejected_texts == {row["text"] for row in rows}
    assert not {rec["response"] for rec in done} & rejected_texts
    assert all(rec["reason"] == "llm-failure" and rec["detail"] for rec in rejected)
    assert {rec["record"]["text"] for rec in rejected if "HTTP 500" in rec["detail"]} >= {f"ALWAYS500 text {i}" for i in range(5)}
    for text, rec in by_text.items():
        assert rec["instruction"] == reply_for(_prompt(text))
    assert sum(faults.stats()["faults"].values()) > 50

    faults.reset()
    r = builder(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sent = faults.stats()["by_prompt"]
    done_digests = {hashlib.sha256(_prompt(t).encode()).hexdigest()[:16] for t in by_text}
    assert not done_digests & set(sent)  # nothing sent again for a completed prompt
    assert len(read_jsonl(out)) == len(done) + len(rejected) - 10


def test_candidates_need_sampling_and_keep_k_per_response(faults, fresh_cache, tmp_path):
    src = write_jsonl(tmp_path / "r.jsonl", [{"text": "first text"}, {"text": "second text"}])
    out = tmp_path / "o.jsonl"
    common = ["induce", "--in", src, "--out", out, "--backend", "openai", "--base-url", faults.url, "--model", "fake",
              "--max-new-tokens", "8", "--n-candidates", "3"]
    r = builder(*common, "--temperature", "0")
    assert r.returncode == 2 and "--temperature" in r.stderr
    assert faults.stats()["api_received"] == 0
    r = builder(*common, "--temperature", "0.7", "--seed", "10")
    assert r.returncode == 0, r.stderr
    records = read_jsonl(out)
    assert len(records) == 6
    assert sorted(rec["meta"]["induce"]["params"]["seed"] for rec in records) == [10, 10, 11, 11, 12, 12]
    assert len({rec["instruction"] for rec in records}) == 6


def test_template_mismatch_fails_at_load_before_any_request(faults, fresh_cache, tmp_path):
    tpl = tmp_path / "t.txt"
    tpl.write_text("Rewrite: {missing_field}\n")
    r = builder("induce", "--in", SAMPLE, "--out", tmp_path / "o.jsonl", "--backend", "openai", "--base-url", faults.url,
                "--model", "fake", "--template", tpl)
    assert r.returncode == 2 and "{missing_field}" in r.stderr
    assert faults.stats()["api_received"] == 0
    r = builder("induce", "--in", SAMPLE, "--out", tmp_path / "o.jsonl", "--template", "nope")
    assert r.returncode == 2 and "safer_instruct_reverse" in r.stderr


@pytest.mark.parametrize("template", ["alpaca", "llama2"])
def test_other_presets_are_selectable(faults, fresh_cache, tmp_path, template):
    """alpaca/llama2 fill {instruction}: not a response field, so induce refuses them at load (exit 2)."""
    r = builder("induce", "--in", SAMPLE, "--out", tmp_path / "o.jsonl", "--backend", "openai", "--base-url",
                faults.url, "--model", "fake", "--template", template)
    assert r.returncode == 2 and "{instruction}" in r.stderr


def test_params_sections_are_checked(tmp_path):
    """A misspelt key in the induce or llm section is bad input (exit 2) naming the key."""
    src = write_jsonl(tmp_path / "r.jsonl", [{"text": "a text"}])
    (tmp_path / "params.yaml").write_text("llm:\n  backend: hf\ninduce:\n  temprature: 0.5\n")
    r = builder("induce", "--in", src, "--out", tmp_path / "o.jsonl", cwd=tmp_path)
    assert r.returncode == 2 and "temprature" in r.stderr
    (tmp_path / "params.yaml").write_text("llm:\n  backend: vllm\n")
    r = builder("induce", "--in", src, "--out", tmp_path / "o.jsonl", cwd=tmp_path)
    assert r.returncode == 2 and "llm.backend" in r.stderr


def test_dry_run_estimates_and_sends_nothing(faults, fresh_cache, tmp_path):
    src = write_jsonl(tmp_path / "r.jsonl", [{"text": f"some harmful text {i}"} for i in range(10)])
    (tmp_path / "params.yaml").write_text("llm:\n  prices: {fake: {input: 1000000, output: 1000000}}\n")
    common = ["induce", "--in", src, "--out", tmp_path / "o.jsonl", "--backend", "openai", "--base-url", faults.url,
              "--model", "fake", "--max-new-tokens", "8"]
    r = builder(*common, "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "10 distinct requests would be sent for 10 records (0 of 10 answered from the cache)" in r.stderr
    assert "at most 80 completion tokens" in r.stderr and "at most $" in r.stderr
    assert faults.stats()["api_received"] == 0 and not (tmp_path / "o.jsonl").exists()
    assert builder(*common, "--limit", "4", cwd=tmp_path).returncode == 0
    r = builder(*common, "--dry-run", cwd=tmp_path)
    assert "6 distinct requests would be sent for 6 records (4 of 10 answered from the cache)" in r.stderr


def test_max_budget_stops_cleanly_and_a_rerun_continues(faults, fresh_cache, tmp_path):
    src = write_jsonl(tmp_path / "r.jsonl", [{"text": f"some harmful text number {i}"} for i in range(12)])
    # $1 per token: every request costs dollars, so a $20 budget stops the run early
    (tmp_path / "params.yaml").write_text("llm:\n  prices: {fake: {input: 1000000, output: 1000000}}\n")
    out, rejects = tmp_path / "o.jsonl", tmp_path / "rejects.jsonl"
    common = ["induce", "--in", src, "--out", out, "--rejects", rejects, "--backend", "openai", "--base-url",
              faults.url, "--model", "fake", "--max-new-tokens", "8", "--concurrency", "1"]
    r = builder(*common, "--max-budget", "20", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    done, rejected = read_jsonl(out), read_jsonl(rejects)
    sent = faults.stats()["api_received"]
    assert 0 < len(done) == sent < 12 and len(done) + len(rejected) == 12
    assert all("max_budget_usd $20 reached" in x["detail"] for x in rejected)
    faults.reset()
    r = builder(*common, cwd=tmp_path)
    assert r.returncode == 0 and len(read_jsonl(out)) == 12
    assert faults.stats()["api_received"] == 12 - sent  # the rest only: completed prompts came from the cache
