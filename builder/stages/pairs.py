"""pairs: the final preference dataset: de-duplicated, free of eval prompts, split by category, written
as a Hugging Face dataset (parquet per split) that `datasets.load_dataset` and TRL's DPOTrainer read
unchanged, with optional exports (conversational messages, the Safer-Instruct CSV layout)."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import defaultdict
from pathlib import Path

from builder.errors import BadInput
from builder.metrics import reject, write_outputs
from builder.records import atomic_path, write_records
from builder.validate import Limits, check

# ultrafeedback_binarized's split names, which DPO recipes expect.
TRAIN, TEST = "train_prefs", "test_prefs"
EXPORTS = ("conversational", "csv")


def pairs(in_path: str, out_dir: Path, *, test_size: float = 0.1, seed: int = 0, exclude: list[str] = (),
          exports: list[str] = (), limits: Limits = Limits(), rejects_path: Path | None = None,
          metrics_path: Path | None = None) -> dict:
    if not 0 <= test_size < 1:
        raise BadInput(f"--test-size must be in [0, 1), got {test_size}")
    unknown = sorted(set(exports) - set(EXPORTS))
    if unknown:
        raise BadInput(f"unknown export {', '.join(unknown)}; accepted: {', '.join(EXPORTS)}")
    # validate's checks are exactly the pair rules: schema, empty, chosen == rejected, exact and near
    # duplicates, and overlap with the eval suites given by --exclude.
    result = check(in_path, "preference", limits=limits, against=list(exclude))
    rejects = [reject("pairs", entry.get("record") or {}, entry["problems"][0]["reason"],
                      "; ".join(f"{p['field']}: {p['message']}" for p in entry["problems"]), raw=entry.get("raw"))
               for entry in result.bad]
    splits = split_by_category(result.good, test_size, seed)
    final_dir = Path(out_dir)
    # Build the whole dataset beside its destination and swap it in: no half-written or stale files.
    out_dir = final_dir.with_name(f".{final_dir.name}.tmp")
    shutil.rmtree(out_dir, ignore_errors=True)
    splits = {name: records for name, records in splits.items() if records}  # no empty parquet files
    if not splits:
        raise BadInput(f"{in_path}: no valid preference pairs left ({result.read} read, all rejected); "
                       "see the rejects file for the reasons")
    rows = {name: [hub_row(r) for r in records] for name, records in splits.items()}
    for name, split_rows in rows.items():
        write_records(out_dir / "data" / f"{name}-00000-of-00001.parquet", split_rows)
    configs = [("default", "data")]
    if "conversational" in exports:
        for name, split_rows in rows.items():
            write_records(out_dir / "conversational" / f"{name}-00000-of-00001.parquet",
                          [conversational(r) for r in split_rows])
        configs.append(("conversational", "conversational"))
    if "csv" in exports:
        for name, records in splits.items():
            write_records(out_dir / "csv" / f"{name}.csv", records, "preference")
    _write_configs(out_dir, configs, list(splits))
    metrics = write_outputs("pairs", out_dir / "pairs.jsonl", result.good, "preference",
                            read=[None] * result.read, rejects=rejects, rejects_path=rejects_path,
                            metrics_path=metrics_path,
                            splits={name: len(records) for name, records in splits.items()},
                            split_by_category={name: _count(records) for name, records in splits.items()})
    shutil.rmtree(final_dir, ignore_errors=True)
    out_dir.rename(final_dir)
    from builder.publish.card import card_or_note  # the full dataset card over the minimal README
    metrics["card"] = card_or_note(final_dir, metrics_dir=Path(metrics_path).parent if metrics_path else Path("metrics"))
    return metrics


def split_by_category(records: list[dict], test_size: float, seed: int) -> dict[str, list[dict]]:
    """A seeded split stratified by category: each category gives round(n * test_size) records to
    test (at least one when it has two or more and test_size > 0). Independent of input order."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        groups[rec.get("category") or "none"].append(rec)
    train, test = [], []
    for category in sorted(groups):
        members = sorted(groups[category], key=lambda r: r["id"])
        random.Random(f"{seed}:{category}").shuffle(members)
        n_test = round(len(members) * test_size)
        if test_size > 0 and n_test == 0 and len(members) >= 2:
            n_test = 1
        test += members[:n_test]
        train += members[n_test:]
    return {TRAIN: sorted(train, key=lambda r: r["id"]), TEST: sorted(test, key=lambda r: r["id"])}


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


def _count(records: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for rec in records:
        counts[rec.get("category") or "none"] += 1
    return dict(sorted(counts.items()))


def _write_configs(out_dir: Path, configs: list[tuple[str, str]], splits: list[str]) -> None:
    """A minimal README whose YAML header tells `datasets` the configs and split names; `builder card`
    writes the full dataset card over it."""
    lines = ["---", "configs:"]
    for name, folder in configs:
        lines += [f"- config_name: {name}", "  data_files:"]
        for split in splits:
            lines += [f"  - split: {split}", f"    path: {folder}/{split}-*"]
    lines += ["---", "", "Preference pairs built with builder. Run `builder card` for the full dataset card.", ""]
    with atomic_path(out_dir / "README.md") as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
