"""Record kinds, ids, and reading/writing every format the field uses.

The JSON Schemas in schemas/ are the single source of truth for each kind: its fields, which of them
make the id (``x-id-fields``) and which are free text (``x-text-fields``). Nothing here keeps a copy.

Reading happens in two steps so that one bad line never costs the good ones:
``read_rows`` turns a file into ``Row`` objects (a parsed dict, or the problem that stopped it), and
``to_record`` turns a parsed dict into a record of a kind (renames, seed quirks, id, meta).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import BadInput, Problem, RunFailed

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

# What users type (the CLI contract uses plurals) -> the kind's schema name.
KIND_NAMES = {
    "response": "response", "responses": "response",
    "instruction": "instruction", "instructions": "instruction",
    "preference": "preference", "preferences": "preference",
    "sft": "sft",
    "eval": "eval", "evals": "eval",
    "generation": "generation", "generations": "generation",
    "score": "score", "scores": "score",
}

# Column names the seeds and common datasets use for a kind's field; applied only when the kind's own
# field is absent, so an explicit --map always wins.
ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "response": {"text": ("rejected", "response", "output", "content"), "category": ("label",)},
    "instruction": {"response": ("output", "rejected"), "category": ("label",)},
    "preference": {"prompt": ("instruction", "question"), "category": ("label",)},
    "sft": {"output": ("response",), "category": ("label",)},
    "eval": {"category": ("label",)},
    "generation": {},
    "score": {},
}

ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by errors="surrogateescape"


def kind_of(name: str) -> str:
    try:
        return KIND_NAMES[name.lower()]
    except KeyError:
        accepted = ", ".join(sorted(set(KIND_NAMES)))
        raise BadInput(f"unknown kind {name!r}; accepted: {accepted}") from None


@functools.cache
def schema(kind: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{kind}.schema.json").read_text(encoding="utf-8"))


def id_fields(kind: str) -> list[str]:
    return schema(kind)["x-id-fields"]


def text_fields(kind: str) -> list[str]:
    return schema(kind)["x-text-fields"]


def record_id(kind: str, rec: dict) -> str:
    """sha256 of the kind's content fields: the same content gets the same id in every format."""
    # Length-prefixed fields: unambiguous, and several times cheaper than canonical JSON at 1 M records.
    parts = []
    for name in id_fields(kind):
        value = rec.get(name)
        value = "" if value is None else value if type(value) is str else json.dumps(value, sort_keys=True)
        parts.append(f"{len(value)}:{value}")
    return hashlib.sha256("|".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


# --------------------------------------------------------------------------------------------- rows


@dataclass(slots=True)
class Row:
    """One record as read from a file, before it is given a kind."""

    where: str  # line number, "record N" or "row N"
    data: dict | None  # None when the row could not be parsed at all
    raw: str | None = None  # the text of an unparseable row, kept for the quarantine file
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (field, message, code)


def read_rows(source: str) -> Iterator[Row]:
    """Rows of a file, chosen by extension, or of ``hf://ORG/NAME[:CONFIG]/SPLIT``."""
    if source.startswith("hf://"):
        yield from _read_hf(source)
        return
    path = Path(source)
    if not path.is_file():
        raise BadInput(f"{source}: no such file")
    suffix = path.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".json": _read_json,
               ".csv": _read_csv, ".parquet": _read_parquet}
    if suffix not in readers:
        raise BadInput(f"{source}: unknown format {suffix!r}; use .json, .jsonl, .csv, .parquet or hf://ORG/NAME/SPLIT")
    yield from readers[suffix](path)


def _read_jsonl(path: Path) -> Iterator[Row]:
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = str(number)
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Row(where, None, line.decode("utf-8", "replace"),
                          [("line", f"undecodable bytes at column {e.start + 1} (not UTF-8); re-save the file as UTF-8", "undecodable")])
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                yield Row(where, None, text.rstrip("\n"),
                          [("line", f"invalid JSON ({e.msg} at column {e.colno}); is the line truncated?", "unparseable")])
                continue
            if not isinstance(obj, dict):
                yield Row(where, None, text.rstrip("\n"),
                          [("line", f"expected a JSON object, got {type(obj).__name__}", "unparseable")])
                continue
            yield Row(where, obj)


