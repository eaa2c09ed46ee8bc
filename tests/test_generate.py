"""generate: eval suites -> generation records (and the seeds' layout), cached so a killed run resumes."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import builder, read_jsonl
from tests.llm_fixtures import kill_mid_run


def suite(tmp_path, name: str, n: int):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"instructions": [f"{name} prompt {i}" for i in range(n)], "inputs": []}))
    return path


def openai_flags(url: str) -> list[str]:
    # Beam search is not in the OpenAI API: the server runs greedy decoding.
    return ["--backend", "openai", "--base-url", url, "--model", "served", "--num-beams", "1",
            "--max-new-tokens", "16"]


def test_generation_records_carry_suite_model_and_prompt_and_the_seed_layout(faults, fresh_cache, tmp_path):
    harmful, benign = suite(tmp_path, "I-MaliciousInstructions", 3), suite(tmp_path, "I-Alpaca", 2)
    out = tmp_path / "gen.jsonl"
    run = builder("generate", "--eval", harmful, "--eval", benign, "--out", out, *openai_flags(faults.url),
                  "--metrics", tmp_path / "m.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    records = read_jsonl(out)
    assert [r["suite"] for r in records] == ["I-MaliciousInstructions"] * 3 + ["I-Alpaca"] * 2
    assert {r["model"] for r in records} == {"served"} and all(r["output"] for r in records)
    assert json.loads((tmp_path / "m.json").read_text())["by_suite"] == {"I-Alpaca": 2, "I-MaliciousInstructions": 3}
    assert builder("validate", out, "--kind", "generation", cwd=tmp_path).returncode == 0

    seed_out = tmp_path / "gen.json"  # a .json output is the seeds' layout; all from the cache now
    run = builder("generate", "--eval", harmful, "--out", seed_out, *openai_flags(faults.url), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    doc = json.loads(seed_out.read_text())
    assert set(doc) == {"parameters", "inputs", "instructions", "outputs"}
    assert doc["instructions"] == [f"I-MaliciousInstructions prompt {i}" for i in range(3)]
    assert doc["outputs"] == [r["output"] for r in records[:3]]
    assert "(3 from cache)" in run.stderr


def test_the_seed_preset_sends_the_alpaca_prompt_without_inputs(faults, fresh_cache, tmp_path):
    path = tmp_path / "with_inputs.json"
    path.write_text(json.dumps({"instructions": ["Summarize"], "inputs": ["SECRET-CONTEXT"]}))
    run = builder("generate", "--eval", path, "--out", tmp_path / "g.jsonl", *openai_flags(faults.url), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    record = read_jsonl(tmp_path / "g.jsonl")[0]
    assert "input" not in record and record["meta"]["generate"]["preset"] == "safety-tuned-llamas"
    assert record["meta"]["generate"]["params"]["max_new_tokens"] == 16


def test_beam_search_needs_the_hf_backend(faults, fresh_cache, tmp_path):
    flags = [f for f in openai_flags(faults.url) if f not in ("--num-beams", "1")]
    run = builder("generate", "--eval", suite(tmp_path, "s", 1), "--out", tmp_path / "g.jsonl", *flags, cwd=tmp_path)
    assert run.returncode == 2 and "num_beams" in run.stderr


def test_kill_9_then_rerun_sends_nothing_already_done(faults, fresh_cache, tmp_path):
    n = 60
    path = suite(tmp_path, "big", n)
    kill_mid_run(faults, ["generate", "--eval", path, "--out", tmp_path / "g.jsonl", *openai_flags(faults.url),
                          "--concurrency", "2"], tmp_path, {})
    assert not (tmp_path / "g.jsonl").exists()  # no half-written output
    run = builder("generate", "--eval", path, "--out", tmp_path / "g.jsonl", *openai_flags(faults.url), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    cached = int(re.search(r"\((\d+) from cache\)", run.stderr).group(1))
    assert cached >= 10
    assert faults.stats()["api_received"] == n - cached  # nothing already done was sent again
    assert len(read_jsonl(tmp_path / "g.jsonl")) == n


@pytest.mark.slow
def test_hf_backend_batched_beam_search_matches_one_at_a_time(smollm2_dir, fresh_cache, tmp_path):
    from builder.llm import GenParams, LLMSpec, Request, run_requests

    prompts = ["Name a colour.", "Write one word about the sea, please, in English."]
    params = GenParams(max_new_tokens=8, num_beams=4)
    batched = run_requests(LLMSpec(batch_size=2, use_chat_template=False),
                           [Request(str(i), prompt=p, params=params) for i, p in enumerate(prompts)], use_cache=False)
    single = run_requests(LLMSpec(batch_size=1, use_chat_template=False),
                          [Request(str(i), prompt=p, params=params) for i, p in enumerate(prompts)], use_cache=False)
    assert [batched.completions[str(i)].text for i in range(2)] == [single.completions[str(i)].text for i in range(2)]
