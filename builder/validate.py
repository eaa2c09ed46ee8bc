"""Schema and semantic checks, de-duplication, contamination, quarantine and stats.

Speed comes from splitting the work: a per-record pre-check compiled from the kind's JSON Schema
answers "certainly valid" for almost every record, the real `jsonschema` validator runs only on the
rest (so messages are jsonschema's own and the schema stays the single source of truth), and every
check across records (empty text, lengths, duplicates, contamination) runs column-wise in polars.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache

from builder.errors import BadInput, Problem
from builder.records import guess_kind, kind_of, read_rows, schema, text_fields, to_record
from builder.stages.base import Reject

# Normalisation for near-duplicates and contamination: case, punctuation and spacing do not count.
NON_WORD = r"[^\p{L}\p{N}]+"


@dataclass(frozen=True)
class Limits:
    max_chars: int = 20000  # any text field longer than this is quarantined (validate.max_chars)
    near_duplicates: bool = True
    contamination_ngram: int = 8  # a shared run of this many words with an eval prompt is a leak


@dataclass
class Result:
    source: str
    kind: str
    stage: str = "validate"  # names the stage in quarantine entries
    read: int = 0
    good: list[dict] = field(default_factory=list)
    bad: list[dict] = field(default_factory=list)  # quarantine entries: Reject.as_dict() (where, reason, record or raw)
    problems: list[Problem] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- compiled pre-check

_PY_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
             "null": (type(None),), "object": (dict,), "array": (list,)}
_PRECHECKED = {"type", "pattern", "minLength", "maxLength", "enum"}
_ANNOTATIONS = {"description", "title", "$schema", "$id", "x-id-fields", "x-text-fields", "default", "examples"}


class _PreCheck:
    """Answers True only when a record certainly satisfies the schema; False means "ask jsonschema"."""

    def __init__(self, kind_schema: dict):
        self.required = tuple(kind_schema.get("required", ()))
        self.fields = []
        for name, sub in kind_schema.get("properties", {}).items():
            types = sub.get("type", list(_PY_TYPES))
            classes = frozenset(c for t in ([types] if isinstance(types, str) else types) for c in _PY_TYPES[t])
            pattern = re.compile(sub["pattern"]) if "pattern" in sub else None
            nested = bool(set(sub) - _PRECHECKED - _ANNOTATIONS)  # items/properties: leave to jsonschema
            self.fields.append((name, classes, pattern, sub.get("minLength"), sub.get("maxLength"),
                                sub.get("enum"), nested))
        self.top_level_ok = set(kind_schema) <= _ANNOTATIONS | {"type", "properties", "required", "additionalProperties"} \
            and kind_schema.get("additionalProperties", True) is True

    def __call__(self, rec: dict) -> bool:
        if not self.top_level_ok:
            return False
        for name in self.required:
            if name not in rec:
                return False
        for name, classes, pattern, min_len, max_len, enum, nested in self.fields:
            if name not in rec:
                continue
            value = rec[name]
            if type(value) not in classes:
                return False
            if nested and value:
                return False
            if enum is not None and value not in enum:
                return False
            if type(value) is str:
                if pattern is not None and not pattern.search(value):
                    return False
                if (min_len is not None and len(value) < min_len) or (max_len is not None and len(value) > max_len):
                    return False
        return True


@cache
def _checkers(kind: str):
    from jsonschema import Draft202012Validator

    kind_schema = schema(kind)
    return _PreCheck(kind_schema), Draft202012Validator(kind_schema)


def schema_problems(kind: str, rec: dict, *, columns: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(field, message, code) for every way ``rec`` breaks its kind's schema."""
    precheck, validator = _checkers(kind)
    if precheck(rec):
        return []
    problems = []
    for error in validator.iter_errors(rec):
        if error.validator == "required":
            name = error.message.split("'")[1]
            hint = f"missing; rename a column with --map {name}=COLUMN"
            if columns:
                hint += f" (columns: {', '.join(columns)})"
            problems.append((name, hint, "missing-field"))
        else:
            name = ".".join(str(p) for p in error.absolute_path) or "record"
            problems.append((name, error.message, "schema"))
    return problems


# ------------------------------------------------------------------------------------------- check

CHUNK = 50_000  # records held at once: memory stays flat whatever the file size


def check(source: str, kind: str, *, mapping: dict[str, str] | None = None, semantic: bool = True,
          limits: Limits = Limits(), against: list[str] = (), stamp_source: bool = False,
          stage: str = "validate", rows=None) -> Result:
    """Read ``source`` as ``kind`` and sort every row into good or bad (good + bad = read), all in
    memory. ``check_chunks`` is the same, a chunk at a time, for callers that stream."""
    result = None
    for result in check_chunks(source, kind, mapping=mapping, semantic=semantic, limits=limits,
                               against=against, stamp_source=stamp_source, keep=True, stage=stage, rows=rows):
        pass
    return result