def _read_json(path: Path) -> Iterator[Row]:
    blob = path.read_bytes()
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        line = blob[: e.start].count(b"\n") + 1
        yield Row(str(line), None, None, [("file", "undecodable bytes (not UTF-8); re-save the file as UTF-8", "undecodable")])
        return
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        yield Row(str(e.lineno), None, None,
                  [("file", f"invalid JSON ({e.msg} at column {e.colno}); is the file truncated?", "unparseable")])
        return
    if isinstance(doc, dict) and isinstance(doc.get("instructions"), list):
        yield from _eval_layout_rows(doc, suite=path.stem)
        return
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        doc = doc["data"]
    if not isinstance(doc, list):
        yield Row("1", None, None, [("file", "expected a JSON list of records, {\"data\": [...]} or "
                                     "{\"instructions\": [...], \"inputs\": [...]}", "unparseable")])
        return
    for number, obj in enumerate(doc, 1):
        if isinstance(obj, dict):
            yield Row(f"record {number}", obj)
        else:
            yield Row(f"record {number}", None, json.dumps(obj, ensure_ascii=False),
                      [("record", f"expected a JSON object, got {type(obj).__name__}", "unparseable")])


def _eval_layout_rows(doc: dict, suite: str) -> Iterator[Row]:
    """The seeds' eval files: {"instructions": [...], "inputs": [...], "tags"?: [...]} (inputs usually empty)."""
    instructions, inputs, tags = doc["instructions"], doc.get("inputs") or [], doc.get("tags") or []
    for i, instruction in enumerate(instructions):
        data = {"instruction": instruction, "suite": suite}
        if len(inputs) == len(instructions):
            data["input"] = inputs[i]
        if len(tags) == len(instructions):
            data["tags"] = [tags[i]] if isinstance(tags[i], str) else tags[i]
        yield Row(f"instructions[{i}]", data)


def _read_csv(path: Path) -> Iterator[Row]:
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return
        start = reader.line_num + 1
        for values in reader:
            where, start = str(start), reader.line_num + 1
            if not values:
                continue
            raw = ",".join(values)
            if len(values) != len(header):
                yield Row(where, None, _SURROGATE.sub("\ufffd", raw),
                          [("line", f"{len(values)} fields where the header has {len(header)}; "
                                    "is a quote unbalanced or a comma unquoted?", "field-count")])
                continue
            undecodable = [name for name, value in zip(header, values) if _SURROGATE.search(value)]
            if undecodable:
                yield Row(where, None, _SURROGATE.sub("\ufffd", raw),
                          [(name, "undecodable bytes (not UTF-8); re-save the file as UTF-8", "undecodable")
                           for name in undecodable])
                continue
            yield Row(where, dict(zip(header, values)))


def _read_parquet(path: Path) -> Iterator[Row]:
    import polars as pl

    for number, obj in enumerate(pl.read_parquet(path).iter_rows(named=True), 1):
        yield Row(f"row {number}", obj)


def _read_hf(source: str) -> Iterator[Row]:
    """hf://ORG/NAME[:CONFIG]/SPLIT through `datasets`."""
    spec = source.removeprefix("hf://")
    name, _, split = spec.rpartition("/")
    if not name or "/" not in name:
        raise BadInput(f"{source}: expected hf://ORG/NAME[:CONFIG]/SPLIT, e.g. hf://tatsu-lab/alpaca/train")
    name, _, config = name.partition(":")
    import datasets

    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # offline, missing repo or split: one line, and what to do
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunFailed(f"{source}: cannot load from the Hugging Face Hub ({first}); check the name and "
                        "your connection, or download it and pass the local file") from None
    for number, obj in enumerate(ds, 1):
        yield Row(f"row {number}", dict(obj))


# ------------------------------------------------------------------------------------------ records


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """``--map NEW=OLD`` options -> {OLD: NEW}."""
    mapping = {}
    for pair in pairs:
        new, sep, old = pair.partition("=")
        if not sep or not new or not old:
            raise BadInput(f"--map {pair!r}: expected NEW=OLD, e.g. --map text=body")
        mapping[old] = new
    return mapping


