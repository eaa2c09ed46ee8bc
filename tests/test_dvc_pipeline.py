"""The whole pipeline under real DVC on data/sample: `dvc repro` ends in a valid preference dataset, a
no-op rerun runs nothing, and a judge parameter reruns judge onward only, answered from the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import copy_project


CHAIN = "validate_pairs"  # the Safer-Instruct chain (the SFT/DPO training stages are tested in test_train.py)


def sh(*args, cwd) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=1500)
    assert result.returncode == 0, f"{args}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def set_params(project: Path, change) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    change(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_builds_pairs_then_reruns_only_what_changed(tmp_path, builder_cache_session):
    project = copy_project(tmp_path / "project")

    def smaller(p):
        p["induce"]["limit"] = 8
        p["judge"]["keep"] = {}  # keep every judged pair: this test is about DVC, not the 135M judge's taste
        p["train"]["max_steps"] = 1  # induce depends on the reverse-tuned inducer: one step
    set_params(project, smaller)
    sh("git", "init", "-q", cwd=project)
    sh("dvc", "init", "-q", cwd=project)

    first = sh("dvc", "repro", CHAIN, cwd=project)
    assert {"induce", "filter", "respond", "judge", "pairs", "validate_pairs"} <= ran(first)
    pairs = json.loads((project / "metrics/pairs.json").read_text())
    assert pairs["out"] > 0 and pairs["splits"]["train_prefs"] > 0
    assert json.loads((project / "metrics/validate/pairs.json").read_text())["quarantined"] == 0
    assert list((project / "data/pairs/data").glob("train_prefs-*.parquet"))

    assert ran(sh("dvc", "repro", CHAIN, cwd=project)) == set()  # nothing changed: nothing runs, no LLM call

    set_params(project, lambda p: p["judge"].update(yes_threshold=0.4))
    third = ran(sh("dvc", "repro", CHAIN, cwd=project))
    assert third == {"judge", "pairs", "validate_pairs"}
    judge = json.loads((project / "metrics/judge.json").read_text())
    assert judge["llm"]["done"] == judge["llm"]["total"] > 0
    assert not {"seconds", "cached", "cost_usd"} & set(judge["llm"])  # no timings or cache hits: reproducible metrics

    # A fix in the judge's code reruns judge (and what follows when its output changes), nothing before it.
    with open(project / "builder/stages/judge.py", "a", encoding="utf-8") as f:
        f.write("\n# a fix\n")
    status = sh("dvc", "status", "--with-deps", CHAIN, cwd=project)  # the chain this test built
    changed = {line.split(":")[0].strip() for line in status.splitlines() if line and not line[0].isspace()}
    assert changed == {"judge"} and "builder/stages/judge.py" in status, status
    # DVC reruns judge; what follows reruns if judge's output changes (DVC compares hashes at each step).
    assert ran(sh("dvc", "repro", "--dry", CHAIN, cwd=project)) == {"judge"}