def check_chunks(source: str, kind: str, *, mapping: dict[str, str] | None = None, semantic: bool = True,
                 limits: Limits = Limits(), against: list[str] = (), stamp_source: bool = False,
                 keep: bool = False, stage: str = "validate", rows=None) -> Iterator[Result]:
    """Yield one Result per chunk of rows (its good and bad records; the last one also carries the
    stats of the whole file). Across chunks only 64-bit hashes of ids and near-duplicate keys are
    kept, so memory does not grow with the file. ``keep`` accumulates everything in one Result.

    ``semantic`` adds the checks across records; ``stamp_source`` records file:line in meta.source
    (ingest does this; validate keeps the provenance records already carry). ``rows`` replaces reading
    ``source`` (e.g. ingest's wide files, one row per model output)."""
    kind = kind_of(kind)
    total = Result(source, kind, stage)
    tally = _Tally(kind)
    seen = _SeenSoFar() if semantic else None
    evals = eval_prompts(against) if semantic and against else None
    columns: list[str] | None = None
    from builder.console import progress

    rows = progress(read_rows(source) if rows is None else rows, f"reading {source}")
    while True:
        chunk = Result(source, kind, stage)
        records, wheres, row_problems = [], [], {}
        for row in itertools.islice(rows, CHUNK):
            chunk.read += 1
            if row.data is None:
                _quarantine(chunk, row.where, row.problems, raw=row.raw)
                continue
            if columns is None:
                columns = list(row.data)
                missing = [old for old in (mapping or {}) if old not in columns]
                if missing:
                    raise BadInput(f"{source}: --map names column(s) {', '.join(missing)} that the file does not "
                                   f"have (columns: {', '.join(columns)})")
            rec, problems = to_record(kind, row.data, mapping=mapping,
                                      source=source if stamp_source else None, where=row.where)
            problems += schema_problems(kind, rec, columns=columns)
            if problems:
                row_problems[len(records)] = problems
            records.append(rec)
            wheres.append(row.where)
        if semantic and records:
            _semantic(kind, records, wheres, row_problems, limits, evals, seen)
        for index, rec in enumerate(records):
            problems = row_problems.get(index)
            if problems:
                _quarantine(chunk, wheres[index], problems, record=rec)
            else:
                chunk.good.append(rec)
        tally.add(chunk)
        total.read += chunk.read
        if keep:
            total.good += chunk.good
            total.bad += chunk.bad
            total.problems += chunk.problems
        last = chunk.read < CHUNK
        if last:
            (total if keep else chunk).stats = tally.stats(semantic)
        if not keep:
            yield chunk
        if last:
            break
    if keep:
        yield total


def _quarantine(result: Result, where: str, problems: list[tuple[str, str, str]], *, record=None, raw=None) -> None:
    # One Reject per row (the shape of every rejects file): the first problem gives reason and field,
    # the detail lists them all.
    first_field, _, first_code = problems[0]
    detail = "; ".join(f"{f}: {m}" for f, m, _ in problems)
    result.bad.append(Reject(result.stage, first_code, detail, record=record, where=f"{result.source}:{where}",
                             field=first_field, raw=raw).as_dict())
    result.problems.extend(Problem(result.source, where, f, m, c) for f, m, c in problems)


class FirstSeen:
    """First occurrences of 64-bit hashes with the row they came from (16 bytes per distinct record),
    as sorted numpy arrays: duplicate checks across chunks without keeping any record."""

    def __init__(self):
        import numpy as np

        self.hashes = np.empty(0, np.uint64)
        self.rows = np.empty(0, np.int64)

    def earlier_rows(self, hashes, rows):
        """For each hash (in order): the row where it was first seen before, else -1. Remembers the new ones."""
        import numpy as np

        earlier = np.full(len(hashes), -1, np.int64)
        if len(self.hashes):
            pos = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
            hit = self.hashes[pos] == hashes
            earlier[hit] = self.rows[pos[hit]]
        fresh = np.flatnonzero(earlier < 0)
        unique, first, inverse = np.unique(hashes[fresh], return_index=True, return_inverse=True)
        first_row = rows[fresh][first]
        repeat = first[inverse] != np.arange(len(fresh))  # repeats inside this batch
        earlier[fresh[repeat]] = first_row[inverse[repeat]]
        merged = np.concatenate([self.hashes, unique])
        order = np.argsort(merged, kind="stable")
        self.hashes, self.rows = merged[order], np.concatenate([self.rows, first_row])[order]
        return earlier

    def count_repeats(self, ids: list[str]) -> int:
        """How many of these record ids were seen before (here or in an earlier call)."""
        import numpy as np

        hashes = np.array([int(i, 16) for i in ids], np.uint64)  # good records carry our 16-hex ids
        return int((self.earlier_rows(hashes, np.zeros(len(ids), np.int64)) >= 0).sum())


