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

from tests.conftest import REPO, copy_project, read_jsonl


def sh(*args, cwd):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture
def project(tmp_path) -> Path:
    """A fresh clone-like copy of the repository's pipeline files."""
    copy_project(tmp_path)
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


def test_a_new_leak_in_an_eval_file_reruns_mix_and_removes_the_leaking_example(project):
    sh("dvc", "repro", "mix", cwd=project)
    mixed = json.loads((project / "data/mix/mix.json").read_text(encoding="utf-8"))
    leaked = mixed[0]["instruction"]
    suite = project / "data/sample/eval_harmful.json"
    doc = json.loads(suite.read_text(encoding="utf-8"))
    doc["instructions"].append(leaked)
    suite.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    assert "mix" in sh("dvc", "status", "mix", cwd=project)
    sh("dvc", "repro", "mix", cwd=project)
    again = json.loads((project / "data/mix/mix.json").read_text(encoding="utf-8"))
    assert leaked in {r["instruction"] for r in mixed} and leaked not in {r["instruction"] for r in again}
