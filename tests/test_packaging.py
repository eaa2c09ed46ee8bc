"""The wheel carries everything it needs (schemas, prompts): built, installed into a fresh venv, and run
from another folder so the installed copy, not this source tree, answers."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO


def test_wheel_installs_and_runs_ingest_and_validate(tmp_path, seed):
    source = seed / "safety-tuned-llamas" / "data" / "evaluation" / "I-Controversial.json"
    wheels, venv, work = tmp_path / "wheels", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    run = lambda *cmd, **kw: subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    built = run(sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", wheels, cwd=REPO)
    assert built.returncode == 0, built.stderr
    [wheel] = wheels.glob("builder-*.whl")
    assert run(sys.executable, "-m", "venv", "--system-site-packages", venv).returncode == 0
    python = venv / "bin" / "python"
    # --system-site-packages sees the base interpreter's packages, not the project venv's: a plain path
    # line makes those visible after the new venv's own (its .pth files, e.g. the editable builder
    # pointing at a source tree, are deliberately not run).
    own = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (own / "project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run(python, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", wheel)
    assert installed.returncode == 0, installed.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the source tree must not leak in
    where = run(python, "-c", "import builder; print(builder.__file__)", cwd=work, env=env)
    assert str(venv) in where.stdout, where.stdout + where.stderr
    cli = venv / "bin" / "builder"
    ingested = run(cli, "ingest", source, "--kind", "eval", "--out", "eval.jsonl", cwd=work, env=env)
    assert ingested.returncode == 0, ingested.stderr
    validated = run(cli, "validate", "eval.jsonl", "--kind", "eval", "--out", "good.jsonl", cwd=work, env=env)
    assert validated.returncode == 0, validated.stderr
    assert (work / "good.jsonl").read_text().count("\n") > 0
