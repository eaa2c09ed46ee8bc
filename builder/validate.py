"""Schema and semantic checks, de-duplication, contamination, quarantine and stats.

Speed comes from splitting the work: a per-record pre-check compiled from the kind's JSON Schema
answers "certainly valid" for almost every record, the real `jsonschema` validator runs only on the
rest (so messages are jsonschema's own and the schema stays the single source of truth), and every
check across records (empty text, lengths, duplicates, contamination) runs column-wise in polars.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from builder.errors import BadInput, Problem
from builder.records import kind_of, read_rows, schema, text_fields, to_record

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
    read: int = 0
    good: list[dict] = field(default_factory=list)
    bad: list[dict] = field(default_factory=list)  # quarantine entries: where, problems, record or raw
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


def check(source: str, kind: str, *, mapping: dict[str, str] | None = None, semantic: bool = True,
          limits: Limits = Limits(), against: list[str] = (), stamp_source: bool = False, rows=None) -> Result:
    """Read ``source`` as ``kind`` and sort every row into good or bad (good + bad = read).

    ``semantic`` adds the checks across records; ``stamp_source`` records file:line in meta.source
    (ingest does this; validate keeps the provenance records already carry). ``rows`` replaces reading
    ``source`` (e.g. ingest's wide files, one row per model output)."""
    kind = kind_of(kind)
    result = Result(source, kind)
    records, wheres = [], []
    row_problems: dict[int, list] = {}  # only the records that have problems
    columns: list[str] | None = None
    from builder.progress import progress

    for row in progress(read_rows(source) if rows is None else rows, f"reading {source}"):
        result.read += 1
        if row.data is None:
            _quarantine(result, row.where, row.problems, raw=row.raw)
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
        _semantic(kind, records, wheres, row_problems, limits, eval_prompts(against) if against else None)
    for index, rec in enumerate(records):
        problems = row_problems.get(index)
        if problems:
            _quarantine(result, wheres[index], problems, record=rec)
        else:
            result.good.append(rec)
    result.stats = _stats(result, kind, semantic)
    return result


def _quarantine(result: Result, where: str, problems: list[tuple[str, str, str]], *, record=None, raw=None) -> None:
    entry = {"where": f"{result.source}:{where}",
             "problems": [{"field": f, "message": m, "reason": c} for f, m, c in problems]}
    entry["record" if record is not None else "raw"] = record if record is not None else raw
    result.bad.append(entry)
    result.problems.extend(Problem(result.source, where, f, m, c) for f, m, c in problems)


def _semantic(kind, records, wheres, row_problems: dict[int, list], limits: Limits, evals) -> None:
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
    # One lazy pass; the near-duplicate key is kept as a 64-bit hash, not a string, to save memory.
    checks = frame.lazy().select(
        "i", "id",
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

    # Exact duplicates share an id (the id is the content hash); the first one seen is kept.
    dup = checks.filter(pl.col("id").is_duplicated())
    first_of_id: dict[str, int] = {}
    for i, rid in dup.select("i", "id").iter_rows():
        if rid in first_of_id:
            add(i, ("id", f"duplicate of {wheres[first_of_id[rid]]}", "duplicate"))
        else:
            first_of_id[rid] = i
    if limits.near_duplicates:
        distinct = checks.filter(pl.col("id").is_first_distinct())
        near = distinct.filter(pl.col("_key").is_duplicated())
        first_of_key: dict[int, int] = {}
        for i, key in near.select("i", "_key").iter_rows():
            if key in first_of_key:
                add(i, ("id", f"near-duplicate of {wheres[first_of_key[key]]} "
                              "(same text up to case, punctuation and spacing)", "near-duplicate"))
            else:
                first_of_key[key] = i
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


def _stats(result: Result, kind: str, semantic: bool) -> dict:
    import polars as pl

    reasons: dict[str, int] = {}
    for p in result.problems:
        reasons[p.code] = reasons.get(p.code, 0) + 1
    stats = {"kind": kind, "read": result.read, "good": len(result.good), "quarantined": len(result.bad),
             "problems_by_reason": dict(sorted(reasons.items()))}
    categories: dict[str, int] = {}
    for rec in result.good:
        cat = rec.get("category") or rec.get("suite") or "none"
        categories[cat] = categories.get(cat, 0) + 1
    stats["by_category"] = dict(sorted(categories.items()))
    lengths = {}
    for name in text_fields(kind):
        series = pl.Series([len(r.get(name) or "") for r in result.good], dtype=pl.Int64)
        if len(series):
            lengths[name] = {f"p{q}": int(series.quantile(q / 100, "nearest")) for q in (50, 90, 99)} | {"max": int(series.max())}
    stats["length_chars"] = lengths
    if semantic:
        stats["duplicates"] = {"exact": reasons.get("duplicate", 0), "near": reasons.get("near-duplicate", 0)}
        stats["contaminated"] = reasons.get("contaminated", 0)
    return stats

