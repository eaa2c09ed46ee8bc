"""`builder validate` on 1 M synthetic preference records against a naive per-record jsonschema loop.

Prints records/s of both, whether they flag exactly the same records, and peak memory.
Goal (issue #2): 1 M records validated and de-duplicated in <= 20 s and <= 2 GB on 2 cores.
Usage: python benchmarks/bench_validate.py [N]   (default 1,000,000)
"""

from __future__ import annotations

import json
import random
import re
import resource
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


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "prefs.jsonl"
        t = time.perf_counter()
        synthesize(src, n, random.Random(0))
        print(f"synthesized {n:,} records ({src.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s")

        quarantine = tmp / "bad.jsonl"
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "builder", "validate", str(src), "--kind", "preferences",
                               "--out", str(tmp / "good.parquet"), "--quarantine", str(quarantine)],
                              capture_output=True, text=True, cwd=tmp)
        ours = time.perf_counter() - t
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        assert proc.returncode == 2, proc.stderr[-2000:]
        ours_flagged = {int(json.loads(l)["where"].rsplit(":", 1)[1]) for l in quarantine.open(encoding="utf-8")}

        t = time.perf_counter()
        naive_flagged = naive(src)
        slow = time.perf_counter() - t

    print(f"builder validate : {ours:6.1f} s  {n / ours:>10,.0f} records/s  peak RSS {peak_mb:,.0f} MB  "
          f"(goal <= 20 s, <= 2048 MB: {'met' if ours <= 20 and peak_mb <= 2048 else 'NOT met'})")
    print(f"naive jsonschema : {slow:6.1f} s  {n / slow:>10,.0f} records/s")
    print(f"speed-up         : {slow / ours:.1f}x")
    same = ours_flagged == naive_flagged
    print(f"flagged records  : builder {len(ours_flagged):,}, naive {len(naive_flagged):,}, identical sets: {same}")
    if not same:
        print("  only builder:", sorted(ours_flagged - naive_flagged)[:10], " only naive:", sorted(naive_flagged - ours_flagged)[:10])
        sys.exit(1)


if __name__ == "__main__":
    main()