@dataclass
class _SeenSoFar:
    ids: FirstSeen = field(default_factory=FirstSeen)
    keys: FirstSeen = field(default_factory=FirstSeen)  # near-duplicate keys


def _where_number(where: str) -> int:
    digits = re.search(r"\d+", where)
    return int(digits.group()) if digits else 0


def _where_like(template: str, number: int) -> str:
    """A stored row number back in its reader's words ("4", "record 4", "instructions[4]")."""
    return re.sub(r"\d+", str(number), template, count=1)


def _semantic(kind, records, wheres, row_problems: dict[int, list], limits: Limits, evals, seen: _SeenSoFar) -> None:
    import numpy as np
    import polars as pl

    texts = text_fields(kind)
    valid = [i for i in range(len(records)) if i not in row_problems]  # cross-record checks see schema-valid rows
    if not valid:
        return
    frame = pl.DataFrame({
        "i": valid,
        "id": [records[i]["id"] for i in valid],
        **{name: [records[i].get(name) or "" for i in valid] for name in texts},
    }, schema={"i": pl.Int64, "id": pl.String, **{name: pl.String for name in texts}})
    norm = lambda col: pl.col(col).str.to_lowercase().str.replace_all(NON_WORD, " ").str.strip_chars()
    # One lazy pass; ids and near-duplicate keys become 64-bit integers, which is all that is kept.
    checks = frame.lazy().select(
        "i", pl.col("id").str.to_integer(base=16, dtype=pl.UInt64, strict=False).alias("_id"),
        pl.concat_str([norm(n) for n in texts], separator=" | ").hash().alias("_key"),
        *[pl.col(n).str.strip_chars().str.len_chars().eq(0).alias(f"_empty_{n}") for n in texts],
        *[pl.col(n).str.len_chars().alias(f"_len_{n}") for n in texts],
        *([(pl.col("chosen").str.strip_chars() == pl.col("rejected").str.strip_chars()).alias("_same")]
          if kind == "preference" else []),
    ).collect(engine="streaming")

    def add(i, problem):
        row_problems.setdefault(i, []).append(problem)

    for name in texts:
        for i in checks.filter(pl.col(f"_empty_{name}"))["i"].to_list():
            add(i, (name, "empty or whitespace only", "empty"))
        over = checks.filter(pl.col(f"_len_{name}") > limits.max_chars)
        for i, n in zip(over["i"].to_list(), over[f"_len_{name}"].to_list()):
            add(i, (name, f"{n} characters, over the limit of {limits.max_chars} "
                          "(validate.max_chars in params.yaml)", "too-long"))
    if kind == "preference":
        for i in checks.filter(pl.col("_same"))["i"].to_list():
            add(i, ("chosen", "same text as rejected: not a preference", "chosen-equals-rejected"))

    # Exact duplicates share an id (the id is the content hash); the first one seen is kept. Near
    # duplicates are looked for among the rest only.
    index = checks["i"].to_numpy()
    numbers = np.array([_where_number(wheres[i]) for i in index], np.int64)
    template = wheres[index[0]]
    earlier = seen.ids.earlier_rows(checks["_id"].fill_null(0).to_numpy(), numbers)
    for i, row in zip(index[earlier >= 0], earlier[earlier >= 0]):
        add(int(i), ("id", f"duplicate of {_where_like(template, int(row))}", "duplicate"))
    if limits.near_duplicates:
        distinct = earlier < 0
        near = seen.keys.earlier_rows(checks["_key"].to_numpy()[distinct], numbers[distinct])
        for i, row in zip(index[distinct][near >= 0], near[near >= 0]):
            add(int(i), ("id", f"near-duplicate of {_where_like(template, int(row))} "
                               "(same text up to case, punctuation and spacing)", "near-duplicate"))
    if evals is not None:
        contamination(frame, texts[0], evals, limits.contamination_ngram, row_problems)


def eval_prompts(paths: list[str]):
    """Normalised eval prompts with their origin, from files in any eval layout."""
    import polars as pl

    origins, prompts = [], []
    for path in paths:
        for row in read_rows(path):
            if row.data is None:
                continue
            rec, _ = to_record("eval", {"suite": path, **row.data} if "suite" not in row.data else row.data)
            origins.append(f"{path}:{row.where}")
            prompts.append(" ".join(filter(None, [rec.get("instruction"), rec.get("input")])))
    norm = pl.Series(prompts, dtype=pl.String).str.to_lowercase().str.replace_all(NON_WORD, " ").str.strip_chars()
    return list(zip(norm.to_list(), origins))


