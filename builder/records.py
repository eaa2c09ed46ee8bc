"""Record kinds, ids, and reading/writing every format the field uses.

The JSON Schemas in builder/schemas/ (package data; a top-level ``schemas`` link for users) are the single source of truth for each kind: its fields, which of them
make the id (``x-id-fields``) and which are free text (``x-text-fields``). Nothing here keeps a copy.

Reading happens in two steps so that one bad line never costs the good ones:
``read_rows`` turns a file into ``Row`` objects (a parsed dict, or the problem that stopped it), and
``to_record`` turns a parsed dict into a record of a kind (renames, seed quirks, id, meta).
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import errno
import functools
import glob
import hashlib
import json
import math
import os
import re
import sys
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson  # ~0.3 ms; `builder --help` does not import this module

from builder.errors import BadInput, Problem, RunFailed


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
BOM = b"\xef\xbb\xbf"  # Excel and Notepad start UTF-8 files with it
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by errors="surrogateescape"


class Unreadable(ValueError):
    """A value that cannot become a record: ``message`` says why and what to do."""


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen, repeated = set(), []
        for key, _ in pairs:
            if key in seen:
                repeated.append(key)
            seen.add(key)
        raise Unreadable(f"duplicate key(s) {', '.join(map(repr, repeated))}; keep one of each")
    return obj


def _no_constant(name: str):
    raise Unreadable(f"{name} is not a number JSON allows; write null or a finite number")


# Built once: json.loads with hooks would build a new decoder for every line.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)


def parse_json(text: str):
    """``json.loads`` that refuses what would sink or corrupt a run later: NaN/Infinity, duplicate keys,
    lone surrogate escapes (cannot be written as UTF-8), runaway nesting and huge integers."""
    try:
        obj = _DECODER.decode(text)
    except Unreadable:
        raise
    except json.JSONDecodeError as e:
        raise Unreadable(f"invalid JSON ({e.msg.removesuffix(' at')} at column {e.colno}); is it truncated?") from None
    except RecursionError:
        raise Unreadable("JSON nested too deeply to read; flatten it") from None
    except ValueError as e:  # Python's int limit: "Exceeds the limit (4300 digits) ..."
        raise Unreadable(f"unreadable JSON value ({str(e).split(';')[0]}); store huge numbers as strings") from None
    if "\\ud" in text or "\\uD" in text:  # cheap test first: only escapes can make a lone surrogate
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise Unreadable("a \\uD800-\\uDFFF escape without its pair (not valid text); fix or drop it") from None
    return obj


def kind_of(name: str) -> str:
    try:
        return KIND_NAMES[name.lower()]
    except KeyError:
        accepted = ", ".join(sorted(set(KIND_NAMES)))
        raise BadInput(f"unknown kind {name!r}; accepted: {accepted}") from None


@functools.cache
def schema(kind: str) -> dict:
    """The JSON Schema ``builder/schemas/KIND.schema.json``, read as package data (works from a wheel)."""
    from importlib.resources import files

    return json.loads((files("builder") / "schemas" / f"{kind}.schema.json").read_text(encoding="utf-8"))


@functools.cache
def id_fields(kind: str) -> tuple[str, ...]:
    return tuple(schema(kind)["x-id-fields"])


def text_fields(kind: str) -> list[str]:
    return schema(kind)["x-text-fields"]


def record_id(kind: str, rec: dict) -> str:
    """sha256 of the kind's content fields: the same content gets the same id in every format."""
    # Length-prefixed fields: unambiguous, and several times cheaper than canonical JSON at 1 M records.
    parts = []
    for name in id_fields(kind):
        value = rec.get(name)
        if type(value) is not str:
            value = "" if value is None else json.dumps(value, sort_keys=True)
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


def read_rows(source: str | Path) -> Iterator[Row]:
    """Rows of a file, chosen by extension, or of ``hf://ORG/NAME[:CONFIG]/SPLIT``."""
    source = str(source)
    if source.startswith("hf://"):
        yield from _read_hf(source)
        return
    path = readable_file(source)
    suffix = path.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".json": _read_json,
               ".csv": _read_csv, ".parquet": _read_parquet}
    if suffix not in readers:
        raise BadInput(f"{source}: unknown format {suffix!r}; use .json, .jsonl, .csv, .parquet or hf://ORG/NAME/SPLIT")
    try:
        yield from readers[suffix](path)
    except OSError as e:
        raise cannot_read(source, e) from None


