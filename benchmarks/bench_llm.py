"""LLM engine figures, each printed as a ratio measured in this run (not a test; `make bench`).

1. OpenAI-compatible backend vs a loopback server with 200 ms fixed latency: 640 prompts at
   concurrency 64. Ideal server-busy time = 640 / 64 x 0.2 s = 2 s; target <= 1.1 x ideal.
2. Rerun with a warm cache: requests that reach the server (target 0).
3. Seconds per 10 k cached records (run_requests answered entirely from the cache).
4. Local backend (transformers, SmolLM2-135M, greedy): batched vs one prompt at a time on 64 prompts:
   tokens/s ratio (target >= 4x) and identical outputs (target 64/64).

    python benchmarks/bench_llm.py [--skip-local] [--batch-size 32] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _busy(server) -> float:
    stats = server.stats()
    return stats["last_done"] - stats["first_arrival"]


def threaded_baseline(url: str, n: int, concurrency: int) -> None:
    """The plainest client: `concurrency` threads POSTing with urllib (what the server can take)."""
    import json
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> None:
        body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": f"baseline {i}"}],
                           "max_tokens": 16}).encode()
        req = urllib.request.Request(url + "/chat/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))


def cli_figures(server, tmp: Path, n: int, concurrency: int, latency: float) -> None:
    """[0] THROUGH THE CLI: `builder induce --backend openai` (process start, stage, cache, all of it):
    server-busy utilisation = ideal / busy (target >= 0.91), beside a threaded-urllib client in the same
    run, then a warm rerun (requests reaching the server: target 0)."""
    import json
    import subprocess

    ideal = n / concurrency * latency
    src = tmp / "responses.jsonl"
    src.write_text("".join(json.dumps({"text": f"benchmark response number {i}"}) + "\n" for i in range(n)))
    args = [sys.executable, "-m", "builder", "induce", "--in", str(src), "--out", str(tmp / "instructions.jsonl"),
            "--backend", "openai", "--base-url", server.url, "--model", "bench", "--max-new-tokens", "16",
            "--concurrency", str(concurrency)]
    env = {**os.environ, "BUILDER_CACHE": str(tmp / "cli-cache")}
    server.reset(latency_s=latency)
    threaded_baseline(server.url, n, concurrency)
    base = _busy(server)
    server.reset(latency_s=latency)
    started = time.monotonic()
    r = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    busy = _busy(server)
    print(f"[0] builder induce --backend openai (CLI), {n} prompts, concurrency {concurrency}, 200 ms latency: "
          f"utilisation {ideal / busy:.3f} (busy {busy:.2f} s, ideal {ideal:.1f} s) [target >= 0.91]; "
          f"threaded urllib baseline {ideal / base:.3f} (busy {base:.2f} s); CLI wall {wall:.2f} s")
    server.reset(latency_s=latency)
    started = time.monotonic()
    r = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    print(f"    warm rerun through the CLI: {server.stats()['api_received']} requests reached the server "
          f"[target 0]; wall {time.monotonic() - started:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-local", action="store_true", help="skip the (minutes-long) local backend figure")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=64)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    os.environ.setdefault("BUILDER_CACHE", str(tmp / "builder-cache"))

    from builder.llm import GenParams, LLMSpec, Request, run_requests
    from tests.llm_fixtures import FaultServer

    server = FaultServer()
    try:
        n, concurrency, latency = 640, 64, 0.2
        ideal = n / concurrency * latency
        cli_figures(server, tmp, n, concurrency, latency)
        server.reset(latency_s=latency)
        spec = LLMSpec(backend="openai", model="bench", base_urls=[server.url], concurrency=concurrency, timeout_s=30)
        requests = [Request(f"k{i}", prompt=f"benchmark prompt number {i}", params=GenParams(max_new_tokens=16))
                    for i in range(n)]
        db = tmp / "bench.sqlite"
        started = time.monotonic()
        out = run_requests(spec, requests, cache=db)
        wall = time.monotonic() - started
        stats = server.stats()
        busy = stats["last_done"] - stats["first_arrival"]
        assert out.summary.done == n, out.summary
        print(f"[1] openai backend, {n} prompts, concurrency {concurrency}, 200 ms latency: server busy {busy:.2f} s "
              f"= {busy / ideal:.3f} x ideal ({ideal:.1f} s)  [target <= 1.1]; client wall {wall:.2f} s; "
              f"max in flight {stats['max_in_flight']}")

        server.reset(latency_s=latency)
        started = time.monotonic()
        again = run_requests(spec, requests, cache=db)
        warm = time.monotonic() - started
        reached = server.stats()["api_received"]
        print(f"[2] warm-cache rerun: {reached} of {n} requests reached the server = {reached / n:.3f} "
              f"[target 0]; {again.summary.cached} from cache in {warm:.3f} s")

        from builder.llm.base import Completion, cache_key
        from builder.llm.cache import Cache
        from builder.llm.openai import OpenAIBackend

        big = [Request(f"c{i}", prompt=f"cached prompt {i}", params=GenParams(max_new_tokens=16)) for i in range(10_000)]
        identity = OpenAIBackend(spec).identity()
        cache = Cache(tmp / "big.sqlite")
        for r in big:
            cache.put(cache_key(identity, r), "openai", Completion(r.key, "an answer " * 10, "stop", 5, 20, 0.0, "bench",
                                                                   False, None, "2026-01-01T00:00:00Z"))
        cache.close()
        server.reset()
        started = time.monotonic()
        hit = run_requests(spec, big, cache=tmp / "big.sqlite")
        per10k = time.monotonic() - started
        assert hit.summary.cached == 10_000 and server.stats()["api_received"] == 0
        print(f"[3] cached records: {per10k:.3f} s per 10 k (run_requests answered from the cache; "
              f"{10_000 / per10k:,.0f} records/s)")
    finally:
        server.stop()

    if args.skip_local:
        return
    from builder.llm.base import RunStats
    from builder.llm.hf import HFBackend

    prompts = [f"Write one short sentence about {topic}." for topic in (
        "the sea", "a cat", "winter", "bread", "a violin", "mountains", "a library", "rain", "coffee", "a bicycle",
        "the moon", "gardening", "a train", "chess", "honey", "a lighthouse")]
    prompts = [f"{p} Mention the number {i}." if i >= 16 else p for i, p in enumerate(prompts * 4)][: args.prompts]
    p = GenParams(max_new_tokens=args.max_new_tokens)
    items = [(f"k{i}", Request(f"k{i}", prompt=q, params=p)) for i, q in enumerate(prompts)]
    backend = HFBackend(LLMSpec(backend="hf", batch_size=args.batch_size))
    backend._load()
    backend.run(items[:2], lambda *_: None, RunStats())  # warm-up: first-call overheads are not the figure

    def timed(batch_size):
        backend.spec.batch_size = batch_size
        got = {}
        started = time.monotonic()
        backend.run(items, lambda ck, res: got.__setitem__(ck, res), RunStats())
        seconds = time.monotonic() - started
        tokens = sum(c.completion_tokens for c in got.values())
        return got, tokens / seconds, seconds

    batched, tps_batched, s_batched = timed(args.batch_size)
    single, tps_single, s_single = timed(1)
    same = sum(batched[k].text == single[k].text for k, _ in items)
    print(f"[4] local backend (SmolLM2-135M, greedy, {len(items)} prompts, {args.max_new_tokens} new tokens): batched "
          f"(batch {args.batch_size}) {tps_batched:.1f} tok/s in {s_batched:.1f} s vs one at a time {tps_single:.1f} "
          f"tok/s in {s_single:.1f} s = {tps_batched / tps_single:.2f}x  [target >= 4x]; identical outputs "
          f"{same}/{len(items)}  [target {len(items)}/{len(items)}]")


if __name__ == "__main__":
    main()
