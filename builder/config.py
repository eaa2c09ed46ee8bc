"""params.yaml: loaded once, checked against builder/schemas/params.schema.json, read by section.

Every stage reads its own section (``params.yaml: <stage>:``); command-line flags override it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from builder.errors import BadInput
from builder.records import schema

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
    validator = Draft202012Validator(schema("params"))
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{path}: {'.'.join(map(str, e.absolute_path)) or 'params'}: {e.message}" for e in errors]
        raise BadInput(f"{path} does not match builder/schemas/params.schema.json; fix these keys:\n" + "\n".join(lines))
    return params


def section(name: str, path: str = PARAMS_FILE) -> dict:
    return dict(load_params(path).get(name) or {})


def pick(flag, params: dict, key: str, default=None):
    """A command-line flag when given, else the params value, else the default."""
    if flag is not None:
        return flag
    return params.get(key, default)


# ------------------------------------------------------------------------------ typed stage configs


class StageConfig:
    """Base of every stage's config: a dataclass whose fields carry a default and a ``help`` text
    (``field(default=..., metadata={"help": "..."})``), like TRL's ``DPOConfig``. Defaults live only
    there; params.yaml and flags override them:

        config = JudgeConfig.from_params(section("judge"), mode=flag_mode)   # None = flag not given

    Unknown keys and values of the wrong type are bad input (exit 2) naming ``<section>.<key>``.
    ``section_name`` is the params.yaml section the stage reads. Two field metadata keys say where else
    a value comes from (tests/test_params_schema.py checks every field against the params schema):

    - ``"flag_only": True``: set per run by a flag (a file's kind, a manifest path), never in params.yaml;
    - ``"section": "validate"``: a key of another section the stage shares (``validate.against``):
      ``from_project`` reads it from there.
    """

    section_name: str = ""

    @classmethod
    def from_project(cls, path: str = PARAMS_FILE, **flags):
        """The stage's params.yaml section, plus the keys it shares with other sections, flags on top."""
        import dataclasses

        params = {}
        for f in dataclasses.fields(cls):
            other = f.metadata.get("section")
            if other and f.name in section(other, path):
                params[f.name] = section(other, path)[f.name]
        return cls.from_params({**params, **section(cls.section_name, path)}, **flags)

    @classmethod
    def from_params(cls, params: dict | None = None, **flags):
        import dataclasses

        names = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for source, where in ((params or {}, "params.yaml"), ({k: v for k, v in flags.items() if v is not None}, "flag")):
            for key, value in source.items():
                if key not in names or (where == "params.yaml" and names[key].metadata.get("flag_only")):
                    if where == "params.yaml" and key in cls.ignored_keys():
                        continue
                    accepted = ", ".join(sorted(n for n, f in names.items()
                                                if where == "flag" or not f.metadata.get("flag_only")))
                    raise BadInput(f"{where}: {cls.section_name}.{key}: unknown key; accepted: {accepted}")
                values[key] = value
        try:
            config = cls(**values)
        except (TypeError, ValueError) as e:
            raise BadInput(f"params.yaml or flags: {cls.section_name}: {e}") from None
        config.check_types()
        return config

    @classmethod
    def ignored_keys(cls) -> set[str]:
        """Keys of the params section that other parts read (e.g. the llm: keys an LLM stage passes to
        LLMSpec); not an error here."""
        return set()

    def check_types(self) -> None:
        import dataclasses
        import typing

        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            expected = _plain_types(hints.get(f.name))
            if expected and value is not None and not isinstance(value, expected):
                if float in expected and isinstance(value, int) and not isinstance(value, bool):
                    setattr(self, f.name, float(value))
                    continue
                names = "/".join(t.__name__ for t in expected)
                raise BadInput(f"{self.section_name}.{f.name}: expected {names}, got {value!r} "
                               f"({f.metadata.get('help', 'see params.yaml')})")

    @classmethod
    def describe(cls) -> dict[str, dict]:
        """name -> {default, help}: for the params schema check and the README."""
        import dataclasses

        out = {}
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            out[f.name] = {"default": default, "help": f.metadata.get("help", "")}
        return out


def _plain_types(hint) -> tuple:
    """The runtime types a hint allows (bool is not an int here), or () when it is not checkable."""
    import types
    import typing

    if hint is None:
        return ()
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in _plain_types(arg))
    if origin in (list, tuple):
        return (list, tuple)
    if origin is dict:
        return (dict,)
    if hint is type(None):
        return ()
    if hint in (str, int, float, bool, list, dict, tuple):
        return (hint,) if hint is not int else (int,)
    return ()
