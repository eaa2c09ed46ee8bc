"""Scoring figures (not a test):

1. refusal scorer over 1 M generations (polars, xstest-v1 and gcg-v1): seconds (target <= 10 s);
2. reward-model scorer, batched (128, length-sorted) vs one text at a time: texts/s ratio (target >= 3x)
   and identical scores. Uses a small randomly initialised Llama classifier with the packaged tokenizer:
   speed only, the values mean nothing.

    python benchmarks/bench_score.py [--n 1000000] [--texts 256]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--texts", type=int, default=256)
    args = parser.parse_args()

    from builder.scoring.refusal import PRESETS, refused

    rng = random.Random(0)
    openings = ["I'm sorry, but I can't help with that.", "Sure! Here is how you do it:", "As an AI, I cannot",
                "The capital of France is Paris.", "No. That would be illegal and unethical."]
    outputs = [rng.choice(openings) + " filler words" * rng.randint(1, 30) for _ in range(args.n)]
    for name in ("xstest-v1", "gcg-v1"):
        start = time.perf_counter()
        flags = refused(outputs, PRESETS[name])
        print(f"refusal {name}: {args.n:,} generations in {time.perf_counter() - start:.2f} s "
              f"({sum(flags):,} refused; target <= 10 s)")

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from builder.llm.models import resolve
    from builder.scoring.reward_model import RewardModelScorer

    tok = AutoTokenizer.from_pretrained(resolve("smollm2-135m").path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, num_labels=1,
                         pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    folder = Path(tempfile.mkdtemp(prefix="bench-rm-"))
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    scorer = RewardModelScorer(str(folder))
    texts = [f"\n\nHuman: question {i}\n\nAssistant: " + "answer " * rng.randint(5, 120) for i in range(args.texts)]
    scorer.logits0(texts[:4])  # load and warm up
    start = time.perf_counter()
    batched = scorer.logits0(texts)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    single = [scorer.logits0([t], batch_size=1)[0] for t in texts]
    t_single = time.perf_counter() - start
    same = sum(abs(a - b) < 1e-3 for a, b in zip(batched, single))
    print(f"reward-model: batched {len(texts) / t_batched:.1f} texts/s, one at a time {len(texts) / t_single:.1f} "
          f"texts/s: {t_single / t_batched:.1f}x (target >= 3x); identical scores {same}/{len(texts)}")


if __name__ == "__main__":
    main()
