"""Cold-start time of `builder --help` and of each command's --help (goal: <= 0.5 s).

Prints the median of several runs of the installed console script, and the heavy modules (if any)
that `builder --help` imports.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "datasets", "openai", "peft", "trl", "polars", "jsonschema", "dvc")


def timed(args: list[str], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    exe = shutil.which("builder") or sys.exit("builder is not on PATH: activate .venv first")
    baseline = timed([sys.executable, "-c", "pass"])
    print(f"python startup alone        : {baseline:.3f} s")
    help_time = timed([exe, "--help"])
    print(f"builder --help              : {help_time:.3f} s  (goal <= 0.5 s: {'met' if help_time <= 0.5 else 'NOT met'})")
    commands = subprocess.run([exe, "--help"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in commands.split("Commands:")[-1].splitlines() if line.startswith("  ") and line.split()]
    worst = max((timed([exe, name, "--help"], runs=3), name) for name in names)
    print(f"slowest command --help      : {worst[0]:.3f} s  (builder {worst[1]} --help; {len(names)} commands)")
    probe = ("import sys; sys.argv=['builder','--help']\nfrom builder.cli import app\ntry: app()\nexcept SystemExit: pass\n"
             f"print('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.rsplit("HEAVY:", 1)[-1].strip()
    print(f"heavy modules loaded by help: {loaded or 'none'}")


if __name__ == "__main__":
    main()
