"""`builder card`: a Hugging Face dataset card built from what builder already records: the records'
provenance (sources, models, template hashes), the per-stage metrics files and dvc.lock.

The YAML header is made by huggingface_hub's DatasetCardData (never by hand), so the Hub accepts it;
every number in the body is copied from metrics/*.json, never recomputed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from builder.errors import BadInput
from builder.records import atomic_path

# Licence of each known source, matched as a substring of meta.source. The seed files (Alpaca data,
# Safety-Tuned LLaMAs, Safer-Instruct) are research-only: CC BY-NC 4.0. data/sample ships CC0.
SOURCE_LICENSES = (
    ("data/sample", "cc0-1.0"),
    ("seed-data", "cc-by-nc-4.0"),
    ("alpaca", "cc-by-nc-4.0"),
    ("safety-tuned", "cc-by-nc-4.0"),
    ("safety_tuned", "cc-by-nc-4.0"),
    ("safer-instruct", "cc-by-nc-4.0"),
)
# When sources carry several licences the most restrictive one governs the whole dataset.
RESTRICTIVENESS = ("cc0-1.0", "cc-by-4.0", "cc-by-nc-4.0")
STAGES = ("ingest", "validate", "induce", "filter", "respond", "judge", "pairs", "mix")
CONTENT_WARNING = ("**Content warning:** this dataset contains deliberately harmful requests and responses "
                   "(insults and stereotypes, crime, sexual content, self-harm). It exists to train and "
                   "evaluate safer models; do not use the harmful side as a source of advice.")


def data_files(path: Path) -> dict[str, dict[str, list[str]]]:
    """{config: {split: [files relative to path]}} of a builder output: a folder of parquet splits
    (data/<split>-*.parquet, one folder per config) or a single record file (one train split)."""
    if path.is_file():
        return {"default": {"train": [path.name]}}
    configs: dict[str, dict[str, list[str]]] = {}
    for file in sorted(path.glob("*/*.parquet")):
        config = "default" if file.parent.name == "data" else file.parent.name
        split = file.name.split("-00000")[0]
        configs.setdefault(config, {}).setdefault(split, []).append(file.relative_to(path).as_posix())
    if not configs:
        raise BadInput(f"{path}: no parquet splits (data/<split>-*.parquet) and not a record file; "
                       "give a `builder pairs` output folder or a record file")
    return configs


def read_split_rows(path: Path) -> dict[str, list[dict]]:
    """The default config's records, by split (what publish pushes and diff compares)."""
    import polars as pl

    from builder.records import read_rows
    if path.is_file():
        return {"train": [row.data for row in read_rows(str(path))]}
    return {split: pl.read_parquet([path / f for f in files]).to_dicts()
            for split, files in data_files(path)["default"].items()}


def _meta(row: dict) -> dict:
    meta = row.get("meta") or {}
    return json.loads(meta) if isinstance(meta, str) else meta


def sources_of(rows: list[dict]) -> list[str]:
    """Each distinct meta.source (file of origin, without the line) over all records."""
    found = {str(_meta(r).get("source") or "").rsplit(":", 1)[0] for r in rows}
    return sorted(s for s in found if s)


def manifest_sources(path: Path) -> list[str]:
    """A mix names its inputs in <stem>.manifest.json; an input that is itself builder output (e.g.
    data/valid/general.jsonl) is followed one step to the meta.source of its records."""
    from builder.records import read_rows
    manifest = path.with_name(f"{path.stem}.manifest.json")
    if not path.is_file() or not manifest.exists():
        return []
    found = []
    for entry in (json.loads(manifest.read_text(encoding="utf-8")).get("sources") or {}).values():
        source = entry.get("path") if isinstance(entry, dict) else None
        if not source:
            continue
        known = any(key in source.lower() for key, _ in SOURCE_LICENSES)
        found += [source] if known or not Path(source).exists() else (
            sources_of([row.data for row in read_rows(source) if row.data]) or [source])
    return found


def license_for(sources: list[str], given: str | None) -> tuple[str, dict[str, str]]:
    if given:
        return given, {s: given for s in sources}
    by_source, unknown = {}, []
    for source in sources:
        match = next((lic for key, lic in SOURCE_LICENSES if key in source.lower()), None)
        by_source[source] = match
        if match is None:
            unknown.append(source)
    if unknown or not sources:
        raise BadInput(f"cannot tell the licence of source(s) {', '.join(unknown) or '(none recorded in meta.source)'}; "
                       "builder refuses to guess: give it with --license (e.g. --license cc-by-nc-4.0)")
    return max(by_source.values(), key=RESTRICTIVENESS.index), by_source


def pipeline_facts(rows: list[dict], lock_path: Path | None) -> dict:
    """Models and template hashes from the records' provenance; params and out hashes from dvc.lock."""
    models, templates = set(), set()
    for row in rows:
        for entry in _meta(row).values():
            if isinstance(entry, dict):
                if entry.get("model"):
                    models.add(str(entry["model"]))
                template = entry.get("template")
                if isinstance(template, dict) and template.get("hash"):  # {name, hash}: every stage's shape
                    templates.add(f"{template.get('name')}: {template['hash']}")
    lock = {}
    if lock_path is not None and lock_path.exists():
        import yaml
        lock = yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}
    return {"models": sorted(models), "templates": sorted(templates), "stages": lock.get("stages") or {}}