def to_record(kind: str, data: dict, *, mapping: dict[str, str] | None = None,
              source: str | None = None, where: str | None = None) -> tuple[dict, list[tuple[str, str, str]]]:
    """A parsed dict -> a record of ``kind`` (fields in schema order, id first, meta last) and its
    id problems. Schema checks are validate's job; this only shapes the record. ``data`` is consumed."""
    for old, new in (mapping or {}).items():
        if old in data:
            data[new] = data.pop(old)
    for name, alternatives in ALIASES[kind].items():
        if name not in data:
            for alt in alternatives:
                if alt in data:
                    data[name] = data.pop(alt)
                    break
    meta = data.pop("meta", None)
    if isinstance(meta, str) and meta.startswith("{"):
        meta = json.loads(meta)
    meta = meta if isinstance(meta, dict) else {}
    if source is not None:
        meta.setdefault("source", source if where is None else f"{source}:{where}")
    problems = []
    computed = record_id(kind, data)
    given = data.pop("id", None)
    if given is not None and given != computed:
        if isinstance(given, str) and ID_PATTERN.match(given):
            problems.append(("id", f"does not match the content (expected {computed}); was the record "
                                   "edited after ingest? Re-ingest it to refresh the id", "id-mismatch"))
        else:
            meta.setdefault("source_id", given)  # a dataset's own id is kept, ours is the content hash
    record = {"id": given if problems else computed}
    for name in schema(kind)["properties"]:
        if name in data:
            record[name] = data.pop(name)
    record.update(data)
    record["meta"] = meta
    return record, problems


# ------------------------------------------------------------------------------------------ writing


def atomic_path(path: str | Path):
    """A context manager giving a temporary path beside ``path``, moved onto it only on success."""
    return _AtomicPath(Path(path))


class _AtomicPath:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_records(path: str | Path, records: list[dict], kind: str | None = None) -> None:
    """Write atomically, format by extension. ``.json`` uses the seeds' layouts for sft (an Alpaca
    list) and eval (the instructions/inputs object); ``.csv`` the Safer-Instruct layout for preferences."""
    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix in (".jsonl", ".ndjson"):
            with open(tmp, "w", encoding="utf-8") as f:
                for rec in records:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        elif suffix == ".json":
            tmp.write_text(json.dumps(_json_layout(records, kind), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        elif suffix == ".parquet":
            import polars as pl

            _frame(records).write_parquet(tmp)
        elif suffix == ".csv":
            _write_csv(tmp, records, kind)
        else:
            raise BadInput(f"{path}: unknown output format {suffix!r}; use .jsonl, .json, .parquet or .csv")


def _json_layout(records: list[dict], kind: str | None):
    if kind == "sft":
        return [{"instruction": r["instruction"], "input": r.get("input") or "", "output": r["output"]} for r in records]
    if kind == "eval" and len({r.get("suite") for r in records}) <= 1:
        doc = {"instructions": [r["instruction"] for r in records], "inputs": []}
        if records and all(r.get("tags") for r in records):
            doc["tags"] = [r["tags"][0] if len(r["tags"]) == 1 else r["tags"] for r in records]
        return doc
    return records


def _frame(records: list[dict]):
    """Records as a polars frame built column by column (no per-record copies: 1 M records fit in
    memory). Parquet has no free-form nested objects: meta (and other dicts) travel as JSON text."""
    import polars as pl

    columns = list(dict.fromkeys(k for rec in records for k in rec))
    data = {}
    for name in columns:
        values = [rec.get(name) for rec in records]
        if any(isinstance(v, dict) for v in values):
            values = [json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v for v in values]
        data[name] = values
    return pl.DataFrame(data, strict=False)


def _write_csv(tmp: Path, records: list[dict], kind: str | None) -> None:
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        if kind == "preference":  # the seeds' released layout
            writer = csv.writer(f)
            writer.writerow(["instruction", "rejected", "chosen", "label"])
            for r in records:
                writer.writerow([r["prompt"], r["rejected"], r["chosen"], r.get("category") or ""])
            return
        columns = list(dict.fromkeys(k for r in records for k in r))
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in records:
            writer.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
                             for k, v in r.items()})


# Checked in this order: the first kind whose required fields (or their aliases) a row has.
_GUESS_ORDER = ("score", "generation", "preference", "eval", "instruction", "sft", "response")


def guess_kind(source: str) -> str:
    """The kind of a file's records, from the fields of its first readable row."""
    for row in read_rows(source):
        if row.data is None:
            continue
        for kind in _GUESS_ORDER:
            required = [f for f in schema(kind)["required"] if f != "id"]
            if all(f in row.data or any(a in row.data for a in ALIASES[kind].get(f, ())) for f in required):
                return kind
        break
    raise BadInput(f"{source}: cannot tell the kind of its records; pass --kind "
                   "(responses|instructions|preferences|sft|eval|generation|score)")
