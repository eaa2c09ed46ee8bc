"""Processes sharing one cache pay once: the lease table (take, renew, release, expire, take over) and
two real `builder induce` processes against the loopback fault server (at once; one killed with -9)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from builder.llm.base import Completion
from builder.llm.cache import Cache
from builder.prompts import load_template
from tests.conftest import REPO, read_jsonl, write_jsonl
from tests.llm_fixtures import reply_for


def _c(text="x"):
    return Completion("", text, "stop", 3, 2, 0.0, "m", False, None, "2026-01-01T00:00:00Z")


def _leases(path) -> dict[str, str]:
    """key -> owner, as stored (live or not)."""
    return dict(sqlite3.connect(path).execute("SELECT key, owner FROM leases"))


def _expiry(path, owner: str) -> float:
    return sqlite3.connect(path).execute("SELECT expires FROM lease_owners WHERE owner=?", (owner,)).fetchone()[0]


def test_lease_take_renew_release_expire_takeover(tmp_path):
    path = tmp_path / "c.sqlite"
    a, b = Cache(path), Cache(path)  # two owners, as two processes would be
    assert a.owner != b.owner and str(os.getpid()) in a.owner

    found, leased = a.claim(["k1", "k2", "k3"], lease_s=60)
    assert found == {} and leased == ["k1", "k2", "k3"]
    found, leased = b.claim(["k1", "k2", "k3", "k4"], lease_s=60)
    assert found == {} and leased == ["k4"]  # a's live leases are not taken
    assert a.claim(["k1"], lease_s=60) == ({}, ["k1"])  # the owner may claim its own again

    before = _expiry(path, a.owner)
    time.sleep(0.01)
    a.renew(60)  # one row renews all of a's leases
    assert _expiry(path, a.owner) > before and _leases(path)["k2"] == a.owner

    a.put("k1", "hf", _c("one"))  # storing the completion releases its lease
    assert "k1" not in _leases(path)
    found, leased = b.claim(["k1", "k2"], lease_s=60)
    assert found["k1"].text == "one" and leased == []

    a.release(["k2"])  # a failed request gives its key back at once
    assert b.claim(["k2"], lease_s=60) == ({}, ["k2"])

    a.renew(0.2)  # a short lease that is not renewed (its owner killed with -9) expires ...
    assert b.claim(["k3"], lease_s=60)[1] == []
    time.sleep(0.3)
    assert b.claim(["k3"], lease_s=60)[1] == ["k3"]  # ... and another process takes it over
    assert _leases(path)["k3"] == b.owner

    b.close()  # a normal exit releases everything it held (and what dead owners left behind)
    assert b.owner not in _leases(path).values()
    a.close()
    assert _leases(path) == {}


def test_leases_are_renewed_while_their_owner_runs(tmp_path):
    path = tmp_path / "c.sqlite"
    a, b = Cache(path), Cache(path)
    a.claim(["k"], lease_s=0.3)
    time.sleep(0.8)  # well past the first expiry: the renewer thread kept it alive
    assert b.claim(["k"], lease_s=60)[1] == []
    a.close()
    b.close()


def _induce(src, out, url, *extra):
    return [sys.executable, "-m", "builder", "induce", "--in", str(src), "--out", str(out), "--backend", "openai",
            "--base-url", url, "--model", "fake", "--max-new-tokens", "8", *map(str, extra)]


def _project(tmp_path, lease_s: float):
    """A folder whose params.yaml sets llm.lease_s (the knob a user would turn), and an env to run there."""
    (tmp_path / "params.yaml").write_text(f"llm:\n  lease_s: {lease_s}\n", encoding="utf-8")
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_two_processes_at_once_send_each_prompt_once_and_write_the_same_output(faults, fresh_cache, tmp_path):
    n = 200
    faults.configure(latency_s=0.05)
    env = _project(tmp_path, lease_s=30)
    src = write_jsonl(tmp_path / "r.jsonl", [{"text": f"shared text {i}"} for i in range(n)])
    procs = [subprocess.Popen(_induce(src, tmp_path / f"o{i}.jsonl", faults.url, "--concurrency", "8"), cwd=tmp_path,
                              env=env, stderr=subprocess.PIPE, text=True) for i in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    stats = faults.stats()
    assert stats["api_received"] == n and max(stats["by_prompt"].values()) == 1  # each prompt paid once
    first, second = read_jsonl(tmp_path / "o0.jsonl"), read_jsonl(tmp_path / "o1.jsonl")
    assert len(first) == n and first == second
    tpl = load_template("safer_instruct_reverse")
    assert {r["response"] for r in first} == {f"shared text {i}" for i in range(n)}
    assert all(r["instruction"] == reply_for(tpl.render(output=r["response"])) for r in first)  # not cross-wired
    assert any("waited for another process" in e for e in errs)  # said on stderr, never in metrics


def test_a_killed_owner_s_leases_expire_and_the_next_run_pays_only_for_the_unstored(faults, fresh_cache, tmp_path):
    n, lease_s = 240, 2
    faults.configure(latency_s=0.1)
    env = _project(tmp_path, lease_s=lease_s)
    src = write_jsonl(tmp_path / "r.jsonl", [{"text": f"killed text {i}"} for i in range(n)])
    db = fresh_cache / "completions.sqlite"
    first = subprocess.Popen(_induce(src, tmp_path / "o1.jsonl", faults.url, "--concurrency", "8"), cwd=tmp_path,
                             env=env, stderr=subprocess.DEVNULL)

    def stored() -> int:
        try:
            return sqlite3.connect(db).execute("SELECT COUNT(*) FROM completions").fetchone()[0]
        except sqlite3.Error:  # not created yet
            return 0

    deadline = time.monotonic() + 60
    while stored() < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = time.monotonic()
    kept, left = stored(), sqlite3.connect(db).execute("SELECT COUNT(*) FROM leases").fetchone()[0]
    assert 40 <= kept < n and left == n - kept  # the dead process's leases are still there

    time.sleep(0.3)  # what was on the wire at the kill reaches the server
    faults.reset(latency_s=0.01)
    second = subprocess.run(_induce(src, tmp_path / "o2.jsonl", faults.url, "--concurrency", "8"), cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - killed_at >= lease_s  # it waited for the leases to expire, then took them over
    assert "in flight in another process" in second.stderr
    out = read_jsonl(tmp_path / "o2.jsonl")
    assert len(out) == n
    assert faults.stats()["api_received"] == n - kept  # only what was never stored is paid again
    tpl = load_template("safer_instruct_reverse")
    assert all(r["instruction"] == reply_for(tpl.render(output=r["response"])) for r in out)
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0  # released at exit