def contamination(frame, prompt_field: str, evals, ngram: int, row_problems) -> None:
    """A record leaks an eval prompt when it shares a run of ``ngram`` words with it (GPT-3-style
    n-gram overlap); an eval prompt shorter than that leaks only when a record's prompt equals it."""
    import polars as pl

    gram_origin: dict[str, str] = {}
    whole_origin: dict[str, str] = {}
    for text, origin in evals:
        words = text.split()
        if len(words) >= ngram:
            for k in range(len(words) - ngram + 1):
                gram_origin.setdefault(f" {' '.join(words[k:k + ngram])} ", origin)
        elif words:
            whole_origin.setdefault(text, origin)
    normalized = frame.select("i", pl.col(prompt_field).str.to_lowercase().str.replace_all(NON_WORD, " ")
                              .str.strip_chars().alias("_p"))
    hits: dict[int, str] = {}
    if whole_origin:
        for i, text in normalized.filter(pl.col("_p").is_in(list(whole_origin))).iter_rows():
            hits[i] = whole_origin[text]
    if gram_origin:
        patterns = list(gram_origin)
        padded = normalized.select("i", (pl.lit(" ") + pl.col("_p") + pl.lit(" ")).alias("_p"))
        matched = padded.filter(pl.col("_p").str.contains_any(patterns)).select(
            "i", pl.col("_p").str.extract_many(patterns).alias("_m"))
        for i, found in matched.iter_rows():
            hits.setdefault(i, gram_origin[found[0]] if found else "an eval prompt")
    for i, origin in hits.items():
        row_problems.setdefault(i, []).append((prompt_field, f"overlaps eval prompt {origin}", "contaminated"))


# ------------------------------------------------------------------------------------------- stats


class _Tally:
    """The stats of a whole file, added up chunk by chunk in constant memory (lengths as a histogram)."""

    def __init__(self, kind: str):
        self.kind, self.read, self.good, self.bad = kind, 0, 0, 0
        self.reasons: dict[str, int] = {}
        self.categories: dict[str, int] = {}
        self.lengths = {name: [] for name in text_fields(kind)}  # a count per length (numpy, once filled)

    def add(self, chunk: Result) -> None:
        import numpy as np

        self.read += chunk.read
        self.good += len(chunk.good)
        self.bad += len(chunk.bad)
        for p in chunk.problems:
            self.reasons[p.code] = self.reasons.get(p.code, 0) + 1
        for rec in chunk.good:
            cat = rec.get("category") or rec.get("suite") or "none"
            self.categories[cat] = self.categories.get(cat, 0) + 1
        for name, histogram in self.lengths.items():
            counts = np.bincount(np.fromiter((len(r.get(name) or "") for r in chunk.good), np.int64, len(chunk.good)))
            if len(counts) > len(histogram):
                histogram = self.lengths[name] = np.pad(histogram, (0, len(counts) - len(histogram)))
            histogram[:len(counts)] += counts

    def stats(self, semantic: bool) -> dict:
        stats = {"kind": self.kind, "read": self.read, "good": self.good, "quarantined": self.bad,
                 "problems_by_reason": dict(sorted(self.reasons.items())),
                 "by_category": dict(sorted(self.categories.items()))}
        stats["length_chars"] = {name: _quantiles(histogram) for name, histogram in self.lengths.items()
                                 if len(histogram) and histogram.sum()}
        if semantic:
            stats["duplicates"] = {"exact": self.reasons.get("duplicate", 0), "near": self.reasons.get("near-duplicate", 0)}
            stats["contaminated"] = self.reasons.get("contaminated", 0)
        return stats


def _quantiles(histogram) -> dict[str, int]:
    """p50/p90/p99 ("nearest" rank, as polars computes it) and max from a count per length."""
    import numpy as np

    cumulative = np.cumsum(histogram)
    n = int(cumulative[-1])
    at = lambda q: int(np.searchsorted(cumulative, round(q * (n - 1)) + 1))
    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": int(np.flatnonzero(histogram)[-1])}


def load_records(path: str, kind: str,
                 fix: str = "check --in (each stage reads the previous stage's output)") -> list[dict]:
    """Records for a stage to work on: every row must parse and carry its kind's fields, else exit 2
    naming each problem (stages read validated outputs; this is the guard, not the validator).
    ``fix`` tells a user who gave a file of another kind what to do, naming the option that gave it."""
    result = check(path, kind, semantic=False)
    if result.problems:
        try:
            found = guess_kind(path)
        except BadInput:
            found = kind
        if found != kind:
            raise BadInput(f"{path} holds {found} records, but this step needs {kind} records; {fix}")
        raise BadInput(f"{path}: {len(result.problems)} bad records; run `builder validate {path} --kind {kind}` "
                       "to see and quarantine them", result.problems)
    return result.good
