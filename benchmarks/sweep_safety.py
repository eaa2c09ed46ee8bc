"""The Safety-Tuned LLaMAs trend in miniature: general data + N safety examples, one LoRA per N, each
model answering a harmful suite (I-MaliciousInstructions) and a benign one (I-Alpaca); refusal should
rise with N on the harmful suite and stay low on the benign one (too high there = exaggerated safety).

Everything runs through the CLI a user runs, in a scratch folder: `builder mix` (data/sample/general.json
+ N of the seeds' safety_only_data_Instructions.json), `builder train sft`, `builder generate --adapter`,
`builder score --scorer refusal`, `builder report`. Needs ../shared/seed-data.

    python benchmarks/sweep_safety.py [--n 0 100 500 1000] [--steps 60] [--limit 50] [--out docs/sweep]

The figure (refusal.png), the table (summary.md) and metrics.json land in --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from cli_run import builder  # benchmarks/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
SEED = REPO.parent / "shared" / "seed-data" / "safety-tuned-llamas" / "data"
HARMFUL, BENIGN = "I-MaliciousInstructions", "I-Alpaca"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, nargs="+", default=[0, 100, 500, 1000])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per model (4 examples each)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--limit", type=int, default=50, help="prompts per eval suite")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "sweep")
    opts = parser.parse_args()
    if not SEED.is_dir():
        sys.exit(f"{SEED} is absent: the sweep draws its safety examples and eval suites from the seed data")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Short sequences and few steps keep the sweep on a CPU budget; a higher learning rate than the
        # seeds' 3e-4 makes up for the few steps (said in the README with the results).
        (tmp / "params.yaml").write_text(
            f"train:\n  cutoff: 128\n  micro_batch_size: 4\n  gradient_accumulation_steps: 1\n"
            f"  learning_rate: {opts.learning_rate}\n  warmup_steps: 5\n  save_steps: 100000\n  seed: 0\n")
        shutil.copy(REPO / "data" / "sample" / "general.json", tmp / "general.json")
        shutil.copy(SEED / "training" / "safety_only_data_Instructions.json", tmp / "safety.json")
        for suite in (HARMFUL, BENIGN):
            shutil.copy(SEED / "evaluation" / f"{suite}.json", tmp / f"{suite}.json")
        scores, timings = [], []
        for n in opts.n:
            name = f"n{n}"
            t_mix = builder("mix", "--general", "general.json", "--safety", "safety.json", "--n", n, "--seed", 0,
                            "--out", f"{name}.json", cwd=tmp)
            t_train = builder("train", "sft", "--data", f"{name}.json", "--out", name, "--max-steps", opts.steps, cwd=tmp)
            t_gen = builder("generate", "--eval", f"{HARMFUL}.json", "--eval", f"{BENIGN}.json", "--adapter", name,
                            "--num-beams", 1, "--max-new-tokens", opts.max_new_tokens, "--limit", opts.limit,
                            "--out", f"{name}.gen.jsonl", cwd=tmp)
            builder("score", "--in", f"{name}.gen.jsonl", "--out", f"{name}.scores.jsonl", "--scorer", "refusal", cwd=tmp)
            scores.append(f"{name}.scores.jsonl")
            timings.append(f"{name}: mix {t_mix:.0f} s, train {t_train:.0f} s, generate {t_gen:.0f} s")
            print(timings[-1], flush=True)
        builder("report", *[a for s in scores for a in ("--in", s)], "--out", "report", cwd=tmp)
        opts.out.mkdir(parents=True, exist_ok=True)
        for file in ("metrics.json", "refusal.png", "summary.md"):
            shutil.copy(tmp / "report" / file, opts.out / file)

    rows = json.loads((opts.out / "metrics.json").read_text())["rows"]
    rate = {(r["model"], r["suite"]): r for r in rows}
    print(f"\n{opts.steps} steps x 4 examples per model, cutoff 128, lr {opts.learning_rate}, greedy "
          f"{opts.max_new_tokens} tokens, first {opts.limit} prompts per suite")
    print(f"{'model':8s} {'refusal ' + HARMFUL:>36s} {'refusal ' + BENIGN:>28s}")
    for n in opts.n:
        cells = []
        for suite in (HARMFUL, BENIGN):
            r = rate.get((f"n{n}", suite))
            cells.append(f"{r['refusal_rate']:.2f} [{r['refusal_low']:.2f}, {r['refusal_high']:.2f}]" if r else "-")
        print(f"n{n:<7d} {cells[0]:>36s} {cells[1]:>28s}")
    print(f"\nfigure, table, metrics: {opts.out}/")


if __name__ == "__main__":
    main()
