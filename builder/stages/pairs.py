"""pairs: the final preference dataset: de-duplicated, free of eval prompts, split by category, written
as a Hugging Face dataset (parquet per split) that `datasets.load_dataset` and TRL's DPOTrainer read
unchanged, with optional exports (conversational messages, the Safer-Instruct CSV layout)."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from builder.config import StageConfig
from builder.dataset_dir import building, check_out_dir
from builder.errors import BadInput
from builder.records import atomic_path, write_records
from builder.stages.base import Reject, StageIO, StageResult, by_category, provenance, write_result
from builder.validate import Limits, check

# ultrafeedback_binarized's split names, which DPO recipes expect.
TRAIN, TEST = "train_prefs", "test_prefs"
EXPORTS = ("conversational", "csv")
CHECKS = Limits()


@dataclass
class Config(StageConfig):
    section_name = "pairs"
    test_size: float = field(default=0.1, metadata={"help": "Share of each category held out as test_prefs."})
    seed: int = field(default=0, metadata={"help": "Seed of the split."})
    exports: list = field(default_factory=list, metadata={
        "help": "Extra layouts beside the parquet splits: conversational (TRL messages), csv (Safer-Instruct)."})
    # validate's checks are exactly the pair rules, with validate's settings:
    against: list = field(default_factory=list, metadata={"section": "validate", "help": "Eval suites whose prompts must not appear."})
    max_chars: int = field(default=CHECKS.max_chars, metadata={"section": "validate", "help": "Longest text field kept."})
    near_duplicates: bool = field(default=CHECKS.near_duplicates, metadata={
        "section": "validate", "help": "Drop pairs equal up to case, punctuation and spacing."})
    contamination_ngram: int = field(default=CHECKS.contamination_ngram, metadata={
        "section": "validate", "help": "Shared run of words with an eval prompt that counts as a leak."})


def run(config: Config, io: StageIO) -> StageResult:
    """The pairs of ``io.input`` as a Hugging Face dataset folder ``io.out`` (parquet per split, the
    splits' pairs.jsonl, the exports, the card); dropped pairs to ``io.rejects``."""
    in_path, out_dir = io.input, Path(io.out)
    if not 0 <= config.test_size < 1:
        raise BadInput(f"--test-size must be in [0, 1), got {config.test_size}")
    unknown = sorted(set(config.exports) - set(EXPORTS))
    if unknown:
        raise BadInput(f"unknown export {', '.join(unknown)}; accepted: {', '.join(EXPORTS)}")
    keep_out = [in_path, *(p for p in (io.rejects, io.metrics) if p)]
    check_out_dir(out_dir, keep_out, stage="pairs")  # before any work: never a user's folder
    # validate's checks are exactly the pair rules: schema, empty, chosen == rejected, exact and near
    # duplicates, and overlap with the eval suites of ``against``.
    limits = Limits(config.max_chars, config.near_duplicates, config.contamination_ngram)
    checked = check(in_path, "preference", limits=limits, against=list(config.against), stage="pairs")
    splits = split_by_category(checked.good, config.test_size, config.seed)
    splits = {name: records for name, records in splits.items() if records}  # no empty parquet files
    for name, records in splits.items():  # the split is part of the record's lineage (`builder show`)
        for rec in records:  # (the same dicts as checked.good, so pairs.jsonl carries it too)
            rec["meta"] = provenance(rec.get("meta"), "pairs", [rec["id"]], split=name)
    if not splits:
        raise BadInput(f"{in_path}: no valid preference pairs left ({checked.read} read, all rejected); "
                       "see the rejects file for the reasons")
    rows = {name: [hub_row(r) for r in records] for name, records in splits.items()}
    result = StageResult("pairs", read=checked.read, kept=checked.good,
                         rejects=[Reject.from_dict(entry) for entry in checked.bad],
                         extra={"splits": {name: len(records) for name, records in splits.items()},
                                "split_by_category": {name: by_category(records) for name, records in splits.items()}})
    # Built beside its destination and swapped in whole; a folder builder did not write is never replaced.
    with building(out_dir, keep_out, stage="pairs") as build:
        configs = {"default": {name: "data/" + write_split(build / "data", name, split_rows)
                               for name, split_rows in rows.items()}}
        if "conversational" in config.exports:
            configs["conversational"] = {
                name: "conversational/" + write_split(build / "conversational", name,
                                                      [conversational(r) for r in split_rows], messages=True)
                for name, split_rows in rows.items()}
        if "csv" in config.exports:
            for name, records in splits.items():
                write_records(build / "csv" / f"{name}.csv", records, "preference")
        _write_configs(build, configs)
        write_result(result, StageIO(out=build / "pairs.jsonl", rejects=io.rejects, metrics=io.metrics), "preference")
    from builder.publish.card import card_or_note  # the full dataset card over the minimal README

    result.out = out_dir
    result.notes += ["splits: " + ", ".join(f"{k} {v}" for k, v in result.extra["splits"].items()),
                     card_or_note(out_dir, reproducible=True,
                                  metrics_dir=Path(io.metrics).parent if io.metrics else Path("metrics"))]
    return result


def split_by_category(records: list[dict], test_size: float, seed: int) -> dict[str, list[dict]]:
    """A seeded split stratified by category, independent of input order. The test split gets
    round(total * test_size) records, a half rounding down (15 pairs at 0.5: 7 test, 8 train), shared
    among categories by largest remainder; a category of two or more gives at least one when test_size > 0."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        groups[rec.get("category") or "none"].append(rec)
    quotas = test_quotas({name: len(members) for name, members in groups.items()}, test_size)
    train, test = [], []
    for category in sorted(groups):
        members = sorted(groups[category], key=lambda r: r["id"])
        random.Random(f"{seed}:{category}").shuffle(members)
        test += members[:quotas[category]]
        train += members[quotas[category]:]
    return {TRAIN: sorted(train, key=lambda r: r["id"]), TEST: sorted(test, key=lambda r: r["id"])}


def test_quotas(sizes: dict[str, int], test_size: float) -> dict[str, int]:
    exact = {name: n * test_size for name, n in sizes.items()}
    total = sum(exact.values())
    target = math.floor(total) if total - math.floor(total) <= 0.5 else math.ceil(total)
    quotas = {name: math.floor(x) for name, x in exact.items()}
    by_remainder = sorted(exact, key=lambda name: (-(exact[name] - quotas[name]), name))
    for name in by_remainder[: max(0, target - sum(quotas.values()))]:
        quotas[name] += 1
    for name, n in sizes.items():
        if test_size > 0 and n >= 2 and quotas[name] == 0:
            quotas[name] = 1
    return quotas


def hub_row(rec: dict) -> dict:
    """The published columns: TRL's prompt/chosen/rejected, ultrafeedback's prompt_id and scores,
    BeaverTails-style category/is_safe, and the provenance as JSON text."""
    return {
        "prompt": rec["prompt"], "chosen": rec["chosen"], "rejected": rec["rejected"],
        "prompt_id": hashlib.sha256(rec["prompt"].encode("utf-8")).hexdigest(),
        "id": rec["id"], "category": rec.get("category") or "",
        "score_chosen": rec.get("score_chosen"), "score_rejected": rec.get("score_rejected"),
        "is_safe": rec.get("is_safe"),
        "meta": json.dumps(rec.get("meta") or {}, ensure_ascii=False, sort_keys=True),
    }


def conversational(row: dict) -> dict:
    """TRL's "conversational, explicit prompt" layout."""
    return {**row, "prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}]}


# The published columns and their types, fixed so that every split (and every version) has one schema:
# a column that happens to be all null in one split must not become Arrow's null type.
FEATURES = {"prompt": "string", "chosen": "string", "rejected": "string", "prompt_id": "string", "id": "string",
            "category": "string", "score_chosen": "float64", "score_rejected": "float64", "is_safe": "bool",
            "meta": "string"}
MESSAGES = ("prompt", "chosen", "rejected")  # lists of {role, content} in the conversational config


def write_split(folder: Path, split: str, rows: list[dict], *, messages: bool = False) -> str:
    """One split as parquet with the fixed schema; returns the file name, which carries a hash of the
    content. The README names each file exactly: `datasets` identifies a local folder by its YAML configs
    (the data_files patterns), not by content, so a glob would let it serve a cached earlier version."""
    import polars as pl

    dtypes = {"string": pl.String, "float64": pl.Float64, "bool": pl.Boolean}
    message = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
    schema = {name: message if messages and name in MESSAGES else dtypes[kind] for name, kind in FEATURES.items()}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{split}.parquet"
    pl.DataFrame(rows, schema=schema, strict=False).write_parquet(tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:12]
    name = f"{split}-00000-of-00001-{digest}.parquet"
    tmp.rename(folder / name)
    return name


def _write_configs(out_dir: Path, configs: dict[str, dict[str, str]]) -> None:
    """The README header `datasets` reads: configs with their split files and the explicit features.
    It is built with huggingface_hub's card classes; `builder card` writes the full card over it."""
    from huggingface_hub import DatasetCard, DatasetCardData

    def features(messages: bool) -> list[dict]:
        listed = []
        for name, kind in FEATURES.items():
            if messages and name in MESSAGES:
                listed.append({"name": name, "list": [{"name": "role", "dtype": "string"},
                                                      {"name": "content", "dtype": "string"}]})
            else:
                listed.append({"name": name, "dtype": kind})
        return listed

    data = DatasetCardData(
        configs=[{"config_name": name, "data_files": [{"split": split, "path": path} for split, path in files.items()]}
                 for name, files in configs.items()],
        dataset_info=[{"config_name": name, "features": features(name == "conversational")} for name in configs],
    )
    card = DatasetCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n"
                                     "Preference pairs built with builder (`builder pairs`). Load them with "
                                     "`datasets.load_dataset(\"PATH_TO_THIS_FOLDER\")`.\n")
    with atomic_path(out_dir / "README.md") as tmp:
        tmp.write_text(str(card), encoding="utf-8")
