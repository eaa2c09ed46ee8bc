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

from builder.errors import BadInput, Problem, RunFailed
from builder.records import cannot_read, guess_kind, jsonl_rows, kind_of, read_rows, readable_file, schema, text_fields, to_record
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

CHUNK = 20_000  # records held at once (a few in flight with workers): memory stays flat whatever the file size
PARALLEL_FROM_BYTES = 32 << 20  # under the CLI, a JSON Lines file this big is parsed by worker processes
MAX_WORKERS = 4  # past this the main process (cross-record checks, writing) is the bottleneck


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
                 keep: bool = False, stage: str = "validate", rows=None, workers: int | None = None) -> Iterator[Result]:
    """Yield one Result per chunk of rows (its good and bad records; the last one also carries the
    stats of the whole file). Across chunks only 64-bit hashes of ids and near-duplicate keys are
    kept, so memory does not grow with the file. ``keep`` accumulates everything in one Result.

    ``semantic`` adds the checks across records; ``stamp_source`` records file:line in meta.source
    (ingest does this; validate keeps the provenance records already carry). ``rows`` replaces reading
    ``source`` (e.g. ingest's wide files, one row per model output). ``workers`` > 1 parses a JSON
    Lines file in that many processes while this one checks across records and writes (None: one
    per core for files of PARALLEL_FROM_BYTES or more); the result is the same either way."""
    kind = kind_of(kind)
    total = Result(source, kind, stage)
    tally = _Tally(kind)
    seen = _SeenSoFar() if semantic else None
    evals = eval_prompts(against) if semantic and against else None
    shape_args = (kind, mapping, source if stamp_source else None)
    if workers is None:
        workers = _auto_workers(source) if rows is None else 1
    if workers > 1 and rows is None:
        shaped_chunks = _shaped_by_workers(source, shape_args, workers)
    else:
        from builder.console import progress

        shaped_chunks = _shaped_here(progress(read_rows(source) if rows is None else rows, f"reading {source}"), shape_args)
    mapping_checked = not mapping
    for shaped, last in _with_last(shaped_chunks):
        chunk = Result(source, kind, stage, read=shaped.read)
        for where, problems, raw in shaped.unreadable:
            _quarantine(chunk, where, problems, raw=raw)
        if not mapping_checked and shaped.columns is not None:  # on the file's first parsed row
            mapping_checked = True
            missing = [old for old in mapping if old not in shaped.columns]
            if missing:
                raise BadInput(f"{source}: --map names column(s) {', '.join(missing)} that the file does not "
                               f"have (columns: {', '.join(shaped.columns)})")
        records, wheres, row_problems = shaped.records, shaped.wheres, shaped.problems
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
        if last:
            (total if keep else chunk).stats = tally.stats(semantic)
        if not keep:
            yield chunk
    if keep:
        yield total


# ------------------------------------------------------------------ rows -> records (here or in workers)


@dataclass
class _Shaped:
    """A chunk of rows made into records of a kind, with their own (non cross-record) problems.
    Plain data, so that a worker process can make it and send it back."""

    read: int = 0
    records: list[dict] = field(default_factory=list)
    wheres: list[str] = field(default_factory=list)
    problems: dict[int, list] = field(default_factory=dict)  # index in records -> [(field, message, code)]
    unreadable: list[tuple] = field(default_factory=list)  # (where, problems, raw) of rows that did not parse
    columns: list[str] | None = None  # the first parsed row's columns (for --map and missing-field hints)


def _shape(rows, kind: str, mapping: dict | None, stamp: str | None, columns: list[str] | None = None) -> _Shaped:
    shaped = _Shaped(columns=columns)
    for row in rows:
        shaped.read += 1
        if row.data is None:
            shaped.unreadable.append((row.where, row.problems, row.raw))
            continue
        if shaped.columns is None:
            shaped.columns = list(row.data)
        rec, problems = to_record(kind, row.data, mapping=mapping, source=stamp, where=row.where)
        problems += schema_problems(kind, rec, columns=shaped.columns)
        if problems:
            shaped.problems[len(shaped.records)] = problems
        shaped.records.append(rec)
        shaped.wheres.append(row.where)
    return shaped


def _shaped_here(rows, shape_args) -> Iterator[_Shaped]:
    rows, columns = iter(rows), None
    while True:
        shaped = _shape(itertools.islice(rows, CHUNK), *shape_args, columns)
        columns = shaped.columns
        yield shaped
        if shaped.read < CHUNK:
            return


def _shape_block(lines: list[bytes], first_number: int, shape_args) -> _Shaped:
    """In a worker: one block of a JSON Lines file, parsed and shaped."""
    return _shape(jsonl_rows(lines, first_number), *shape_args)


def _auto_workers(source: str) -> int:
    import os

    import builder

    if not builder.RUNNING_AS_CLI:  # library callers ask for workers (see builder.RUNNING_AS_CLI)
        return 1
    try:
        big = source.lower().endswith((".jsonl", ".ndjson")) and os.path.getsize(source) >= PARALLEL_FROM_BYTES
    except OSError:
        return 1  # read_rows says what is wrong with it
    return min(os.cpu_count() or 1, MAX_WORKERS) if big else 1