def cannot_read(source: str, error: OSError) -> BadInput:
    return BadInput(f"{source}: cannot read it ({error.strerror or error}); check its permissions")


def readable_file(source: str) -> Path:
    """``source`` as a Path, or exit 2 saying why it cannot be read as a data file."""
    path = Path(source)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise BadInput(f"{source}: no such file") from None
    except OSError as e:
        raise BadInput(f"{source}: cannot read it ({e.strerror}); check the path and its permissions") from None
    if stat.S_ISDIR(mode):
        raise BadInput(f"{source}: is a folder; pass the data file(s) inside it")
    if not stat.S_ISREG(mode):  # a FIFO or device would block or never end
        raise BadInput(f"{source}: not a regular file (a pipe or device); save the data to a file first")
    return path


# A JSON string followed by spacing and a colon: a key written as `"k" :` (see _fast_object).
_SPACED_KEY = re.compile(rb'"[ \t\r\n]+:')


def _fast_object(line: bytes) -> dict | None:
    """The line's object through orjson (several times faster than ``json``) when that provably gives
    what ``parse_json`` gives, else None (the caller then takes the exact path, with its messages).

    orjson silently keeps the last of duplicate keys, so the keys are counted: with no escaped quote
    and no space before a colon, every key ends in the two bytes `":` and nothing else can start
    with a colon except a string value, so (number of `":`) >= (number of keys written), with
    equality to the parsed key count only when no key repeats. Floats are left to ``json``: orjson
    turns a huge integer into a float."""
    if b'\\"' in line or _SPACED_KEY.search(line):
        return None
    try:
        obj = orjson.loads(line)
    except ValueError:  # orjson.JSONDecodeError
        return None
    if type(obj) is not dict or _plain_key_count(obj) != line.count(b'":'):
        return None
    return obj


def _plain_key_count(value) -> int:
    """Keys in all objects of ``value``; -1 when it holds a float (left to ``json``)."""
    kind = type(value)
    if kind is dict:
        total = len(value)
        values = value.values()
    elif kind is list:
        total, values = 0, value
    else:
        return -1 if kind is float else 0
    for item in values:
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        inner = _plain_key_count(item)
        if inner < 0:
            return -1
        total += inner
    return total


def _read_jsonl(path: Path) -> Iterator[Row]:
    with open(path, "rb") as f:
        yield from jsonl_rows(f, 1)


def jsonl_rows(lines: Iterable[bytes], first_number: int) -> Iterator[Row]:
    """Rows of JSON Lines given as bytes, the first one being line ``first_number`` of its file (so a
    block of a file can be read on its own, e.g. in a worker process)."""
    for number, line in enumerate(lines, first_number):
        if number == 1:
            line = line.removeprefix(BOM)
        obj = _fast_object(line)
        if obj is not None:
            yield Row(str(number), obj)
            continue
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
            obj = parse_json(text)
        except Unreadable as e:
            yield Row(where, None, _printable_raw(text.rstrip("\n")), [("line", str(e), "unparseable")])
            continue
        if not isinstance(obj, dict):
            yield Row(where, None, text.rstrip("\n"),
                      [("line", f"expected a JSON object, got {type(obj).__name__}", "unparseable")])
            continue
        yield Row(where, obj)


def _read_json(path: Path) -> Iterator[Row]:
    blob = path.read_bytes().removeprefix(BOM)
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        line = blob[: e.start].count(b"\n") + 1
        yield Row(str(line), None, None, [("file", "undecodable bytes (not UTF-8); re-save the file as UTF-8", "undecodable")])
        return
    try:
        doc = _DECODER.decode(text)
        if "\\ud" in text.lower():
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as e:
        yield Row(str(e.lineno), None, None,
                  [("file", f"invalid JSON ({e.msg} at column {e.colno}); is the file truncated?", "unparseable")])
        return
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError: a lone surrogate
        # Something inside one record (NaN, a huge integer, runaway nesting): read record by record so
        # only that record is lost.
        yield from _json_records_one_by_one(text)
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


