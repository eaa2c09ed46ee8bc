"""`builder diff OLD NEW`: what changed between two versions of a dataset, record by record.

Records are matched by id (a hash of their content). A record whose id disappeared but whose source
(meta.source, else prompt) is still there with a new id is *changed*, and the diff names its fields.
Everything is done with polars joins so 1 M records against 1 M take seconds. OLD and NEW are paths or
REV:PATH; a revision is read through DVC (DVCFileSystem at that git revision), so no checkout."""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import BadInput

# Columns that identify or locate a record rather than hold its content.
NOT_CONTENT = {"id", "key", "split", "meta", "prompt_id"}
LENGTH_FIELDS = ("chosen", "rejected", "output", "text", "prompt", "instruction")
SCORE_FIELDS = ("score_chosen", "score_rejected")
REFUSAL_PATTERN = r"(?i)\b(i can't|i cannot|i can not|i won't|i'm sorry|i am sorry|i'd rather not)\b"
COUNTS = ("added", "removed", "changed", "unchanged", "moved", "leaks")


@dataclass
class Side:
    spec: str
    frame: object  # polars.DataFrame with id, key, split, stage, category and the content columns
    lock: dict = field(default_factory=dict)


def _rev_path(spec: str) -> tuple[str | None, str]:
    if ":" in spec and not Path(spec).exists():
        rev, path = spec.split(":", 1)
        return rev, path
    return None, spec


def load_side(spec: str, workdir: Path) -> Side:
    """Read a version: the working tree, or REV:PATH fetched through DVC's view of that revision."""
    import yaml
    rev, path = _rev_path(spec)
    if rev is None:
        lock_file = Path("dvc.lock")
        lock = yaml.safe_load(lock_file.read_text(encoding="utf-8")) if lock_file.exists() else {}
        if not Path(path).exists():
            raise BadInput(f"{path}: no such file or folder (for an earlier version write REV:PATH, e.g. HEAD~1:{path})")
        return Side(spec, frame_of(Path(path)), lock or {})
    from dvc.api import DVCFileSystem
    try:
        fs = DVCFileSystem(".", rev=rev)
        local = workdir / rev.replace("/", "_").replace("~", "_") / Path(path).name
        fs.get(path, str(local), recursive=True)
    except Exception as e:  # dvc raises many kinds: unknown rev, path not tracked, cache missing
        raise BadInput(f"{spec}: cannot read {path} at revision {rev} through DVC ({e}); "
                       "check the revision exists and `dvc pull` was run there") from None
    shown = subprocess.run(["git", "show", f"{rev}:dvc.lock"], capture_output=True, text=True)
    lock = yaml.safe_load(shown.stdout) if shown.returncode == 0 else {}
    return Side(spec, frame_of(local), lock or {})


def frame_of(path: Path):
    """All records of a builder output as one polars frame, with split, key (source identity), stage
    (the last stage in the provenance) and meta as JSON text."""
    import polars as pl

    from builder.publish.card import data_files
    if path.is_dir():
        parts = [pl.read_parquet([path / f for f in files]).with_columns(pl.lit(split).alias("split"))
                 for split, files in data_files(path)["default"].items()]
        frame = pl.concat(parts, how="diagonal_relaxed")
    elif path.suffix == ".parquet":
        frame = pl.read_parquet(path).with_columns(pl.lit("train").alias("split"))
    elif path.suffix == ".jsonl":
        frame = pl.read_ndjson(path, infer_schema_length=None).with_columns(pl.lit("train").alias("split"))
    else:
        from builder.records import read_rows
        frame = pl.DataFrame([r.data for r in read_rows(str(path)) if r.data is not None]).with_columns(pl.lit("train").alias("split"))
    if "id" not in frame.columns:
        raise BadInput(f"{path}: records have no `id` field; run them through `builder validate` first")
    if "meta" not in frame.columns:
        frame = frame.with_columns(pl.lit("{}").alias("meta"))
    elif frame.schema["meta"] != pl.String:
        frame = frame.with_columns(pl.col("meta").map_elements(lambda m: json.dumps(m, sort_keys=True), return_dtype=pl.String))
    if "category" not in frame.columns:
        frame = frame.with_columns(pl.lit("").alias("category"))
    # A regex instead of a JSON parse: meta is written with sorted keys, and this is 1 M rows.
    source = pl.col("meta").str.extract(r'"source":\s*"((?:[^"\\]|\\.)*)"', 1)
    identity = pl.col("prompt") if "prompt" in frame.columns else pl.col("id")
    return frame.with_columns(
        pl.coalesce(source, identity).alias("key"),
        pl.col("category").fill_null("").cast(pl.String),
    )


def _stages(meta: str) -> dict:
    try:
        return {k: v for k, v in json.loads(meta or "{}").items() if isinstance(v, dict)}
    except ValueError:
        return {}


