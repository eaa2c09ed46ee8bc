"""Training throughput through the CLI: `builder train sft` on the sample general data, the packaged
model, LoRA on CPU. Prints training tokens/s (the trainer's own seconds per step, so model loading is
not counted) and the peak RSS of the training process.

    python benchmarks/bench_train.py [--steps 4] [--cutoff 256] [--micro-batch 4]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cutoff", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--data", default=str(REPO / "data" / "sample" / "general.json"))
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "params.yaml").write_text(
            f"train:\n  cutoff: {opts.cutoff}\n  micro_batch_size: {opts.micro_batch}\n  save_steps: 1000\n")
        out = Path(tmp) / "sft"
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "builder", "train", "sft", "--data", opts.data, "--out", str(out),
                                 "--max-steps", str(opts.steps)], cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode:
            sys.exit(result.stderr[-2000:])
        # The trainer's progress bar ends with its mean seconds per step (its log lines are not printed
        # when stderr is not a terminal).
        found = re.findall(r"<00:00, +([\d.]+)s/it\]", result.stderr)
        if not found:
            sys.exit("no seconds per step in the trainer's progress bar:\n" + result.stderr[-3000:])
        runtime = float(found[-1]) * opts.steps
        tokens = json.loads((Path(tmp) / "metrics" / "sft" / "metrics.json").read_text())["num_tokens"]
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"builder train sft: {opts.steps} steps x micro-batch {opts.micro_batch}, cutoff {opts.cutoff}, fp32 LoRA r 8 on CPU")
    print(f"training tokens   : {tokens:.0f} in {runtime:.1f} s of training ({wall:.1f} s wall with model loading)")
    print(f"tokens/s          : {tokens / runtime:.1f}")
    print(f"seconds per step  : {runtime / opts.steps:.1f}")
    print(f"peak RSS          : {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
