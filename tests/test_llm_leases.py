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


def test_a_dead_owner_on_this_machine_is_known_at_once_elsewhere_only_expiry_tells(tmp_path):
    path = tmp_path / "c.sqlite"
    a, b = Cache(path), Cache(path)
    a.claim(["mine"], lease_s=60)
    a.db.close()  # as if this cache's process had died without releasing (a full disk, a crash)
    from builder.llm import cache as cache_module

    cache_module._OPEN_OWNERS.discard(a.owner)
    assert b.claim(["mine"], lease_s=60)[1] == ["mine"]  # same process, cache gone: dead at once

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    machine = b.owner.rsplit(":", 2)[0]
    db = sqlite3.connect(path)
    with db:
        db.executemany("INSERT INTO lease_owners VALUES (?,?)", [(f"{machine}:{gone.stdout.strip()}:t1", time.time() + 60),
                                                              (f"elsewhere/1:{os.getpid()}:t2", time.time() + 60)])
        db.executemany("INSERT INTO leases VALUES (?,?)", [("dead-pid", f"{machine}:{gone.stdout.strip()}:t1"),
                                                          ("other-host", f"elsewhere/1:{os.getpid()}:t2")])
    found, leased = b.claim(["dead-pid", "other-host"], lease_s=60)
    assert leased == ["dead-pid"]  # its pid no longer exists here; another machine's lease holds until it expires
    b.close()
    assert _leases(path) == {"other-host": f"elsewhere/1:{os.getpid()}:t2"}


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


def _stored(db) -> int:
    try:
        return sqlite3.connect(db).execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def _start_and_wait_for(args, cwd, env, db, stored: int) -> subprocess.Popen:
    proc = subprocess.Popen(args, cwd=cwd, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while _stored(db) < stored and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def _check_complete(out, n: int) -> None:
    tpl = load_template("safer_instruct_reverse")
    records = read_jsonl(out)
    assert len(records) == n
    assert all(r["instruction"] == reply_for(tpl.render(output=r["response"])) for r in records)


def test_after_kill_9_a_rerun_takes_over_at_once_and_pays_only_for_the_unstored(faults, fresh_cache, tmp_path):
    n = 240
    faults.configure(latency_s=0.1)
    env = _project(tmp_path, lease_s=30)
    src = write_jsonl(tmp_path / "r.jsonl", [{"text": f"killed text {i}"} for i in range(n)])
    db = fresh_cache / "completions.sqlite"
    first = _start_and_wait_for(_induce(src, tmp_path / "o1.jsonl", faults.url, "--concurrency", "8"), tmp_path, env,
                                db, stored=40)
    first.send_signal(signal.SIGKILL)
    first.wait()
    kept = _stored(db)
    left = sqlite3.connect(db).execute("SELECT COUNT(*) FROM leases").fetchone()[0]
    assert 40 <= kept < n and left == n - kept  # the dead process's leases are still there

    time.sleep(0.3)  # what was on the wire at the kill reaches the server
    faults.reset(latency_s=0.01)
    started = time.monotonic()
    second = subprocess.run(_induce(src, tmp_path / "o2.jsonl", faults.url, "--concurrency", "8"), cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - started < 30  # its pid is gone on this machine: no wait for the 30 s expiry
    assert faults.stats()["api_received"] == n - kept  # only what was never stored is paid again
    _check_complete(tmp_path / "o2.jsonl", n)
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0  # released at exit


def test_a_stalled_owner_s_leases_expire_and_another_process_takes_them_over(faults, fresh_cache, tmp_path):
    """SIGSTOP: the owner is alive but renews nothing (as a process on another machine that was killed):
    only the expiry (llm.lease_s, short here) frees its keys."""
    n, lease_s = 240, 2
    faults.configure(latency_s=0.1)
    env = _project(tmp_path, lease_s=lease_s)
    src = write_jsonl(tmp_path / "r.jsonl", [{"text": f"stalled text {i}"} for i in range(n)])
    db = fresh_cache / "completions.sqlite"
    first = _start_and_wait_for(_induce(src, tmp_path / "o1.jsonl", faults.url, "--concurrency", "8"), tmp_path, env,
                                db, stored=40)
    try:
        first.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        kept = _stored(db)
        time.sleep(0.3)  # what was on the wire reaches the server (and is never stored)
        faults.reset(latency_s=0.01)
        second = subprocess.run(_induce(src, tmp_path / "o2.jsonl", faults.url, "--concurrency", "8"), cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        assert "in flight in another process" in second.stderr and "waited for another process" not in second.stderr
        assert time.monotonic() - stopped_at >= lease_s * 2 / 3  # it waited for the expiry (renewed every lease_s/3)
        assert _stored(db) == n and faults.stats()["api_received"] == n - kept
        _check_complete(tmp_path / "o2.jsonl", n)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