def _json_records_one_by_one(text: str) -> Iterator[Row]:
    """A JSON list whose whole-document parse failed, record by record with the raw decoder."""
    pos = len(text) - len(text.lstrip())
    if text[pos:pos + 1] != "[":
        yield Row("1", None, None, [("file", "expected a JSON list of records; a value inside cannot be "
                                     "read (NaN, a huge number or deep nesting)", "unparseable")])
        return
    pos, number = pos + 1, 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        number += 1
        where = f"record {number}"
        try:
            obj, end = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError) as e:
            end = _skip_json_value(text, pos)
            message = str(e) if isinstance(e, Unreadable) else "unreadable value (NaN, a huge number or deep nesting)"
            yield Row(where, None, _printable_raw(text[pos:end][:2000]), [("record", message, "unparseable")])
            if end is None:
                return
            pos = end
            continue
        if "\\ud" in text[pos:end].lower():
            try:
                obj = parse_json(text[pos:end])
            except Unreadable as e:
                yield Row(where, None, _printable_raw(text[pos:end][:2000]), [("record", str(e), "unparseable")])
                pos = end
                continue
        pos = end
        if isinstance(obj, dict):
            yield Row(where, obj)
        else:
            yield Row(where, None, json.dumps(obj, ensure_ascii=False),
                      [("record", f"expected a JSON object, got {type(obj).__name__}", "unparseable")])


def _skip_json_value(text: str, pos: int) -> int | None:
    """The end of the JSON value starting at ``pos`` by bracket counting (strings respected)."""
    depth, i, in_string = 0, pos, False
    while i < len(text):
        c = text[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth <= 0:
                return i + 1 if depth == 0 else i
        elif c == "," and depth == 0:
            return i
        i += 1
    return None


def _printable_raw(text: str) -> str:
    """Raw text kept in a quarantine file: lone surrogates would make it unwritable as UTF-8."""
    return text.encode("utf-8", "replace").decode("utf-8")


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
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise BadInput(f"{path}:1: duplicate column(s) {', '.join(map(repr, repeated))} in the header; "
                           "rename them so each column has one name")
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

    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"{path}: not a readable parquet file ({first}); re-export it, or save it as .jsonl") from None
    for number, obj in enumerate(frame.iter_rows(named=True), 1):
        not_finite = [name for name, value in obj.items() if type(value) is float and not math.isfinite(value)]
        if not_finite:  # JSON cannot carry NaN/Infinity: outputs would be unreadable elsewhere
            yield Row(f"row {number}", None, json.dumps(obj, ensure_ascii=False, default=str), [(name, f"{obj[name]} is not a finite number; "
                                                     "use null or a number", "not-finite") for name in not_finite])
            continue
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
    problems = []
    meta = data.pop("meta", None)
    if isinstance(meta, str) and meta.startswith("{"):
        try:
            meta = parse_json(meta)
        except Unreadable as e:
            problems.append(("meta", f"{e} (a meta cell starting with {{ must be a JSON object)", "unparseable"))
            data["meta_text"] = _printable_raw(meta)  # kept for the quarantine file
            meta = None
    meta = meta if isinstance(meta, dict) else {}
    if source is not None:
        meta.setdefault("source", source if where is None else f"{source}:{where}")
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


STALE_AFTER_S = 300  # a temp file this old, or whose writer is gone, is left over from a killed run

# Set inside atomic_outputs(): finished temp files wait there to be renamed together.
_pending: contextvars.ContextVar[list | None] = contextvars.ContextVar("pending_outputs", default=None)


def atomic_path(path: str | Path):
    """A context manager giving a temporary path beside ``path``, moved onto it only on success
    (inside ``atomic_outputs()``, only when every output of the block is written)."""
    return _AtomicPath(Path(path))


