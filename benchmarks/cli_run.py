"""Run one builder command the way a user does (`python -m builder ...`), for the benchmark scripts
that measure through the CLI. Imported by them; not a benchmark itself (`make bench` runs bench_*.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def builder(*args, cwd: Path) -> float:
    """Run one builder command in ``cwd``; exit with its stderr when it fails. Returns its wall seconds."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "builder", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"builder {' '.join(map(str, args))} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start
