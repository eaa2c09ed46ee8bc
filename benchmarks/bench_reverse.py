"""Reversed instruction tuning works: on 100 held-out general examples, the instructions induced by the
reverse-tuned adapter are closer to the true instructions than the base model's (ROUGE-L F1, mean).

Everything runs through the CLI: `builder train reverse` on the other general examples, then
`builder induce` on the held-out outputs with and without `--adapter`. General data: the seed data's
Alpaca file when present, else data/sample/general.json (150 examples: 50 train, 100 held out).

    python benchmarks/bench_reverse.py [--steps 30] [--show 5]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

from cli_run import builder  # benchmarks/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
SEED_ALPACA = REPO.parent / "shared" / "seed-data" / "alpaca_data_cleaned.json"
HELD_OUT = 100


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 on lower-cased word tokens (longest common subsequence, as rouge-score computes it)."""
    a, b = candidate.lower().split(), reference.lower().split()
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--show", type=int, default=5)
    opts = parser.parse_args()
    source = SEED_ALPACA if SEED_ALPACA.is_file() else REPO / "data" / "sample" / "general.json"
    examples = [e for e in json.loads(source.read_text(encoding="utf-8")) if not (e.get("input") or "").strip()]
    random.Random(0).shuffle(examples)
    held_out, train = examples[:HELD_OUT], examples[HELD_OUT:]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "params.yaml").write_text("train:\n  cutoff: 128\n  micro_batch_size: 4\n  warmup_steps: 3\n  save_steps: 1000\n")
        (tmp / "train.json").write_text(json.dumps(train))
        (tmp / "responses.jsonl").write_text("".join(json.dumps({"text": e["output"]}) + "\n" for e in held_out))
        trained = builder("train", "reverse", "--data", "train.json", "--out", "reverse", "--max-steps", opts.steps, cwd=tmp)
        induced = {}
        for name, extra in (("base", ()), ("reverse-tuned", ("--adapter", "reverse"))):
            builder("induce", "--in", "responses.jsonl", "--out", f"{name}.jsonl", "--max-new-tokens",
                    opts.max_new_tokens, "--batch-size", 16, *extra, cwd=tmp)
            rows = [json.loads(line) for line in (tmp / f"{name}.jsonl").read_text().splitlines()]
            by_response = {r["response"]: r["instruction"] for r in rows}  # a rejected (empty) one scores 0
            induced[name] = [by_response.get(e["output"], "") for e in held_out]
    print(f"data: {source.name}, {len(train)} training examples, {len(held_out)} held out; "
          f"{opts.steps} steps x 4 examples, cutoff 128 ({trained:.0f} s)")
    truth = [e["instruction"] for e in held_out]
    for name, outputs in induced.items():
        scores = [rouge_l(o, t) for o, t in zip(outputs, truth)]
        print(f"ROUGE-L F1 {name:14s}: {sum(scores) / len(scores):.3f}  ({len(outputs)} instructions)")
    for i in range(min(opts.show, len(truth))):
        print(f"\ntrue:          {truth[i]}\nbase:          {induced['base'][i]}\nreverse-tuned: {induced['reverse-tuned'][i]}")


if __name__ == "__main__":
    main()
