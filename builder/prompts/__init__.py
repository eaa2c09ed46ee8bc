"""Versioned prompt templates: the seeds' exact templates as named presets, and user files.

A template declares its placeholders; they are checked against the text when it is loaded, and
against the fields a stage can fill (``Template.check_fields``) before any record is processed, so a
mismatch fails at load time, not on record 40 000.

Presets live beside this file as JSON (``builder/prompts/<name>.json``):
``{"name", "description", "source", "template", "template_with_input"?, "placeholders",
"optional_placeholders"?, "response_split"?}``. ``template_with_input`` is used when the optional
``input`` field is non-empty (the Alpaca ``prompt_input`` / ``prompt_no_input`` pair).
A user template is a path: a ``.json`` file in the same layout, or a ``.txt`` file whose ``{field}``
placeholders are read from the text (``{{`` and ``}}`` are literal braces).
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import BadInput

PRESET_DIR = Path(__file__).resolve().parent


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def placeholders_of(text: str) -> list[str]:
    """Field names in a str.format template, in order of first use."""
    names = []
    try:
        for _, name, spec, conversion in string.Formatter().parse(text):
            if name is None:
                continue
            if not name.isidentifier():
                raise BadInput(f"template placeholder {{{name}}} is not a plain field name; "
                               "write literal braces as {{ and }}")
            if name not in names:
                names.append(name)
    except ValueError as e:
        raise BadInput(f"template is not a valid format string ({e}); write literal braces as {{{{ and }}}}") from None
    return names


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    placeholders: tuple[str, ...]
    text_with_input: str | None = None
    optional: tuple[str, ...] = ()
    response_split: str | None = None
    description: str = ""
    source: str = ""
    hash: str = field(default="", compare=False)

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    @property
    def fields(self) -> tuple[str, ...]:
        return self.placeholders + self.optional

    def check_fields(self, available) -> None:
        """BadInput (exit 2) when a placeholder has no matching record field."""
        available = set(available)
        missing = [name for name in self.fields if name not in available]
        if missing:
            raise BadInput(f"template {self.name}: placeholder(s) {', '.join('{' + m + '}' for m in missing)} "
                           f"match no record field; available: {', '.join(sorted(available))}")

    def render(self, **fields) -> str:
        missing = [name for name in self.placeholders if name not in fields]
        if missing:
            raise BadInput(f"template {self.name}: no value for {', '.join(missing)}")
        if self.text_with_input is not None and str(fields.get("input") or "").strip():
            return self.text_with_input.format(**fields)
        return self.text.format(**fields)

    def as_meta(self) -> dict:
        return {"name": self.name, "hash": self.hash}


def _build(name: str, doc: dict, where: str) -> Template:
    text = doc.get("template")
    if not isinstance(text, str) or not text:
        raise BadInput(f"{where}: template: a non-empty string is required")
    with_input = doc.get("template_with_input")
    declared = doc.get("placeholders")
    optional = list(doc.get("optional_placeholders") or [])
    found = placeholders_of(text)
    if declared is None:
        declared = found
    if sorted(found) != sorted(declared):
        raise BadInput(f"{where}: placeholders declared {sorted(declared)} but the template uses {sorted(found)}")
    if with_input is not None:
        found_input = placeholders_of(with_input)
        if sorted(found_input) != sorted(set(declared) | set(optional)):
            raise BadInput(f"{where}: template_with_input uses {sorted(found_input)}; expected "
                           f"{sorted(set(declared) | set(optional))}")
    blob = json.dumps({"template": text, "template_with_input": with_input}, sort_keys=True, ensure_ascii=False)
    return Template(name=name, text=text, placeholders=tuple(declared), text_with_input=with_input,
                    optional=tuple(optional), response_split=doc.get("response_split"),
                    description=doc.get("description", ""), source=doc.get("source", ""),
                    hash=hashlib.sha256(blob.encode("utf-8")).hexdigest())


def load_template(name_or_path: str) -> Template:
    """A preset by name (``safer_instruct_reverse``, ``alpaca``, ``llama2``) or a .json/.txt file."""
    preset = PRESET_DIR / f"{name_or_path}.json"
    if "/" not in name_or_path and preset.is_file():
        return _build(name_or_path, json.loads(preset.read_text(encoding="utf-8")), str(preset))
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise BadInput(f"unknown template {name_or_path!r}; presets: {', '.join(presets())}, or a path to a "
                       ".json or .txt template file")
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise BadInput(f"{path}:{e.lineno}: template: invalid JSON ({e.msg})") from None
        if not isinstance(doc, dict):
            raise BadInput(f"{path}: template: expected a JSON object with a \"template\" field")
        return _build(doc.get("name") or path.stem, doc, str(path))
    return _build(path.stem, {"template": path.read_text(encoding="utf-8")}, str(path))