def _changed_fields(old: dict, new: dict, content: list[str]) -> tuple[list[str], list[str]]:
    """The content fields that differ, and the stages whose provenance differs (the ones that decided)."""
    fields = [c for c in content if old.get(c) != new.get(c)]
    old_stages, new_stages = _stages(old.get("meta")), _stages(new.get("meta"))
    stages = sorted(s for s in set(old_stages) | set(new_stages) if old_stages.get(s) != new_stages.get(s))
    return fields, stages


def distribution(frame) -> dict:
    """Length, refusal and judge-score figures of one version (means; length also median)."""
    import polars as pl
    out: dict = {}
    for name in LENGTH_FIELDS:
        if name in frame.columns and frame.schema[name] == pl.String:
            lengths = frame[name].str.len_chars()
            out[f"{name}_chars_mean"] = round(float(lengths.mean() or 0), 2)
            out[f"{name}_chars_median"] = float(lengths.median() or 0)
    answer = next((c for c in ("chosen", "output") if c in frame.columns and frame.schema[c] == pl.String), None)
    if answer:
        out[f"{answer}_refusal_rate"] = round(float(frame[answer].str.contains(REFUSAL_PATTERN).mean() or 0), 4)
    for name in SCORE_FIELDS:
        if name in frame.columns and frame[name].dtype.is_numeric() and frame[name].null_count() < len(frame):
            out[f"{name}_mean"] = round(float(frame[name].mean()), 4)
    return out


def lock_changes(old: dict, new: dict) -> dict:
    """Params, models and template (builder/prompts) hashes that differ between two dvc.locks."""
    def flat(lock: dict) -> tuple[dict, dict]:
        params, templates = {}, {}
        for stage, entry in (lock.get("stages") or {}).items():
            for values in (entry.get("params") or {}).values():
                for key, value in _flatten(values).items():
                    params[key] = value
            for dep in entry.get("deps") or []:
                if "prompts/" in dep["path"]:
                    templates[dep["path"]] = dep.get("md5")
        return params, templates
    old_params, old_templates = flat(old)
    new_params, new_templates = flat(new)

    def changes(a: dict, b: dict) -> dict:
        return {k: {"old": a.get(k), "new": b.get(k)} for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    params = changes(old_params, new_params)
    return {"params": {k: v for k, v in params.items() if not k.endswith(".model")},
            "models": {k: v for k, v in params.items() if k.endswith(".model")},
            "templates": changes(old_templates, new_templates)}


def _flatten(values, prefix: str = "") -> dict:
    if not isinstance(values, dict):
        return {prefix: values}
    out = {}
    for key, value in values.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


def rejected_keys(paths: list[str]) -> dict[str, str]:
    """source key -> "stage: reason" from rejects files (each line: {id, stage, reason, record})."""
    from builder.records import read_rows
    found = {}
    for path in paths:
        for row in read_rows(str(path)):
            entry = row.data or {}
            record = entry.get("record") or {}
            meta = record.get("meta") or {}
            key = (meta.get("source") if isinstance(meta, dict) else None) or record.get("prompt") or entry.get("id")
            if key:
                found[str(key)] = f"{entry.get('stage')}: {entry.get('reason')}"
    return found


def compare(old: Side, new: Side, show: int = 5, rejects: list[str] = ()) -> dict:
    """The record-level report; ``rejects`` (the NEW version's rejects files) say which stage dropped
    each removed record and why."""
    import polars as pl
    a, b = old.frame, new.frame
    content = [c for c in a.columns if c in b.columns and c not in NOT_CONTENT]
    removed = a.join(b.select("id"), on="id", how="anti")
    added = b.join(a.select("id"), on="id", how="anti")
    # Same source, new content: changed. Keep the first match per key on each side.
    pairs = removed.unique("key", keep="first").join(added.unique("key", keep="first"), on="key", suffix="__new")
    changed = []
    for row in pairs.iter_rows(named=True):
        old_row = {c: row[c] for c in content + ["meta"]}
        new_row = {c: row.get(f"{c}__new", row.get(c)) for c in content + ["meta"]}
        fields, stages = _changed_fields(old_row, new_row, content)
        changed.append({"key": row["key"], "old_id": row["id"], "new_id": row["id__new"], "category": row["category"],
                        "fields": fields, "stages": stages,
                        "old": {f: old_row[f] for f in fields}, "new": {f: new_row[f] for f in fields}})
    removed = removed.filter(~pl.col("id").is_in(pairs["id"].implode()))
    added = added.filter(~pl.col("id").is_in(pairs["id__new"].implode()))
    ident = "prompt" if "prompt" in a.columns and "prompt" in b.columns else "key"
    moved_frame = (a.select(ident, pl.col("split").alias("old_split")).unique(ident)
                   .join(b.select(ident, pl.col("split").alias("new_split")).unique(ident), on=ident)
                   .filter(pl.col("old_split") != pl.col("new_split")))
    moved = moved_frame.to_dicts()
    leaks = [m for m in moved if {"train" in m["old_split"], "train" in m["new_split"]} == {True, False}]

    def by(frame, column: str) -> dict:
        if frame.is_empty():
            return {}
        return dict(sorted(frame.group_by(column).len().iter_rows()))

    why = rejected_keys(list(rejects))

    def by_stage(frame) -> dict:
        """A removed record counts under the stage that rejected it (from the rejects files), any other
        under the last stage in its provenance."""
        counts: dict[str, int] = {}
        for key, meta in zip(frame["key"].to_list(), frame["meta"].to_list()):
            stages = list(_stages(meta))
            name = why.get(str(key)) or (stages[-1] if stages else "none")
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items()))
    changed_stages: dict[str, int] = {}
    changed_fields: dict[str, int] = {}
    for entry in changed:
        for s in entry["stages"]:
            changed_stages[s] = changed_stages.get(s, 0) + 1
        for f in entry["fields"]:
            changed_fields[f] = changed_fields.get(f, 0) + 1
    return {
        "old": old.spec, "new": new.spec,
        "counts": {"old": a.height, "new": b.height, "added": added.height, "removed": removed.height,
                   "changed": len(changed), "unchanged": a.join(b.select("id"), on="id", how="semi").height,
                   "moved": len(moved), "leaks": len(leaks)},
        "by_category": {"added": by(added, "category"), "removed": by(removed, "category"),
                        "changed": dict(sorted(_count(e["category"] for e in changed).items()))},
        "by_stage": {"added": by_stage(added), "removed": by_stage(removed), "changed": dict(sorted(changed_stages.items()))},
        "changed_fields": dict(sorted(changed_fields.items())),
        "added_ids": added["id"].to_list(), "removed_ids": removed["id"].to_list(),
        "changed": changed, "moved": moved, "leaks": leaks,
        "distribution": {"old": distribution(a), "new": distribution(b)},
        "lock": lock_changes(old.lock, new.lock),
    }


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def parse_fail_on(text: str | None) -> dict[str, int]:
    """'added>100,removed>0' -> {"added": 100, "removed": 0}."""
    limits = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, limit = part.partition(">")
        if name not in COUNTS or not limit.strip().isdigit():
            raise BadInput(f"--fail-on {part!r}: write COUNT>N with COUNT one of {', '.join(COUNTS)} (e.g. removed>0)")
        limits[name] = int(limit)
    return limits


