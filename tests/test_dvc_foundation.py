"""The ingest and validate stages run under real DVC on data/sample, and rerun only when they must."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, read_jsonl


def sh(*args, cwd):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture
def project(tmp_path) -> Path:
    """A fresh clone-like copy of the repository's pipeline files."""
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "data" / "sample", tmp_path / "data" / "sample")
    sh("git", "init", "-q", cwd=tmp_path)
    sh("dvc", "init", "-q", cwd=tmp_path)
    return tmp_path


def test_ingest_and_validate_stages_run_and_are_idempotent(project):
    out = sh("dvc", "repro", "validate", cwd=project)
    assert "Running stage 'ingest@responses'" in out and "Running stage 'validate@responses'" in out
    responses = read_jsonl(project / "data/valid/responses.jsonl")
    assert len(responses) == 60 and {r["category"] for r in responses} == {"hate", "illegal", "nsfw", "self-harm"}
    assert len(read_jsonl(project / "data/valid/general.jsonl")) == 150
    evals = read_jsonl(project / "data/valid/eval_harmful.jsonl")
    assert len(evals) == 25 and {r["suite"] for r in evals} == {"eval_harmful"}
    metrics = json.loads((project / "metrics/validate/general.json").read_text())
    assert metrics["read"] == 150 and metrics["quarantined"] == 0
    assert json.loads((project / "metrics/validate/safety.json").read_text())["contaminated"] == 0

    again = sh("dvc", "repro", "validate", cwd=project)
    assert "Running stage" not in again

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["validate"]["max_chars"] = 100
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = sh("dvc", "repro", "validate", cwd=project)
    assert "Running stage 'validate@general'" in changed and "Running stage 'ingest@" not in changed
    assert json.loads((project / "metrics/validate/general.json").read_text())["problems_by_reason"].get("too-long", 0) > 0