def _shaped_by_workers(source: str, shape_args, workers: int) -> Iterator[_Shaped]:
    """Blocks of CHUNK lines parsed in ``workers`` processes, handed back in file order, with one block per worker
    and one more in flight (memory stays flat). Spawned, not forked: polars' threads do not
    survive a fork."""
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from builder.console import progress

    try:
        f = open(readable_file(source), "rb")
    except OSError as e:
        raise cannot_read(source, e) from None
    with f, ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        lines = progress(f, f"reading {source}", unit="line")
        pending, number, more = deque(), 1, True
        while more or pending:
            while more and len(pending) <= workers:
                block = list(itertools.islice(lines, CHUNK))
                more = len(block) == CHUNK
                pending.append(pool.submit(_shape_block, block, number, shape_args))
                number += len(block)
            try:
                yield pending.popleft().result()
            except BrokenProcessPool:
                raise RunFailed(f"{source}: a parser process died (out of memory?); nothing was written; "
                                "free memory and rerun") from None


def _with_last(items: Iterator) -> Iterator[tuple[object, bool]]:
    """(item, is it the last one), looking one item ahead."""
    items = iter(items)
    previous = next(items)
    for item in items:
        yield previous, False
        previous = item
    yield previous, True


def _quarantine(result: Result, where: str, problems: list[tuple[str, str, str]], *, record=None, raw=None) -> None:
    # One Reject per row (the shape of every rejects file): the first problem gives reason and field,
    # the detail lists them all.
    first_field, _, first_code = problems[0]
    detail = "; ".join(f"{f}: {m}" for f, m, _ in problems)
    result.bad.append(Reject(result.stage, first_code, detail, record=record, where=f"{result.source}:{where}",
                             field=first_field, raw=raw).as_dict())
    result.problems.extend(Problem(result.source, where, f, m, c) for f, m, c in problems)


class FirstSeen:
    """First occurrences of 64-bit hashes with the row they came from (12 bytes per distinct record),
    as sorted numpy runs: duplicate checks across chunks without keeping any record. New hashes go
    into the open run (adding copies at most RUN entries, never the whole history); a full run moves
    to a temporary file and is searched through the page cache, its pages dropped from this process
    after each search, so memory stays flat whatever the number of records."""

    RUN = 1 << 20

    def __init__(self):
        self.full: list[tuple] = []  # (hashes, rows) mapped from the spill file; a hash is in one run at most
        self.open = None  # (hashes, rows) in memory, sorted by hash
        self._spill = None  # the temporary file (deleted when closed, or when the process dies)
        self._maps: list = []

    @property
    def runs(self) -> list[tuple]:
        return self.full + ([self.open] if self.open is not None else [])

    def earlier_rows(self, hashes, rows):
        """For each hash (in order): the row where it was first seen before, else -1. Remembers the new ones."""
        import mmap

        import numpy as np

        earlier = np.full(len(hashes), -1, np.int64)
        for run_hashes, run_rows in self.runs:
            pos = np.minimum(np.searchsorted(run_hashes, hashes), len(run_hashes) - 1)
            hit = run_hashes[pos] == hashes
            earlier[hit] = run_rows[pos[hit]]
        for mapped in self._maps:
            mapped.madvise(mmap.MADV_DONTNEED)  # clean file pages: dropped, re-read on demand
        fresh = np.flatnonzero(earlier < 0)
        unique, first, inverse = np.unique(hashes[fresh], return_index=True, return_inverse=True)
        first_row = rows[fresh][first]
        repeat = first[inverse] != np.arange(len(fresh))  # repeats inside this batch
        earlier[fresh[repeat]] = first_row[inverse[repeat]]
        run_hashes, run_rows = self.open or (np.empty(0, np.uint64), np.empty(0, np.uint32))  # rows: up to 4 billion
        at = np.searchsorted(run_hashes, unique)
        self.open = (np.insert(run_hashes, at, unique), np.insert(run_rows, at, first_row.astype(np.uint32)))
        if len(self.open[0]) >= self.RUN:
            self._move_to_disk(*self.open)
            self.open = None
        return earlier

    def _move_to_disk(self, hashes, rows) -> None:
        import mmap
        import tempfile

        import numpy as np

        try:
            if self._spill is None:
                self._spill = tempfile.TemporaryFile(prefix="builder-seen-")
            offset = self._spill.seek(0, 2)
            self._spill.write(hashes.tobytes() + rows.tobytes() + bytes(-rows.nbytes % 8))  # the next run 8-aligned
            self._spill.flush()
        except OSError as e:
            raise RunFailed(f"cannot write the duplicate index to {tempfile.gettempdir()} ({e.strerror or e}); "
                            "free space there or point TMPDIR at a disk with room, then rerun") from None
        start = offset - offset % mmap.ALLOCATIONGRANULARITY  # mmap offsets must be page-aligned
        mapped = mmap.mmap(self._spill.fileno(), offset - start + hashes.nbytes + rows.nbytes,
                           access=mmap.ACCESS_READ, offset=start)
        self._maps.append(mapped)
        n = len(hashes)
        self.full.append((np.frombuffer(mapped, np.uint64, n, offset - start),
                          np.frombuffer(mapped, np.uint32, n, offset - start + hashes.nbytes)))

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
    if where.isdigit():  # a JSON Lines line number: the common case, without a regex
        return int(where)
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
