"""report: per model (adapter or N) and suite, refusal rate and mean harmfulness with 95 % CIs, the
moderation flag rate (Wilson CI), the judge's mean P(harmful) (t CI) and partial-refusal rate, and the
exaggerated-safety rate (refusals on benign suites). Writes, into one folder:

- ``metrics.json``: the table (a DVC metric); deterministic, no timestamps;
- ``plots.csv``: one row per (model, suite) for ``plots:`` in dvc.yaml;
- ``refusal.png``: refusal rate per suite and model with Wilson intervals (matplotlib, Agg);
- ``summary.md``: the table in Markdown.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from builder.config import StageConfig
from builder.report.stats import mean_ci, wilson
from builder.stages.base import StageIO, StageResult


@dataclass
class ReportConfig(StageConfig):
    section_name = "report"
    benign_suites: list = field(default_factory=lambda: ["I-Alpaca", "I-PhysicalSafetySafe", "eval_benign"],
                                metadata={"help": "suites of benign prompts: refusals there are exaggerated safety"})
    harm_scorer: str = field(default="reward-model", metadata={"help": "scorer whose mean is the harmfulness"})


def model_label(rec: dict) -> str:
    """The adapter's folder name when there is one (e.g. n100), else the model."""
    adapter = rec.get("adapter")
    return Path(adapter).name if adapter else rec["model"]


# Scorers whose values are flags (reported as a rate with a Wilson CI) or numbers (a mean with a t CI):
# scorer key -> column prefix. The refusal and harm columns keep their historic names (n, harm_*).
RATE_COLUMNS = {"moderation": "moderation"}  # moderation: share of outputs flagged by the endpoint
MEAN_COLUMNS = {"judge": "judge"}  # judge: mean P(harmful)


def natural(name: str) -> list:
    """Sort key putting n100 before n1000 and n500 before n1000 (numbers compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(name))]


def table(records: list[dict], config: ReportConfig) -> list[dict]:
    groups: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        for scorer, value in (rec.get("scores") or {}).items():
            if value is not None:
                groups[(model_label(rec), rec["suite"])][scorer].append(value)
    rows = []
    for (model, suite), scores in sorted(groups.items(), key=lambda item: (natural(item[0][0]), item[0][1])):
        row = {"model": model, "suite": suite, "benign": suite in config.benign_suites}
        refusals = scores.get("refusal")
        if refusals:
            row["n"] = len(refusals)
            _rate(row, "refusal", refusals)
        harm = scores.get(config.harm_scorer)
        if harm:
            mean, low, high = mean_ci([float(v) for v in harm])
            row.update(harm_n=len(harm), harm_mean=mean, harm_low=low, harm_high=high)
        for scorer, prefix in RATE_COLUMNS.items():
            if scores.get(scorer):
                row[f"{prefix}_n"] = len(scores[scorer])
                _rate(row, prefix, scores[scorer])
        for scorer, prefix in MEAN_COLUMNS.items():
            if scores.get(scorer):
                mean, low, high = mean_ci([float(v) for v in scores[scorer]])
                row.update({f"{prefix}_n": len(scores[scorer]), f"{prefix}_mean": mean, f"{prefix}_low": low,
                            f"{prefix}_high": high})
        if scores.get("judge_refusal"):  # partial refusals: the judge's verdicts only (markers cannot see them)
            _rate(row, "judge_partial", [v == "partial" for v in scores["judge_refusal"]])
        rows.append({k: (None if isinstance(v, float) and math.isnan(v) else
                         round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    return rows


def _rate(row: dict, prefix: str, flags: list) -> None:
    """``<prefix>_rate`` and its 95 % Wilson interval ``<prefix>_low`` / ``<prefix>_high``."""
    k, n = sum(bool(v) for v in flags), len(flags)
    low, high = wilson(k, n)
    row.update({f"{prefix}_rate": k / n, f"{prefix}_low": low, f"{prefix}_high": high})


def exaggerated_safety(rows: list[dict]) -> dict[str, float]:
    """Per model: refusal rate over all benign-suite prompts together."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row in rows:
        if row["benign"] and "refusal_rate" in row:
            totals[row["model"]][0] += row["refusal_rate"] * row["n"]
            totals[row["model"]][1] += row["n"]
    return {m: round(k / n, 6) for m, (k, n) in sorted(totals.items(), key=lambda item: natural(item[0])) if n}


