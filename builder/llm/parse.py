"""A tolerant reader for JSON answers from servers that ignore ``response_format`` (or small models that
wrap JSON in prose or code fences)."""

from __future__ import annotations

import json
import re

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def extract_json(text: str):
    """The first JSON object (or array) in ``text``: plain, fenced, or embedded in prose; trailing commas
    and single-quoted keys are forgiven. Raises ValueError when there is none."""
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            pass
    for candidate in candidates:
        for i, ch in enumerate(candidate):
            if ch not in "{[":
                continue
            for attempt in (candidate[i:], _repair(candidate[i:])):
                try:
                    value, _ = decoder.raw_decode(attempt)
                    return value
                except ValueError:
                    continue
    raise ValueError("no JSON object found in the output")


def _repair(text: str) -> str:
    text = re.sub(r",\s*([}\]])", r"\1", text)  # trailing commas
    text = re.sub(r"(?<=[{,\s])'([^'\n]*)'\s*:", r'"\1":', text)  # 'key': -> "key":
    text = re.sub(r":\s*'([^'\n]*)'", r': "\1"', text)  # : 'value' -> : "value"
    return text


def parse_with_schema(text: str, schema: dict):
    """(value, None) when ``text`` holds JSON valid against ``schema``, else (None, reason)."""
    try:
        value = extract_json(text)
    except ValueError as e:
        return None, str(e)
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = ".".join(map(str, e.absolute_path)) or "output"
        return None, f"JSON does not match the schema: {where}: {e.message}"
    return value, None