def git_revision(cwd: Path) -> str:
    done = subprocess.run(["git", "describe", "--tags", "--always", "--dirty"], cwd=cwd, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def load_metrics(metrics_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(metrics_dir.glob("*.json"))}


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def build_card(path: Path, *, license: str | None = None, metrics_dir: Path = Path("metrics"),
               lock_path: Path = Path("dvc.lock"), pretty_name: str | None = None, repo_id: str | None = None,
               reproducible: bool = False):
    """The card of the dataset at ``path``; ``repo_id`` (ORG/NAME) when it is being published there.
    ``reproducible`` (cards that stages write into their DVC outputs): nothing that changes without the
    data changing — no git revision, no dvc.lock entries (the lock is written after the stage) — so a
    rerun writes the same bytes and dvc.lock stays as committed."""
    from huggingface_hub import DatasetCard, DatasetCardData

    path = Path(path)
    configs = data_files(path)
    splits = read_split_rows(path)
    rows = [r for split in splits.values() for r in split]
    sources = sorted(set(sources_of(rows) + manifest_sources(path)))
    licence, by_source = license_for(sources, license)
    is_pairs = bool(rows) and {"chosen", "rejected"} <= set(rows[0])
    data = DatasetCardData(
        license=licence, language=["en"], pretty_name=pretty_name or f"builder {path.name}",
        task_categories=["text-generation"], size_categories=[size_category(len(rows))],
        tags=["safety", "builder", *(["dpo", "preference"] if is_pairs else ["sft"])],
        configs=[{"config_name": name, "data_files": [{"split": s, "path": f} for s, files in cfg.items() for f in files]}
                 for name, cfg in configs.items()],
        **({"dataset_info": features} if (features := declared_features(path)) else {}))
    facts = pipeline_facts(rows, None if reproducible else lock_path)
    metrics = load_metrics(metrics_dir)
    body = [f"# {data.pretty_name}", "",
            ("Preference pairs {prompt, chosen, rejected, category} for safety alignment (DPO)." if is_pairs
             else "Instruction-tuning records mixing general and safety data."), "", CONTENT_WARNING, "",
            "## Sources and licences", "",
            *[f"- `{s}`: {lic}" + (" (research-only, non-commercial)" if lic == "cc-by-nc-4.0" else "")
              for s, lic in by_source.items()],
            "", f"The dataset as a whole is licensed **{licence}** (the most restrictive of its sources).", "",
            "## Pipeline", "", *([] if reproducible else [f"- git revision: `{git_revision(Path.cwd())}`"]),
            *[f"- model: `{m}`" for m in facts["models"]], *[f"- template hash: `{t}`" for t in facts["templates"]]]
    params: dict = {}
    for stage, entry in facts["stages"].items():
        outs = ", ".join(f"`{o['path']}` ({o.get('md5')})" for o in entry.get("outs") or [])
        body.append(f"- stage `{stage}` -> {outs or '-'}")
        for values in (entry.get("params") or {}).values():
            params.update(values)
    if params:
        body += ["", "Parameters (params.yaml, as dvc.lock recorded them):", "", "```json",
                 json.dumps(params, indent=1, sort_keys=True), "```"]
    body += ["", "## Counts at every stage (from metrics/*.json)", "",
             "| stage | in | out | rejected | rejects by reason | rejects by category |", "|---|---|---|---|---|---|"]
    for stage in sorted(metrics, key=lambda s: STAGES.index(s) if s in STAGES else len(STAGES)):
        m = metrics[stage]
        if "examples" in m and "general" in m:  # mix metrics: a composition, not a filter
            body.append(f"| {stage} | {m['general']['kept']} general + {m['safety']['drawn']} safety "
                        f"(of {m['safety']['usable']} usable) | {m['examples']} | - | - | - |")
        elif "in" in m:
            body.append(f"| {stage} | {m['in']} | {m['out']} | {m['rejected']} | "
                        f"{json.dumps(m.get('rejected_by_reason') or {})} | {json.dumps(m.get('rejected_by_category') or {})} |")
    body += ["", "## Splits", "", "| split | records |", "|---|---|", *[f"| {s} | {len(r)} |" for s, r in splits.items()],
             "", "## How to load", "", "```python", "from datasets import load_dataset",
             f'ds = load_dataset("{repo_id or path}")', "```"]
    if is_pairs:
        first = next((s for s in splits if "train" in s), next(iter(splits)))
        body += ["", "With TRL:", "", "```python", "from trl import DPOConfig, DPOTrainer",
                 f'trainer = DPOTrainer(model=model, args=DPOConfig(output_dir="dpo"), train_dataset=ds["{first}"], '
                 "processing_class=tokenizer)", "```"]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def declared_features(path: Path):
    """The explicit column types a builder dataset folder declares (README ``dataset_info``), kept so
    `datasets` never infers a null column from an all-empty split."""
    from huggingface_hub import DatasetCard

    readme = Path(path) / "README.md"
    if not readme.is_file():
        return None
    return DatasetCard.load(readme).data.to_dict().get("dataset_info")


def write_card(path: Path, out: Path | None = None, **kwargs) -> Path:
    card = build_card(Path(path), **kwargs)
    out = Path(out) if out else (Path(path) / "README.md" if Path(path).is_dir() else Path(path).with_name("README.md"))
    with atomic_path(out) as tmp:
        tmp.write_text(str(card), encoding="utf-8")
    return out


def card_or_note(path: Path, out: Path | None = None, **kwargs) -> str:
    """For stages: write the full card over the minimal README, or say why not (a source of unknown
    licence: the stage still succeeds and the operator runs `builder card --license`)."""
    try:
        return f"card: {write_card(Path(path), out, **kwargs)}"
    except BadInput as e:
        return f"card not written ({e})"
