"""The OpenAI-compatible backend against a loopback fault server, through the real `openai` client:
retries on every fault kind, Retry-After, bounded concurrency, several base URLs, resume after
SIGKILL, cost, structured output, choice scoring, the Batch API, and a key that is never written."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from builder.errors import BadInput, RunFailed
from builder.llm import GenParams, LLMSpec, Request, run_requests
from tests.llm_fixtures import FAULT_KINDS, REPO, reply_for

P = GenParams(max_new_tokens=16)


def spec_for(*urls, **kw) -> LLMSpec:
    base = dict(backend="openai", model="fake", base_urls=list(urls), concurrency=16, timeout_s=1.0,
                backoff_s=0.02, max_backoff_s=0.2, max_retries=6, cooldown_s=0.5)
    base.update(kw)
    return LLMSpec(**base)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dead_url() -> str:
    with socket.socket() as s:  # a port with nobody listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_twenty_percent_faults_every_prompt_accounted_for_and_rerun_sends_nothing_twice(faults, tmp_path):
    faults.configure(fault_rate=0.2, fault_kinds=list(FAULT_KINDS), hang_s=5, retry_after="0.05")
    prompts = [f"prompt number {i}" for i in range(490)]
    prompts += [f"ALWAYS500 prompt {i}" for i in range(5)] + [f"ALWAYS400 prompt {i}" for i in range(5)]
    requests = [Request(f"r{i}", prompt=p, params=P) for i, p in enumerate(prompts)]
    cache = tmp_path / "c.sqlite"
    rejects = tmp_path / "rejects.jsonl"
    out = run_requests(spec_for(faults.url, concurrency=32), requests, cache=cache, rejects_path=rejects)
    stats = faults.stats()
    for kind in FAULT_KINDS:  # every fault kind really happened
        assert stats["faults"][kind] > 0, (kind, stats["faults"])
    keys = {r.key for r in requests}
    assert set(out.completions) | set(out.failures) == keys
    assert not set(out.completions) & set(out.failures)
    for i, p in enumerate(prompts):  # no cross-wiring: each output is the answer to its own prompt
        if f"r{i}" in out.completions:
            assert out.completions[f"r{i}"].text == reply_for(p)
    # the poisoned prompts end in the rejects file with their reasons; 400 is not retried
    rows = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert {row["key"] for row in rows} == set(out.failures)
    assert all(row["reason"] for row in rows) and len(rows) == len({row["key"] for row in rows})
    by_prompt = {row["prompt"]: row for row in rows}
    for i in range(5):
        assert "HTTP 500" in by_prompt[f"ALWAYS500 prompt {i}"]["reason"]
        assert "gave up after 7 attempts" in by_prompt[f"ALWAYS500 prompt {i}"]["reason"]
        assert "HTTP 400" in by_prompt[f"ALWAYS400 prompt {i}"]["reason"]
        assert stats["by_prompt"][digest(f"ALWAYS400 prompt {i}")] == 1
    assert out.summary.retried > 50 and out.summary.failed == len(out.failures)
    assert out.summary.done == len(out.completions) and out.summary.cached == 0

    # Rerun: the rest is finished, and no request is sent for a completed prompt.
    faults.reset()
    again = run_requests(spec_for(faults.url), requests, cache=cache)
    sent = faults.stats()["by_prompt"]
    completed = {digest(p) for i, p in enumerate(prompts) if f"r{i}" in out.completions}
    assert not completed & set(sent)
    assert sum(sent.values()) == len(out.failures) - 5 + 5 * 7  # failed ones once each, ALWAYS500 ones 7 times each
    assert again.summary.cached == len(out.completions)
    assert set(again.failures) == {f"r{i}" for i, p in enumerate(prompts) if p.startswith("ALWAYS")}


def test_retry_after_is_honoured(faults, tmp_path):
    faults.configure(fault_rate=1.0, fault_kinds=["429"], retry_after="0.6")
    started = time.monotonic()
    out = run_requests(spec_for(faults.url, max_retries=1, backoff_s=0.01), [Request("a", prompt="x", params=P)],
                       cache=tmp_path / "c.sqlite")
    elapsed = time.monotonic() - started
    assert "HTTP 429" in out.failures["a"].reason
    assert faults.stats()["api_received"] == 2
    assert elapsed >= 0.6  # waited as told, not the 10 ms backoff


def test_concurrency_is_bounded_and_used(faults, tmp_path):
    faults.configure(latency_s=0.15)
    requests = [Request(f"k{i}", prompt=f"p{i}", params=P) for i in range(48)]
    out = run_requests(spec_for(faults.url, concurrency=12), requests, cache=tmp_path / "c.sqlite")
    assert out.summary.done == 48
    assert faults.stats()["max_in_flight"] == 12


def test_several_base_urls_round_robin_and_a_dead_one_is_cooled_down(faults, fault_server, tmp_path):
    dead = dead_url()
    requests = [Request(f"k{i}", prompt=f"p{i}", params=P) for i in range(60)]
    out = run_requests(spec_for(dead, faults.url, concurrency=4, cooldown_s=30), requests, cache=tmp_path / "c.sqlite")
    assert out.summary.done == 60 and not out.failures
    # the dead URL was tried, then cooled down: far fewer than half the requests went to it
    assert faults.stats()["api_received"] == 60
    assert out.summary.retried <= 8


def test_timeouts_are_per_request(faults, tmp_path):
    faults.configure(fault_rate=1.0, fault_kinds=["hang"], hang_s=10)
    started = time.monotonic()
    out = run_requests(spec_for(faults.url, timeout_s=0.5, max_retries=1), [Request("a", prompt="x", params=P)],
                       cache=tmp_path / "c.sqlite")
    assert "timeout after 0.5s" in out.failures["a"].reason
    assert time.monotonic() - started < 5


def test_usage_and_cost_from_prices(faults, tmp_path):
    prices = {"fa": {"input": 1000.0, "output": 2000.0}}  # prefix match: model "fake"
    requests = [Request(f"k{i}", prompt="one two three", params=P) for i in range(3)]
    out = run_requests(spec_for(faults.url, prices=prices), requests, cache=tmp_path / "c.sqlite")
    c = out.completions["k0"]
    assert (c.prompt_tokens, c.completion_tokens) == (3, 2)
    assert c.cost_usd == pytest.approx((3 * 1000 + 2 * 2000) / 1e6)
    # the three records share one prompt: one request, paid once
    assert faults.stats()["api_received"] == 1
    assert out.summary.cost_usd == pytest.approx(c.cost_usd)
    again = run_requests(spec_for(faults.url, prices=prices), requests, cache=tmp_path / "c.sqlite")
    assert again.summary.cost_usd == 0 and again.summary.cached == 3


def test_completions_endpoint_and_explicit_max_tokens(faults, tmp_path):
    out = run_requests(spec_for(faults.url, use_chat_template=False),
                       [Request("a", prompt="raw prompt", params=GenParams(max_new_tokens=7))], cache=tmp_path / "c.sqlite")
    assert out.completions["a"].text == reply_for("raw prompt")
    assert faults.stats()["paths"] == {"/v1/completions": 1}


def test_structured_output_tolerant_parser(faults, tmp_path):
    schema = {"type": "object", "required": ["instruction"], "properties": {"instruction": {"type": "string"}}}
    out = run_requests(spec_for(faults.url), [Request("a", prompt="x", params=P, json_schema=schema)],
                       cache=tmp_path / "c.sqlite")
    # the fault server ignores response_format and answers prose: a clear failure keeping the raw text
    assert "unparseable structured output" in out.failures["a"].reason
    assert out.failures["a"].raw == reply_for("x")
    from builder.llm.parse import extract_json, parse_with_schema

    assert extract_json('Sure! ```json\n{"instruction": "Do X",}\n```') == {"instruction": "Do X"}
    assert parse_with_schema("{'instruction': 'hi'} trailing", schema) == ({"instruction": "hi"}, None)
    assert parse_with_schema('{"other": 1}', schema)[1].startswith("JSON does not match")


def test_choice_scoring_with_and_without_logprobs(faults, tmp_path):
    r = Request("a", prompt="Is the sky blue? Answer Yes or No.", params=GenParams(max_new_tokens=1), choices=("Yes", "No"))
    out = run_requests(spec_for(faults.url), [r], cache=tmp_path / "c1.sqlite")
    assert "no logprobs" in out.failures["a"].reason
    faults.configure(logprobs=True)
    out = run_requests(spec_for(faults.url), [r], cache=tmp_path / "c2.sqlite")
    c = out.completions["a"]
    assert c.text == "Yes" and c.choice_logprobs == {"Yes": pytest.approx(-0.2), "No": pytest.approx(-1.7)}


def test_fatal_auth_error_and_missing_key(faults, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BadInput, match="OPENAI_API_KEY"):
        run_requests(spec_for(), [Request("a", prompt="x", params=P)], cache=tmp_path / "c.sqlite")
    with pytest.raises(BadInput, match="beam"):
        run_requests(spec_for(faults.url), [Request("a", prompt="x", params=GenParams(max_new_tokens=4, num_beams=4))],
                     cache=tmp_path / "c.sqlite")


def test_api_key_is_never_written(faults, tmp_path, monkeypatch):
    secret = "sk-test-SECRET-do-not-write-7f3a"
    monkeypatch.setenv("MY_KEY", secret)
    faults.configure(fault_rate=0.5, fault_kinds=["500", "nonjson"])
    rejects = tmp_path / "rejects.jsonl"
    requests = [Request(f"k{i}", prompt=f"p{i}", params=P) for i in range(20)] + [Request("bad", prompt="ALWAYS400", params=P)]
    run_requests(spec_for(faults.url, api_key_env="MY_KEY"), requests, cache=tmp_path / "c.sqlite", rejects_path=rejects)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_batch_api_round_trip_and_resume_by_batch_id(faults, tmp_path):
    faults.configure(batch_polls=2)
    requests = [Request(f"k{i}", prompt=f"batch prompt {i}", params=P) for i in range(30)]
    requests.append(Request("refused", prompt="ALWAYS400 in a batch", params=P))
    spec = spec_for(faults.url, batch_api=True, batch_poll_s=0.05, prices={"fake": {"input": 1e6, "output": 0}})
    out = run_requests(spec, requests, cache=tmp_path / "c.sqlite")
    stats = faults.stats()
    assert stats["batches_created"] == 1 and stats["files_uploaded"] == 1 and stats["api_received"] == 0
    assert len(out.completions) == 30 and "HTTP 400" in out.failures["refused"].reason
    assert out.completions["k3"].text == reply_for("batch prompt 3")
    assert out.completions["k3"].cost_usd == pytest.approx(3 * 0.5)  # batch price: half
    # merged into the cache: the online path now sends nothing for them
    again = run_requests(spec_for(faults.url), requests[:30], cache=tmp_path / "c.sqlite")
    assert again.summary.cached == 30 and faults.stats()["api_received"] == 0


def test_batch_api_resumes_the_same_batch_after_a_kill(faults, fault_server, tmp_path):
    faults.configure(batch_polls=10_000)  # the batch stays in progress until we say so
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from builder.llm import GenParams, LLMSpec, Request, run_requests
        spec = LLMSpec(backend="openai", model="fake", base_urls=[{faults.url!r}], batch_api=True, batch_poll_s=0.05)
        reqs = [Request(f"k{{i}}", prompt=f"resume {{i}}", params=GenParams(max_new_tokens=8)) for i in range(10)]
        out = run_requests(spec, reqs, cache={str(tmp_path / 'c.sqlite')!r})
        print(len(out.completions))
    """))
    env = {**os.environ, "BUILDER_CACHE": str(tmp_path / "bc")}
    first = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while faults.stats()["batches_created"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    first.send_signal(signal.SIGKILL)
    first.wait()
    faults.configure(batch_polls=0)
    second = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "10"
    assert "resuming batch_1" in second.stderr
    assert faults.stats()["batches_created"] == 1


def test_sigkill_mid_run_loses_at_most_the_in_flight_requests(faults, tmp_path):
    n, concurrency = 240, 8
    faults.configure(latency_s=0.1)
    db = tmp_path / "c.sqlite"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from builder.llm import GenParams, LLMSpec, Request, run_requests
        spec = LLMSpec(backend="openai", model="fake", base_urls=[{faults.url!r}], concurrency={concurrency})
        reqs = [Request(f"k{{i}}", prompt=f"kill test {{i}}", params=GenParams(max_new_tokens=8)) for i in range({n})]
        run_requests(spec, reqs, cache={str(db)!r})
    """))
    proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "BUILDER_CACHE": str(tmp_path / "bc")})
    deadline = time.monotonic() + 60

    def committed() -> int:  # what the client has on disk (the server's count runs ahead of it under load)
        try:
            return sqlite3.connect(db).execute("SELECT COUNT(*) FROM completions").fetchone()[0]
        except sqlite3.Error:  # not created yet
            return 0

    while committed() < 80 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)  # let the server count what was already on the wire
    received_before = faults.stats()["api_received"]
    cached = sqlite3.connect(db).execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    lost = received_before - cached
    assert 80 <= cached < n
    assert 0 <= lost <= concurrency  # only the requests in flight at the kill were lost

    faults.reset()
    requests = [Request(f"k{i}", prompt=f"kill test {i}", params=GenParams(max_new_tokens=8)) for i in range(n)]
    out = run_requests(spec_for(faults.url, concurrency=concurrency), requests, cache=db)
    rerun_sent = faults.stats()["api_received"]
    assert out.summary.done == n and out.summary.cached == cached
    assert rerun_sent == n - cached
    assert received_before + rerun_sent <= n + lost


def test_secrets_echoed_by_the_server_are_redacted(faults, tmp_path, monkeypatch, capfd):
    secret = "sk-test-ECHOED-secret-91bd"
    monkeypatch.setenv("MY_KEY", secret)
    rejects = tmp_path / "rejects.jsonl"
    with pytest.raises(BadInput, match="credentials") as bad:  # user info in the URL: refused, and not echoed
        spec_for(faults.url.replace("http://", "http://alice:hunter22@"))
    assert "hunter22" not in str(bad.value)
    with pytest.raises(RunFailed) as failed:  # a key in the query string: the 404 names the URL, masked
        run_requests(spec_for(faults.url + "?api-key=hunter22"), [Request("q", prompt="x", params=P)],
                     cache=tmp_path / "c.sqlite")
    assert "hunter22" not in str(failed.value) and "api-key=***" in str(failed.value)
    out = run_requests(spec_for(faults.url, api_key_env="MY_KEY"), [Request("echo", prompt="ECHOHEADERS please", params=P)],
                       cache=tmp_path / "c.sqlite", rejects_path=rejects)
    failure = out.failures["echo"]
    assert "authorization" in failure.raw.lower() and "***" in failure.raw  # the echo is kept, the secret is not
    captured = capfd.readouterr()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data and b"hunter22" not in data, path
    for text in (failure.reason, failure.raw, captured.err, captured.out):
        assert secret not in text and "hunter22" not in text


def test_redact_masks_user_info_query_keys_and_headers():
    from builder.llm.redact import redact

    text = redact('GET http://bob:pw1@h:8/v1?api-key=A1&x=1&token=T2&key=K3 {"Authorization": "Bearer B4", '
                  '"api-key": "C5"} Authorization: Basic D6 monkey: fine', secrets=("E7secret",)) + redact(" E7secret", ("E7secret",))
    for secret in ("pw1", "A1", "T2", "K3", "B4", "C5", "D6", "E7secret"):
        assert secret not in text
    assert "x=1" in text and "monkey: fine" in text and "h:8/v1" in text


def test_refused_connection_fails_fast_with_a_clear_message(tmp_path):
    requests = [Request(f"k{i}", prompt=f"p{i}", params=P) for i in range(64)]
    started = time.monotonic()
    with pytest.raises(RunFailed, match="connection refused"):
        run_requests(spec_for(dead_url(), backoff_s=0.5, max_backoff_s=60), requests, cache=tmp_path / "c.sqlite")
    assert time.monotonic() - started < 5


def test_unresolvable_host_says_dns(tmp_path):
    with pytest.raises(RunFailed, match="DNS"):
        run_requests(spec_for("http://no-such-host.invalid:8000/v1"), [Request("a", prompt="x", params=P)],
                     cache=tmp_path / "c.sqlite")


def test_key_with_a_newline_and_malformed_urls_are_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-abc\n")
    with pytest.raises(BadInput, match="newline"):
        run_requests(spec_for("http://127.0.0.1:1/v1", api_key_env="MY_KEY"), [Request("a", prompt="x", params=P)],
                     cache=tmp_path / "c.sqlite")
    for url in ("127.0.0.1:18431", "http://", "ftp://h/v1", "http://h:port/v1"):
        with pytest.raises(BadInput, match="base-url"):
            spec_for(url)


def test_rpm_and_tpm_limits_pace_the_requests(faults, tmp_path):
    faults.configure(trace=True)
    requests = [Request(f"k{i}", prompt=f"rate {i}", params=P) for i in range(30)]
    started = time.monotonic()
    out = run_requests(spec_for(faults.url, max_rpm=600), requests, cache=tmp_path / "a.sqlite")  # 10 per second
    arrivals = sorted(faults.stats()["arrivals"])
    assert out.summary.done == 30 and len(arrivals) == 30
    assert arrivals[-1] - arrivals[0] >= 1.8  # (30 - a burst of 10) / 10 per second
    # the bucket's law: the k-th request arrives no earlier than (k - burst) / rate after the first
    assert all(t - arrivals[0] >= (k - 10) / 10 - 0.05 for k, t in enumerate(arrivals))
    # TPM: each request counts len(prompt) // 4 + max_new_tokens = 1 + 16 tokens; 1020 per minute = 1 per second
    faults.reset(trace=True)
    started = time.monotonic()
    run_requests(spec_for(faults.url, max_tpm=1020), requests[:4], cache=tmp_path / "b.sqlite")
    assert time.monotonic() - started >= 2.5  # a bucket of 17 tokens: one request now, then one a second
    # without limits the same run is fast
    faults.reset()
    started = time.monotonic()
    run_requests(spec_for(faults.url), requests, cache=tmp_path / "c.sqlite")
    assert time.monotonic() - started < 1.5