def exceeded(report: dict, limits: dict[str, int]) -> list[str]:
    return [f"{name} {report['counts'][name]} > {limit}" for name, limit in limits.items() if report["counts"][name] > limit]


def diff(old: str, new: str, rejects: list[str] = ()) -> dict:
    with tempfile.TemporaryDirectory(prefix="builder-diff-") as tmp:
        return compare(load_side(old, Path(tmp)), load_side(new, Path(tmp)), rejects=rejects)


def render(report: dict, show: int = 5) -> None:
    """The human summary on stdout; rich colours it only when stdout is a terminal."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    console = Console(highlight=False, soft_wrap=True)  # long lines stay whole in logs and pipes
    c = report["counts"]
    console.print(f"[bold]{report['old']}[/] ({c['old']}) -> [bold]{report['new']}[/] ({c['new']}): "
                  f"[green]+{c['added']} added[/], [red]-{c['removed']} removed[/], [yellow]~{c['changed']} changed[/], "
                  f"{c['unchanged']} unchanged, {c['moved']} moved between splits ({c['leaks']} train/test leaks)")
    for kind in ("added", "removed", "changed"):
        if report["by_category"][kind] or report["by_stage"][kind]:
            console.print(f"  {kind}: by category {report['by_category'][kind]}; by stage {report['by_stage'][kind]}")
    if report["changed_fields"]:
        console.print(f"  changed fields: {report['changed_fields']}")
    for kind, changes in report["lock"].items():
        for key, change in changes.items():
            console.print(f"  {kind[:-1]} {key}: {change['old']!r} -> {change['new']!r}")
    old_d, new_d = report["distribution"]["old"], report["distribution"]["new"]
    for key in sorted(set(old_d) | set(new_d)):
        if old_d.get(key) != new_d.get(key):
            console.print(f"  {key}: {old_d.get(key)} -> {new_d.get(key)}")
    for entry in report["moved"][:show]:  # the records that moved, named (all of them in --json)
        leak = " (leak)" if entry in report["leaks"] else ""
        console.print(f"  moved{leak}: {escape(str(entry.get('prompt') or entry.get('id'))[:100])!r} "
                      f"{entry['old_split']} -> {entry['new_split']}")
    if len(report["moved"]) > show:
        console.print(f"  ... {len(report['moved']) - show} more moved (--show N, or --json)")
    if report["changed"][:show]:
        table = Table(title=f"first {min(show, len(report['changed']))} changed records", show_lines=True)
        for column in ("source", "field", "old", "new"):
            table.add_column(column, overflow="fold")
        for entry in report["changed"][:show]:
            for f in entry["fields"]:
                table.add_row(str(entry["key"])[:40], f, str(entry["old"][f])[:200], str(entry["new"][f])[:200])
        console.print(table)
