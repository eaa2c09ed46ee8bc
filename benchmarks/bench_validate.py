"""`builder validate` on 1 M synthetic preference records against a naive per-record jsonschema loop.

Prints wall time, records/s and peak RSS of both (each in its own process), and whether they flag
exactly the same records. Goals (issue 9 item 13): 1 M records in <= 20 s on 2 cores, and memory that
does not grow with the file (4 M peak RSS within 10 % of 1 M).
Usage: python benchmarks/bench_validate.py [N ...]   (default 1,000,000 and 4,000,000; the naive loop
runs only up to NAIVE_UP_TO records, default 1,000,000)
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jsonschema import Draft202012Validator

from builder.records import record_id, schema

WORDS = ("safety model data harmful answer refuse policy user request help write explain story people "
         "city river plan money health food law code test bridge music light garden winter").split()


def synthesize(path: Path, n: int, rng: random.Random) -> None:
    """Mostly good records, with about 0.1 % each of: truncated line, missing field, wrong type,
    empty text, chosen == rejected, exact duplicate, near duplicate (case and punctuation)."""
    def sentence(k):
        return " ".join(rng.choice(WORDS) for _ in range(k)) + f" {rng.getrandbits(40):x}"
    previous = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            rec = {"prompt": sentence(12), "chosen": sentence(25), "rejected": sentence(20),
                   "category": rng.choice(("hate", "illegal", "nsfw", "self-harm"))}
            roll = rng.random()
            if roll < 0.001:
                f.write(json.dumps(rec)[:40] + "\n")
                continue
            elif roll < 0.002:
                del rec["chosen"]
            elif roll < 0.003:
                rec["prompt"] = 7
            elif roll < 0.004:
                rec["chosen"] = "   "
            elif roll < 0.005:
                rec["rejected"] = rec["chosen"]
            elif roll < 0.006 and previous:
                rec = dict(rng.choice(previous))
            elif roll < 0.007 and previous:
                rec = dict(rng.choice(previous))
                rec["prompt"] = rec["prompt"].upper() + "!"
            elif len(previous) < 1000:
                previous.append(rec)
            f.write(json.dumps(rec) + "\n")


def naive(path: Path) -> set[int]:
    """The obvious loop: json.loads, jsonschema per record, then the same semantic checks in Python."""
    validator = Draft202012Validator(schema("preference"))
    flagged, seen_ids, seen_keys = set(), set(), set()
    norm = lambda s: re.sub(r"[\W_]+", " ", s.lower()).strip()
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                flagged.add(line_no)
                continue
            rec = {"id": record_id("preference", rec), **rec, "meta": {}}
            if any(True for _ in validator.iter_errors(rec)):
                flagged.add(line_no)
                continue
            texts = [rec["prompt"], rec["chosen"], rec["rejected"]]
            key = " | ".join(norm(t) for t in texts)
            bad = any(not t.strip() for t in texts) or rec["chosen"].strip() == rec["rejected"].strip()
            bad |= rec["id"] in seen_ids or (rec["id"] not in seen_ids and key in seen_keys)
            seen_ids.add(rec["id"])
            seen_keys.add(key)
            if bad:
                flagged.add(line_no)
    return flagged


def measured(cmd: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """Run ``cmd``: its wall and CPU time (s, the CPU time of the command and its worker processes) and
    the peak RSS (MB) of the whole process tree: the sum over the command and its workers, sampled
    every 20 ms, or the kernel's peak of the largest single process if that is higher."""
    import threading

    import psutil

    t = time.perf_counter()
    tree_peak = 0
    with open(cwd / "stderr.txt", "w+") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        done_event = threading.Event()

        def sample():
            nonlocal tree_peak
            root = psutil.Process(proc.pid)
            while not done_event.wait(0.02):
                try:
                    tree = [root, *root.children(recursive=True)]
                    tree_peak = max(tree_peak, sum(p.memory_info().rss for p in tree))
                except psutil.Error:  # a process ended between listing and reading it
                    pass

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done_event.set()
        sampler.join()
        err.seek(0)
        stderr = err.read()
    wall = time.perf_counter() - t
    done = subprocess.CompletedProcess(cmd, os.waitstatus_to_exitcode(status), "", stderr)
    return done, wall, usage.ru_utime + usage.ru_stime, max(tree_peak / 2**20, usage.ru_maxrss / 1024)


def run_size(n: int, tmp: Path, naive_up_to: int) -> dict:
    src = tmp / f"prefs-{n}.jsonl"
    t = time.perf_counter()
    synthesize(src, n, random.Random(0))
    print(f"synthesized {n:,} records ({src.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s", flush=True)
    quarantine = tmp / "bad.jsonl"
    proc, ours, cpu, peak = measured([sys.executable, "-m", "builder", "validate", str(src), "--kind", "preferences",
                                 "--out", str(tmp / "good.jsonl"), "--rejects", str(quarantine)], tmp)
    assert proc.returncode == 2, proc.stderr[-2000:]
    ours_flagged = {int(json.loads(l)["where"].rsplit(":", 1)[1]) for l in quarantine.open(encoding="utf-8")}
    print(f"{n:>9,} builder validate : {ours:6.1f} s wall, {cpu:6.1f} s CPU  {n / ours:>9,.0f} records/s  "
          f"peak RSS {peak:,.0f} MB (process tree)", flush=True)
    result = {"n": n, "seconds": ours, "peak_mb": peak, "same": True}
    if n > naive_up_to:
        src.unlink()
        return result
    naive_proc, slow, naive_cpu, naive_peak = measured([sys.executable, __file__, "--naive", str(src), str(tmp / "naive.json")], tmp)
    assert naive_proc.returncode == 0, naive_proc.stderr[-2000:]
    naive_flagged = set(json.loads((tmp / "naive.json").read_text()))
    print(f"{n:>9,} naive jsonschema : {slow:6.1f} s wall, {naive_cpu:6.1f} s CPU  {n / slow:>9,.0f} records/s  "
          f"peak RSS {naive_peak:,.0f} MB", flush=True)
    same = ours_flagged == naive_flagged
    print(f"{n:>9,} flagged records  : builder {len(ours_flagged):,}, naive {len(naive_flagged):,}, identical sets: {same}")
    if not same:
        print("  only builder:", sorted(ours_flagged - naive_flagged)[:10], " only naive:", sorted(naive_flagged - ours_flagged)[:10])
    src.unlink()
    return result | {"same": same}


def main() -> None:
    if sys.argv[1:2] == ["--naive"]:  # the naive loop in its own process, so its memory is measured alone
        Path(sys.argv[3]).write_text(json.dumps(sorted(naive(Path(sys.argv[2])))))
        return
    sizes = [int(a) for a in sys.argv[1:]] or [1_000_000, 4_000_000]
    naive_up_to = int(os.environ.get("NAIVE_UP_TO", 1_000_000))  # the naive loop is slow: skip it above this
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_size(n, Path(tmp), naive_up_to) for n in sizes]
    first, last = runs[0], runs[-1]
    per_million = first["seconds"] * 1e6 / first["n"]
    print(f"goal: 1 M in <= 20 s: {per_million:.1f} s (scaled from {first['n']:,}) ({'met' if per_million <= 20 else 'NOT met'}); "
          f"peak RSS flat ({last['n']:,} within 10 % of {first['n']:,}): {last['peak_mb']:,.0f} vs "
          f"{first['peak_mb']:,.0f} MB ({'met' if last['peak_mb'] <= 1.1 * first['peak_mb'] else 'NOT met'})")
    if not all(r["same"] for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
