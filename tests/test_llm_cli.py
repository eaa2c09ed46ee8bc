"""The LLM stages through the real CLI (subprocesses): SIGTERM exits 143 keeping what was stored, a
dry run needs no API key, and a malformed --base-url is bad usage before anything is sent."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from tests.conftest import REPO, builder, read_jsonl, write_jsonl


def _induce_args(src, out, url, *extra):
    return ["induce", "--in", src, "--out", out, "--backend", "openai", "--base-url", url, "--model", "fake",
            "--max-new-tokens", "8", *extra]


def _stored(db) -> int:
    try:
        return sqlite3.connect(db).execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def test_sigterm_stops_sending_keeps_what_was_stored_and_exits_143(faults, fresh_cache, tmp_path):
    n = 300
    faults.configure(latency_s=0.1)
    src = write_jsonl(tmp_path / "r.jsonl", [{"text": f"sigterm text {i}"} for i in range(n)])
    out = tmp_path / "o.jsonl"
    args = _induce_args(src, out, faults.url, "--concurrency", "8")
    proc = subprocess.Popen([sys.executable, "-m", "builder", *map(str, args)], cwd=REPO, stderr=subprocess.PIPE,
                            text=True, env={**os.environ})
    db = fresh_cache / "completions.sqlite"
    deadline = time.monotonic() + 60
    while _stored(db) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "rerun the same command" in err
    assert not out.exists()  # nothing half-done for dvc to record
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0  # another process may go on
    time.sleep(0.3)
    paid, stored = faults.stats()["api_received"], _stored(db)
    assert 40 <= stored < n and paid - stored <= 8  # at most the requests in flight were lost

    faults.reset()
    r = builder(*args)
    assert r.returncode == 0, r.stderr
    assert len(read_jsonl(out)) == n and faults.stats()["api_received"] == n - stored


def test_dry_run_needs_no_api_key(fresh_cache, tmp_path):
    src = write_jsonl(tmp_path / "r.jsonl", [{"text": f"text {i}"} for i in range(3)])
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    r = subprocess.run([sys.executable, "-m", "builder", "induce", "--in", str(src), "--out", str(tmp_path / "o.jsonl"),
                        "--backend", "openai", "--model", "gpt-4o-mini", "--max-new-tokens", "8", "--dry-run"],
                       cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "3 distinct requests would be sent" in r.stderr


def test_malformed_base_url_is_bad_usage_with_the_fix(fresh_cache, tmp_path):
    src = write_jsonl(tmp_path / "r.jsonl", [{"text": "text"}])
    for url in ("127.0.0.1:18431", "http://127.0.0.1:port/v1", "htp:/x"):
        r = builder(*_induce_args(src, tmp_path / "o.jsonl", url))
        assert r.returncode == 2, (url, r.stderr)
        assert "http://HOST:PORT/v1" in r.stderr
