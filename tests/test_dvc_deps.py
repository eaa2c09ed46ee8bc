"""dvc.yaml knows the code: every stage depends on the modules its command runs (the transitive builder
imports of its stage module) and on the eval files its contamination checks read (issue 8.6, 12.3)."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from tests.conftest import REPO

# The CLI is a thin layer over the stage modules; editing help texts must not rerun the pipeline.
NOT_DEPS = ("builder/cli/", "builder/__init__.py", "builder/__main__.py")
# The module each command runs (default: builder/stages/<command>.py).
COMMAND_MODULE = {"train": "builder/train/run.py", "report": "builder/report/__init__.py"}


def module_of(stage: dict) -> Path:
    command = stage["cmd"].split()[1]
    return REPO / COMMAND_MODULE.get(command, f"builder/stages/{command}.py")


def imports_of(path: Path) -> set[Path]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        for name in names:
            if name.startswith("builder"):
                base = REPO / Path(*name.split("."))
                for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                    if candidate.is_file():
                        found.add(candidate)
    return found


def closure(module: Path) -> set[str]:
    todo, seen = [module], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += imports_of(path)
    rel = {p.relative_to(REPO).as_posix() for p in seen}
    return {r for r in rel if not r.startswith(NOT_DEPS)}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def test_every_stage_depends_on_the_code_it_runs():
    missing = {}
    for name, stage in stages().items():
        body = stage.get("do", stage)
        module = module_of(body)
        deps = [d for d in body.get("deps", []) if isinstance(d, str)]
        lacking = sorted(p for p in closure(module) if not covered(p, deps))
        if lacking:
            missing[name] = lacking
    assert not missing, f"dvc.yaml stages lack code deps: {missing}"


def test_stages_that_check_contamination_depend_on_the_eval_files():
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    evals = params["validate"]["against"]
    for name, stage in stages().items():
        body = stage.get("do", stage)
        reads_against = any("validate.against" == p or p == "validate" for p in body.get("params", []) if isinstance(p, str))
        if reads_against:
            assert set(evals) <= set(body.get("deps", [])), f"{name} checks contamination but does not depend on {evals}"
