"""The completion cache: content-addressed keys, SQLite WAL, stats and prune (API and CLI)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from builder.llm import GenParams, LLMSpec, Request, gen_params, run_requests
from builder.llm.base import Completion, cache_key
from builder.llm.cache import Cache
from tests.conftest import builder


def _c(text="x", model="m", cost=0.0):
    return Completion("", text, "stop", 3, 2, cost, model, False, None, "2026-01-01T00:00:00Z")


def test_cache_key_covers_backend_model_adapter_prompt_params():
    p = GenParams(max_new_tokens=8)
    r = Request("a", prompt="hi", params=p)
    base = {"backend": "hf", "model": "m", "adapter": None}
    k = cache_key(base, r)
    assert k == cache_key(base, Request("another record key", prompt="hi", params=p))  # content, not record key
    assert k != cache_key({**base, "backend": "openai"}, r)
    assert k != cache_key({**base, "model": "m2"}, r)
    assert k != cache_key({**base, "adapter": "lora@1"}, r)
    assert k != cache_key(base, Request("a", prompt="hi!", params=p))
    assert k != cache_key(base, Request("a", messages=(("user", "hi"),), params=p))
    assert k != cache_key(base, Request("a", prompt="hi", params=GenParams(max_new_tokens=9)))
    assert k != cache_key(base, Request("a", prompt="hi", params=GenParams(max_new_tokens=8, seed=1)))


def test_genparams_requires_max_new_tokens():
    with pytest.raises(TypeError):
        GenParams()  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        GenParams(max_new_tokens=0)
    from builder.errors import BadInput

    with pytest.raises(BadInput, match="max_new_tokens"):
        gen_params({"temperature": 0.5}, defaults={})


def test_spec_from_params_layers_defaults_section_flags():
    spec = LLMSpec.from_params({"model": "stage-model", "concurrency": 4, "template": "ignored"},
                               defaults={"backend": "openai", "model": "shared", "base_url": "http://a/v1", "concurrency": 2},
                               concurrency=None, base_url=["http://b/v1", "http://c/v1/"])
    assert spec.backend == "openai" and spec.model == "stage-model" and spec.concurrency == 4
    assert spec.base_urls == ["http://b/v1", "http://c/v1"]


def test_put_get_wal_and_persistence(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = Cache(path)
    cache.put("k1", "hf", _c("one"))
    cache.put("k1", "hf", _c("IGNORED"))  # first answer wins unless asked to replace
    cache.close()
    cache = Cache(path)
    got = cache.get_many(["k1", "k2"])
    assert list(got) == ["k1"] and got["k1"].text == "one" and got["k1"].cached is True
    assert got["k1"].created_at == "2026-01-01T00:00:00Z"
    cache.put("k1", "hf", _c("new"), replace_old=True)
    assert cache.get_many(["k1"])["k1"].text == "new"
    cache.close()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_stats_and_prune(tmp_path):
    cache = Cache(tmp_path / "c.sqlite")
    for i in range(5):
        cache.put(f"a{i}", "openai", _c(model="gpt-x", cost=0.01))
    for i in range(3):
        cache.put(f"b{i}", "hf", _c(model="smollm2-135m"))
    s = cache.stats()
    assert s["completions"] == 8 and s["cost_usd"] == pytest.approx(0.05)
    assert {(r["model"], r["completions"]) for r in s["by_model"]} == {("gpt-x", 5), ("smollm2-135m", 3)}
    assert cache.prune(model="gpt-x") == 5
    assert cache.prune(older_than_days=1) == 0  # all were stored just now
    assert cache.prune(older_than_days=-1) == 3
    with pytest.raises(ValueError):
        cache.prune()
    cache.close()


def test_cache_cli_stats_and_prune(fresh_cache):
    cache = Cache()
    for i in range(4):
        cache.put(f"k{i}", "openai", _c(model="gpt-x", cost=0.5))
    cache.close()
    r = builder("cache", "stats", "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["completions"] == 4 and stats["cost_usd"] == 2.0
    assert stats["path"].startswith(str(fresh_cache))
    r = builder("cache", "prune")
    assert r.returncode == 2 and "--older-than" in r.stderr
    r = builder("cache", "prune", "--all")  # without --yes: a listing, nothing removed
    assert r.returncode == 0 and "would remove 4" in r.stderr and "gpt-x: 4" in r.stdout
    assert Cache().stats()["completions"] == 4
    r = builder("cache", "prune", "--all", "--yes")
    assert r.returncode == 0 and "removed 4" in r.stderr
    assert Cache().stats()["completions"] == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 320 KB tmpfs: the leases of 600 prompts take about half of it, and the cache's WAL fills the rest
    after a few dozen commits (at 192 KB a run sometimes could not store even its first completion)
    (root only; skipped otherwise)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a size-limited tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_disk_full_stops_sending_keeps_every_completion_and_a_rerun_pays_only_for_the_unstored(faults, small_disk):
    import subprocess

    from builder.llm.runner import RunStopped
    from tests.llm_fixtures import reply_for

    n = 600
    faults.configure(latency_s=0.01)
    spec = LLMSpec(backend="openai", model="fake", base_urls=[faults.url], concurrency=8)
    requests = [Request(f"k{i}", prompt=f"disk full {i} " + "x" * 200, params=GenParams(max_new_tokens=8))
                for i in range(n)]
    db = small_disk / "c.sqlite"
    with pytest.raises(RunStopped, match="cannot store completions in .*full") as stop:
        run_requests(spec, requests, cache=db)
    outcome = stop.value.outcome
    paid = faults.stats()["ok"]
    assert paid < n  # it stopped sending
    assert len(outcome.completions) == paid  # every paid answer came back to the caller
    assert all(c.text == reply_for(r.prompt) for r in requests if (c := outcome.completions.get(r.key)))
    assert all("cannot store completions" in f.reason for f in outcome.failures.values())

    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)  # free space
    stored = sqlite3.connect(db).execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    assert 0 < stored <= paid
    faults.reset()
    again = run_requests(spec, requests, cache=db)
    assert again.summary.done == n and again.summary.cached == stored
    assert faults.stats()["ok"] == n - stored  # only what was never stored is paid again
    assert max(faults.stats()["ok_by_prompt"].values()) == 1
