"""Shared test helpers: the seed data (skipped cleanly when ../shared is absent) and a CLI runner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["tests.llm_fixtures"]  # LLM fixtures: transformers serve, fault server, session BUILDER_CACHE

REPO = Path(__file__).resolve().parents[1]
SEED = REPO.parent / "shared" / "seed-data"


@pytest.fixture
def seed() -> Path:
    if not SEED.is_dir():
        pytest.skip("../shared/seed-data is absent")
    return SEED


def builder(*args: str, cwd: Path | str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `builder` console entry point in a subprocess (real exit codes, real stderr)."""
    import os

    return subprocess.run([sys.executable, "-m", "builder", *map(str, args)], cwd=cwd or REPO,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)


def copy_code(project: Path) -> None:
    """The code the stages declare as dependencies in dvc.yaml, into a scratch copy of the pipeline."""
    import shutil

    shutil.copytree(REPO / "builder", project / "builder", ignore=shutil.ignore_patterns("__pycache__"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path
