"""Generation figures (not a test): the hf backend batched vs the seeds' one-prompt-at-a-time loop on
the packaged model, Alpaca prompts from the sample eval suites, greedy and 4-beam. Prints tokens/s of
each, the ratio (target >= 4x) and how many outputs are identical (target: all).

    python benchmarks/bench_generate.py [--prompts 32] [--batch-size 16] [--max-new-tokens 32]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("BUILDER_CACHE", str(Path(tempfile.mkdtemp(prefix="bench-gen-")) / "builder-cache"))

    from builder.llm import GenParams, LLMSpec, Request, run_requests
    from builder.prompts import load_template
    from builder.stages.generate import load_suites

    template = load_template("alpaca")
    records = load_suites([REPO / "data/sample/eval_harmful.json", REPO / "data/sample/eval_benign.json"], None)
    prompts = [template.render(instruction=r["instruction"]) for r in records][:args.prompts]
    for beams in (1, 4):
        params = GenParams(max_new_tokens=args.max_new_tokens, num_beams=beams)
        requests = [Request(str(i), prompt=p, params=params) for i, p in enumerate(prompts)]
        runs = {}
        for size in (args.batch_size, 1):
            spec = LLMSpec(batch_size=size, use_chat_template=False)
            start = time.perf_counter()
            out = run_requests(spec, requests, use_cache=False, cache=str(Path(tempfile.mkdtemp()) / "c.sqlite"))
            seconds = time.perf_counter() - start
            tokens = sum(c.completion_tokens for c in out.completions.values())
            runs[size] = (out, tokens / seconds)
        batched, single = runs[args.batch_size], runs[1]
        same = sum(batched[0].completions[k].text == single[0].completions[k].text for k in batched[0].completions)
        print(f"{beams} beam(s), {len(prompts)} prompts: batched {batched[1]:.1f} tok/s, one at a time "
              f"{single[1]:.1f} tok/s: {batched[1] / single[1]:.1f}x (target >= 4x); identical {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