def output_mode() -> int:
    """What a plain ``open(..., "w")`` would give: 0666 less the user's umask (mkstemp makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class _AtomicPath:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        if self.path.is_dir():
            raise BadInput(f"{self.path}: is a folder; give a file name for the output, e.g. {self.path}/out.jsonl")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.path)
            # The writer's pid is in the name, so a later run can tell a live writer from a dead one.
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.{os.getpid()}.", suffix=".tmp", dir=self.path.parent)
        except OSError as e:
            raise _output_error(self.path, e) from None
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _output_error(self.path, exc) from None
            return
        try:
            os.chmod(self.tmp, output_mode())
        except OSError as e:
            self.tmp.unlink(missing_ok=True)
            raise _output_error(self.path, e) from None
        pending = _pending.get()
        if pending is not None:
            pending.append((self.tmp, self.path))
        else:
            os.replace(self.tmp, self.path)


def _output_error(path: Path, e: OSError) -> Exception:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return RunFailed(f"{path}: the disk is full; free some space (or write elsewhere) and rerun")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return BadInput(f"{path}: cannot write there ({e.strerror}); choose a writable place")
    if e.errno in (errno.ENOTDIR, errno.EISDIR):
        return BadInput(f"{path}: a folder is in the way or a parent is a file ({e.strerror}); check the path")
    return RunFailed(f"{path}: cannot write it ({e.strerror or e})")


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete builder's own ``.NAME.PID.XXXX.tmp`` files beside ``path`` left by killed runs: only
    those whose writer is dead or that are older than STALE_AFTER_S. Returns what was removed."""
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    now = time.time()
    for tmp in candidates:
        match = _TEMP_NAME.match(tmp.name)
        if not match or match["name"] != path.name:
            continue
        try:
            old = now - tmp.stat().st_mtime > STALE_AFTER_S
            if old or not _alive(int(match["pid"])):
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def distinct_outputs(**paths: str | Path | None) -> None:
    """Exit 2 when two outputs (e.g. --out and --rejects) name the same file: one would overwrite the other."""
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        key = Path(path).resolve()
        if key in seen:
            raise BadInput(f"--{seen[key]} and --{option} are both {path}; give each output its own file")
        seen[key] = option


@contextlib.contextmanager
def atomic_outputs(**paths: str | Path | None):
    """All outputs written in the block appear together: each ``atomic_path``/``write_records`` inside
    writes its temp file, and the renames happen only once the whole block succeeded (nothing is
    renamed if it fails). Keyword arguments name the outputs so clashing paths exit 2 up front."""
    distinct_outputs(**paths)
    pending: list[tuple[Path, Path]] = []
    token = _pending.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        _pending.reset(token)
    for tmp, final in pending:
        os.replace(tmp, final)


def write_records(path: str | Path, records: list[dict], kind: str | None = None) -> None:
    """Write atomically, format by extension. ``.json`` uses the seeds' layouts for sft (an Alpaca
    list) and eval (the instructions/inputs object); ``.csv`` the Safer-Instruct layout for preferences."""
    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix in (".jsonl", ".ndjson"):
            with open(tmp, "w", encoding="utf-8") as f:
                _write_lines(f, records)
        elif suffix == ".json":
            tmp.write_text(json.dumps(_json_layout(records, kind), ensure_ascii=False, allow_nan=False, indent=2) + "\n",
                            encoding="utf-8")
        elif suffix == ".parquet":
            import polars as pl

            _frame(records).write_parquet(tmp)
        elif suffix == ".csv":
            _write_csv(tmp, records, kind)
        else:
            raise BadInput(f"{path}: unknown output format {suffix!r}; use .jsonl, .json, .parquet or .csv")


_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def _write_lines(f, records: Iterable[dict]) -> None:
    """JSON Lines; NaN/Infinity refused (allow_nan=False): other tools could not read them back."""
    encode = _LINE_ENCODER.encode  # built once: json.dumps with options builds an encoder per call
    f.writelines(encode(rec) + "\n" for rec in records)


class _Collected(list):
    """A record writer for formats that need every record at once (.json, .parquet, .csv)."""


@contextlib.contextmanager
def record_writer(path: str | Path, kind: str | None = None):
    """A writer with ``.extend(records)``, for records that arrive in chunks: JSON Lines go straight to
    the temp file (constant memory); other formats are collected and written at the end. Either way the
    file appears only on success (and with the other outputs, inside ``atomic_outputs()``)."""
    path = Path(path)
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        collected = _Collected()
        yield collected
        write_records(path, collected, kind)
        return
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        yield _LineWriter(f)


@dataclass(slots=True)
class _LineWriter:
    f: object

    def extend(self, records: Iterable[dict]) -> None:
        _write_lines(self.f, records)


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
