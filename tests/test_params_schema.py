"""builder/schemas/params.schema.json and the stages' typed configs agree (issue 8 item 3): every Config
field is a key of its section with a compatible type and the schema's default; every schema key is a
Config field or a documented shared key; params.yaml sets the code's defaults except where it says why."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest
import yaml

from builder.config import StageConfig
from tests.conftest import REPO

SCHEMA = json.loads((REPO / "builder/schemas/params.schema.json").read_text(encoding="utf-8"))
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def configs() -> dict[str, type[StageConfig]]:
    from builder.report import ReportConfig
    from builder.stages import filter, generate, induce, ingest, judge, mix, pairs, respond, score, validate
    from builder.train.config import TrainConfig

    found = [ingest.Config, validate.Config, mix.Config, pairs.Config, induce.Config, filter.Config, respond.Config,
             judge.Config, generate.GenerateConfig, score.ScoreConfig, ReportConfig, TrainConfig]
    return {c.section_name: c for c in found}


# Schema keys that are not a field of the section's Config, and why.
NOT_FIELDS = {
    "ingest": {"source": "the stage's input (StageIO.inputs): dvc.yaml passes it as the SOURCE argument"},
}
# Config fields that params.yaml does not set: set per run by a flag (metadata flag_only), built from
# other sections (llm, gen: builder.llm.LLMSpec / GenParams), or the subcommand.
NOT_PARAMS = {"llm", "gen", "moderation_llm", "judge_llm"}

# params.yaml values that differ from the code's default on purpose: this project's files and the demo's
# small sizes (outside a project the defaults hold).
PROJECT_CHOICES = {
    "validate.against": "the sample eval suites", "mix.general": "the sample data", "mix.safety": "the sample data",
    "mix.n": "the sample's N", "mix.family": "the sample's N sweep", "pairs.exports": "the demo writes both exports",
    "generate.max_new_tokens": "demo", "generate.limit": "demo", "train.max_steps": "demo", "train.cutoff": "demo",
    "train.micro_batch_size": "demo",
    "score.moderation": "the endpoint's model and a rate limit written out for users (the code's {} resolves to the same model)",
    "score.judge": "the judge model written out for users (the code's {} resolves to llm:'s backend and model)",
}

JSON_TYPES = {str: {"string"}, int: {"integer"}, float: {"number", "integer"}, bool: {"boolean"}, list: {"array"},
              tuple: {"array"}, dict: {"object"}, type(None): {"null"}}


def python_types(hint) -> set[str] | None:
    """The JSON types a field's annotation accepts (None: anything)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, __import__("types").UnionType):
        found = [python_types(arg) for arg in typing.get_args(hint)]
        return None if any(f is None for f in found) else set().union(*found)
    if origin is not None:
        return JSON_TYPES.get(origin)
    return JSON_TYPES.get(hint)


def schema_types(prop: dict) -> set[str]:
    if "type" in prop:
        return {prop["type"]} if isinstance(prop["type"], str) else set(prop["type"])
    if "enum" in prop:
        names = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}
        return {names[type(v)] for v in prop["enum"]}
    return set()


def resolve(ref: str) -> dict:
    return SCHEMA["$defs"][ref.rsplit("/", 1)[-1]]


def section_schema(name: str) -> tuple[dict[str, dict], set[str]]:
    """The section's own keys (name -> property schema) and the keys it shares through $defs llm and
    generation (read by builder.llm, not by the stage's Config)."""
    section = SCHEMA["properties"][name]
    if "properties" not in section and isinstance(section.get("additionalProperties"), dict):
        section = section["additionalProperties"]  # a table: NAME -> entry (ingest)
    own, shared = dict(section.get("properties", {})), set()
    for part in section.get("allOf", []):
        ref = part["$ref"]
        if ref.endswith(("/llm", "/generation")):
            shared |= set(resolve(ref)["properties"])
        else:
            own.update(resolve(ref)["properties"])
    return own, shared


def own_fields(config: type[StageConfig]):
    """(field, section it is read from)."""
    for f in dataclasses.fields(config):
        if f.name in NOT_PARAMS or f.metadata.get("flag_only"):
            continue
        yield f, f.metadata.get("section", config.section_name)


def default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


@pytest.mark.parametrize("name", sorted(configs()))
def test_every_config_field_is_in_the_schema_with_its_type_and_default(name):
    config = configs()[name]
    hints = typing.get_type_hints(config)
    problems = []
    for f, where in own_fields(config):
        own, _ = section_schema(where)
        if f.name not in own:
            problems.append(f"{where}.{f.name}: a {config.__name__} field missing from the schema")
            continue
        accepted, allowed = python_types(hints[f.name]), schema_types(own[f.name])
        if accepted is not None and not allowed <= accepted:
            problems.append(f"{where}.{f.name}: schema allows {sorted(allowed)}, the field takes {sorted(accepted)}")
        if "default" in own[f.name] and own[f.name]["default"] != default_of(f):
            problems.append(f"{where}.{f.name}: schema default {own[f.name]['default']!r}, code {default_of(f)!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(configs()))
def test_every_schema_key_is_a_config_field_or_documented(name):
    config = configs()[name]
    own, shared = section_schema(name)
    fields = {f.name for f in dataclasses.fields(config)}
    # ignored_keys: what the Config leaves to others (the llm keys; train's per-mode sections)
    unknown = sorted(set(own) - fields - set(config.ignored_keys()) - set(NOT_FIELDS.get(name, {})))
    assert not unknown, f"params schema {name}: keys no {config.__name__} field reads: {unknown}"
    not_read = sorted(shared - set(config.ignored_keys()) - fields)
    assert not not_read, f"params schema {name}: shared llm/generation keys builder.llm does not read: {not_read}"


def test_shared_llm_and_generation_keys_are_what_builder_llm_reads():
    from builder.llm import GEN_KEYS, LLM_KEYS

    flag_only = {"dry_run"}  # --dry-run: a run, not a setting
    assert set(resolve("#/$defs/llm")["properties"]) == set(LLM_KEYS) - flag_only | {"base_urls"}
    assert set(resolve("#/$defs/generation")["properties"]) == set(GEN_KEYS)


def test_params_yaml_sets_the_code_defaults_or_says_why():
    problems = []
    for name, config in configs().items():
        if name == "ingest":
            continue  # a table of sources, no defaults
        fields = {f.name: f for f, where in own_fields(config) if where == name}
        for key, value in (PARAMS.get(name) or {}).items():
            if key in fields and f"{name}.{key}" not in PROJECT_CHOICES and value != default_of(fields[key]):
                problems.append(f"{name}.{key}: params.yaml {value!r}, code default {default_of(fields[key])!r}")
    assert not problems, "\n".join(problems)


def test_a_flag_only_field_is_not_accepted_from_params_yaml():
    from builder.errors import BadInput
    from builder.stages.validate import Config

    assert Config.from_params({}, kind="sft").kind == "sft"
    with pytest.raises(BadInput, match="validate.kind: unknown key"):
        Config.from_params({"kind": "sft"})


def test_shared_keys_come_from_their_own_section(tmp_path):
    from builder.stages.pairs import Config

    params = tmp_path / "params.yaml"
    params.write_text("validate:\n  max_chars: 99\n  against: [e.json]\npairs:\n  seed: 3\n", encoding="utf-8")
    config = Config.from_project(str(params), seed=4)
    assert (config.max_chars, config.against, config.seed, config.near_duplicates) == (99, ["e.json"], 4, True)
