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

from tests.conftest import REPO, copy_code, read_jsonl


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
    copy_code(tmp_path)
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


def test_an_eval_file_change_reruns_the_stages_that_check_contamination(project):
    sh("dvc", "repro", "mix", cwd=project)
    general = json.loads((project / "data/sample/general.json").read_text())
    leaked = general[0]["instruction"]
    assert leaked in (project / "data/mix/mix.json").read_text()

    evals_path = project / "data/sample/eval_harmful.json"
    evals = json.loads(evals_path.read_text())
    evals["instructions"].append(leaked)  # a general item now leaks an eval prompt
    evals_path.write_text(json.dumps(evals, indent=2))
    status = sh("dvc", "status", cwd=project)
    assert "mix:" in status and "validate_pairs:" in status and "validate@general:" in status

    rerun = sh("dvc", "repro", "mix", cwd=project)
    assert "Running stage 'validate@general'" in rerun and "Running stage 'mix'" in rerun
    assert leaked not in (project / "data/mix/mix.json").read_text()
