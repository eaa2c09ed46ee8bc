"""params.yaml: loaded once, checked against schemas/params.schema.json, read by section.

Every stage reads its own section (``params.yaml: <stage>:``); command-line flags override it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from builder.errors import BadInput
from builder.records import SCHEMA_DIR

PARAMS_FILE = "params.yaml"


@cache
def load_params(path: str = PARAMS_FILE) -> dict:
    """The checked params, or {} when there is no params file (builder used outside a project)."""
    file = Path(path)
    if not file.is_file():
        return {}
    import yaml
    from jsonschema import Draft202012Validator

    try:
        params = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"{mark.line + 1}" if mark else "1"
        raise BadInput(f"{path}:{line}: params: not valid YAML ({getattr(e, 'problem', e)})") from None
    validator = Draft202012Validator(json.loads((SCHEMA_DIR / "params.schema.json").read_text(encoding="utf-8")))
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{path}: {'.'.join(map(str, e.absolute_path)) or 'params'}: {e.message}" for e in errors]
        raise BadInput(f"{path} does not match schemas/params.schema.json; fix these keys:\n" + "\n".join(lines))
    return params


def section(name: str, path: str = PARAMS_FILE) -> dict:
    return dict(load_params(path).get(name) or {})


def pick(flag, params: dict, key: str, default=None):
    """A command-line flag when given, else the params value, else the default."""
    if flag is not None:
        return flag
    return params.get(key, default)