def write_png(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "refusal_rate" in r]
    suites = sorted({r["suite"] for r in rows})
    models = sorted({r["model"] for r in rows}, key=natural)
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(suites) + 2), 3.8))
    for i, model in enumerate(models):
        xs, ys, errs = [], [], [[], []]
        for j, suite in enumerate(suites):
            row = next((r for r in rows if r["model"] == model and r["suite"] == suite), None)
            if row is None:
                continue
            xs.append(j + i * width - 0.4 + width / 2)
            ys.append(row["refusal_rate"])
            errs[0].append(row["refusal_rate"] - row["refusal_low"])
            errs[1].append(row["refusal_high"] - row["refusal_rate"])
        ax.bar(xs, ys, width, yerr=errs, capsize=3, label=model)
    ax.set_xticks(range(len(suites)), suites, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("refusal rate (95 % Wilson CI)")
    ax.set_title("Refusals per suite (benign suites: exaggerated safety)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})  # no version/time stamp: reruns are identical
    plt.close(fig)


def markdown(rows: list[dict], exaggerated: dict[str, float]) -> str:
    # (header, how to show a row); a scorer's column appears when some row has its values
    optional = [("flagged, moderation (95 % CI)", "moderation_rate", lambda r: _pct(r, "moderation")),
                ("P(harmful), judge (95 % CI)", "judge_mean", lambda r: _mean(r, "judge")),
                ("partial refusals, judge (95 % CI)", "judge_partial_rate", lambda r: _pct(r, "judge_partial"))]
    optional = [(head, show) for head, key, show in optional if any(key in r for r in rows)]
    heads = ["model", "suite", "n", "refusal (95 % CI)", "harmfulness (95 % CI)", *(h for h, _ in optional)]
    lines = ["# Evaluation report", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        suite = r["suite"] + (" (benign)" if r["benign"] else "")
        n = r.get("n", r.get("harm_n", r.get("moderation_n", r.get("judge_n"))))
        cells = [r["model"], suite, str(n), _pct(r, "refusal"), _mean(r, "harm"), *(show(r) for _, show in optional)]
        lines.append("| " + " | ".join(cells) + " |")
    if exaggerated:
        lines += ["", "Exaggerated safety (refusals on benign suites): "
                  + ", ".join(f"{m} {100 * v:.1f} %" for m, v in exaggerated.items())]
    lines += ["", "Refusal is marker matching (see builder/scoring/refusal.py); harmfulness needs a real reward "
              "model to mean anything, and the judge's numbers a strong judge model.", ""]
    return "\n".join(lines)


def score_files(inputs) -> list[str]:
    """The score files named, a folder standing for the .jsonl files in it (in name order, rejects
    files left out): the pipeline reports on data/eval/scores, whatever models the matrix produced."""
    files = []
    for path in map(str, inputs):
        if Path(path).is_dir():
            files += sorted(str(p) for p in Path(path).glob("*.jsonl") if not p.name.endswith(".rejects.jsonl"))
        else:
            files.append(path)
    return files


def _pct(row: dict, prefix: str) -> str:
    if f"{prefix}_rate" not in row:
        return "–"
    return (f"{100 * row[f'{prefix}_rate']:.1f} % [{100 * row[f'{prefix}_low']:.1f}, "
            f"{100 * row[f'{prefix}_high']:.1f}]")


def _mean(row: dict, prefix: str) -> str:
    if f"{prefix}_mean" not in row:
        return "–"
    if row.get(f"{prefix}_low") is None:  # a single value has no interval
        return f"{row[f'{prefix}_mean']:.3f}"
    return f"{row[f'{prefix}_mean']:.3f} [{row[f'{prefix}_low']:.3f}, {row[f'{prefix}_high']:.3f}]"


def run(config: ReportConfig, io: StageIO) -> StageResult:
    """``io.inputs``: score files; ``io.out``: the report folder."""
    from builder.records import atomic_path
    from builder.validate import load_records

    from builder.errors import BadInput

    files = score_files(io.inputs)
    if not files:
        raise BadInput(f"--in {', '.join(map(str, io.inputs))}: no score files (*.jsonl) there; give the files "
                       "`builder score --out` wrote, or their folder")
    records = [rec for path in files for rec in load_records(path, "score")]
    if not records:
        raise BadInput(f"{', '.join(files)}: no score records, nothing to report; run `builder score` first")
    rows = table(records, config)
    exaggerated = exaggerated_safety(rows)
    out = Path(io.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"rows": rows, "exaggerated_safety": exaggerated}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    columns = ["model", "suite", "benign", "n", "refusal_rate", "refusal_low", "refusal_high", "harm_mean",
               "harm_low", "harm_high", "moderation_rate", "moderation_low", "moderation_high", "judge_mean",
               "judge_low", "judge_high", "judge_partial_rate", "judge_partial_low", "judge_partial_high"]
    with atomic_path(out / "plots.csv") as tmp:
        lines = [",".join(columns)] + [",".join("" if r.get(c) is None else str(r.get(c)) for c in columns)
                                       for r in rows]
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with atomic_path(out / "refusal.png") as tmp:
        write_png(rows, tmp)
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(markdown(rows, exaggerated), encoding="utf-8")
    result = StageResult("report", read=len(records), kept=records, out=out,
                         extra={"groups": len(rows)})
    result.notes.append(f"report: {out}/summary.md, {out}/refusal.png")
    return result
