"""The data stages: ingest, validate, mix, induce, filter, respond, judge, pairs, and show (lineage)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from builder.cli import InOpt, MetricsOpt, RejectsOpt, app, command, finish, llm_stage, run_llm_stage, stage_io
from builder.errors import BadInput

KindOpt = Annotated[str, typer.Option("--kind", "-k", help="responses|instructions|preferences|sft|eval|generation|score")]
MapOpt = Annotated[Optional[list[str]], typer.Option("--map", metavar="NEW=OLD", help="Rename a column: NEW=OLD (repeatable).")]
AgainstOpt = Annotated[Optional[list[str]], typer.Option("--against", metavar="EVAL", help="Eval suite no record may leak (repeatable) [params: validate.against].")]
# The names these flags had before one vocabulary (issue 8): still accepted, no longer shown.
QuarantineAlias = Annotated[Optional[Path], typer.Option("--quarantine", hidden=True)]
ReportAlias = Annotated[Optional[Path], typer.Option("--report", hidden=True)]
ExcludeAlias = Annotated[Optional[list[str]], typer.Option("--exclude", metavar="EVAL", hidden=True)]


def either(flag, alias, name: str, alias_name: str):
    """A flag given under its canonical name or its old one (not both, with different values)."""
    if flag is not None and alias is not None and flag != alias:
        raise BadInput(f"--{alias_name} is the old name of --{name}; give only --{name}")
    return flag if flag is not None else alias


@app.command()
@command
def ingest(
    sources: Annotated[list[str], typer.Argument(metavar="SOURCE...", help="Files (.json .jsonl .csv .parquet) or hf://ORG/NAME[:CONFIG]/SPLIT.")],
    kind: KindOpt = ...,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.jsonl, .parquet, .json, .csv).")] = ...,
    map_: MapOpt = None,
    rejects: Annotated[Optional[Path], typer.Option("--rejects", help="Write rows that cannot be read here, with reasons.")] = None,
    outputs: Annotated[Optional[str], typer.Option("--outputs", help="Wide files: model output columns COL,COL,... -> one generation record per (row, column).")] = None,
    quarantine: QuarantineAlias = None,
) -> None:
    """Read sources into records of one kind, with ids and provenance.

    Example: builder ingest posts.csv --kind responses --map text=body --out data/responses.jsonl
    """
    from builder.stages.ingest import Config, run
    from builder.stages.widen import parse_outputs

    config = Config.from_params(None, kind=kind, map=map_, outputs=parse_outputs(outputs))
    finish(run(config, stage_io(sources, out, either(rejects, quarantine, "rejects", "quarantine"))), problems_shown=50)


@app.command()
@command
def validate(
    path: Annotated[str, typer.Argument(help="File to check (any readable format).")],
    kind: Annotated[Optional[str], typer.Option("--kind", "-k", help="Record kind; guessed from the fields if omitted.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the good records here.")] = None,
    rejects: Annotated[Optional[Path], typer.Option("--rejects", help="Write each bad record here with its reasons.")] = None,
    metrics: Annotated[Optional[Path], typer.Option("--metrics", help="Write JSON stats here (a DVC metric).")] = None,
    against: AgainstOpt = None,
    map_: MapOpt = None,
    max_chars: Annotated[Optional[int], typer.Option(help="Longest text field allowed [params: validate.max_chars].")] = None,
    allow_rejects: Annotated[bool, typer.Option("--allow-rejects", help="Exit 0 when the bad records went to --rejects (for pipelines).")] = False,
    quarantine: QuarantineAlias = None,
    report: ReportAlias = None,
    allow_quarantine: Annotated[bool, typer.Option("--allow-quarantine", hidden=True)] = False,
) -> None:
    """Check records: schema, empty text, chosen == rejected, length, duplicates, eval leaks.

    Example: builder validate contrib.jsonl --kind preferences --against evals/I-CoNa.json --rejects bad.jsonl
    """
    from builder.stages.validate import Config, run

    config = Config.from_project(kind=kind, map=map_, max_chars=max_chars, against=against or None,
                                 allow_rejects=allow_rejects or allow_quarantine)
    io = stage_io([path], out, either(rejects, quarantine, "rejects", "quarantine"),
                  either(metrics, report, "metrics", "report"))
    finish(run(config, io), problems_shown=config.max_problems_shown)


@app.command()
@command
def mix(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output SFT file (.json Alpaca list like the seeds', .jsonl, .parquet).")] = ...,
    general: Annotated[Optional[str], typer.Option(help="General instruction data (SFT) [params: mix.general].")] = None,
    safety: Annotated[Optional[str], typer.Option(help="Safety source: SFT, preference or response records [params: mix.safety].")] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Safety examples to add (per task with --task mix) [params: mix.n].")] = None,
    task: Annotated[Optional[str], typer.Option(help="none|case|cloze|sentiment|summarize|translate|mix: cross-task defense examples [params: mix.task].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the draw [params: mix.seed].")] = None,
    refusal: Annotated[Optional[str], typer.Option(help="Refusal for documents from response records [params: mix.refusal].")] = None,
    against: AgainstOpt = None,
    safety_kind: Annotated[Optional[str], typer.Option(help="sft|preferences|responses, when the fields do not tell.")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="Manifest JSON (seed, n, sources' sha256, safety ids) [default: OUT's stem + .manifest.json].")] = None,
    metrics: Annotated[Optional[Path], typer.Option("--metrics", help="Composition JSON: counts per source, category and task (a DVC metric).")] = None,
    report: ReportAlias = None,
) -> None:
    """General instruction data + N safety examples drawn with a seed (nested across N).

    Example: builder mix --general alpaca.json --safety safety_only_data_Instructions.json --n 300 --out saferpaca_300.json
    """
    from builder.stages.mix import Config, run

    config = Config.from_project(general=general, safety=safety, n=n, task=task, seed=seed, refusal=refusal,
                                 against=against or None, safety_kind=safety_kind,
                                 manifest=str(manifest) if manifest else None)
    finish(run(config, stage_io(config.inputs(), out, None, either(metrics, report, "metrics", "report"))))


@app.command()
@command
@llm_stage
def induce(
    template: Annotated[Optional[str], typer.Option("--template", help="Preset (safer_instruct_reverse, alpaca, llama2) or a .json/.txt file [params: induce.template].")] = None,
    n_candidates: Annotated[Optional[int], typer.Option("--n-candidates", help="Instructions kept per response (needs --temperature > 0 when > 1).")] = None,
    **stage,
) -> None:
    """Induce the instruction each response answers (Safer-Instruct's reversed template).

    Example: builder induce --in data/valid/responses.jsonl --out data/induced/instructions.jsonl --rejects rejects.jsonl
    """
    run_llm_stage("induce", stage, template=template, n_candidates=n_candidates)


@app.command("filter")
@command
@llm_stage
def filter_(
    quality: Annotated[Optional[bool], typer.Option("--quality/--no-quality", help="Also ask the expert for a 1-5 quality score [params: filter.quality].")] = None,
    **stage,
) -> None:
    """Drop low-quality induced instructions (heuristics, optional expert score), each with its reason.

    Example: builder filter --in data/induced/instructions.jsonl --out data/filtered/instructions.jsonl --rejects rejects.jsonl
    """
    run_llm_stage("filter", stage, quality=quality)


@app.command()
@command
@llm_stage
def respond(
    system: Annotated[Optional[str], typer.Option("--system", help="System prompt: preset or file [params: respond.system].")] = None,
    **stage,
) -> None:
    """The expert writes the preferred (safe) response; the harmful text becomes `rejected`.

    Example: builder respond --in data/filtered/instructions.jsonl --out data/responded/pairs.jsonl --backend openai --model gpt-4o
    """
    run_llm_stage("respond", stage, system=system)


@app.command()
@command
@llm_stage
def judge(
    mode: Annotated[Optional[str], typer.Option("--mode", help="json (structured verdict) | logprob (yes/no log-probabilities, for small local models) [params: judge.mode].")] = None,
    **stage,
) -> None:
    """The expert keeps only good pairs: a verdict per pair, the keep rule from params (judge.keep).

    Example: builder judge --in data/responded/pairs.jsonl --out data/judged/pairs.jsonl --rejects judge_rejects.jsonl
    """
    run_llm_stage("judge", stage, mode=mode)


@app.command()
@command
def pairs(
    in_: InOpt = ...,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: a Hugging Face dataset (parquet per split).")] = ...,
    test_size: Annotated[Optional[float], typer.Option(help="Share of each category held out as test_prefs [params: pairs.test_size].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the split [params: pairs.seed].")] = None,
    against: AgainstOpt = None,
    export: Annotated[Optional[list[str]], typer.Option(metavar="FORMAT", help="Also write: conversational (TRL messages) | csv (Safer-Instruct layout) [params: pairs.exports].")] = None,
    rejects: RejectsOpt = None,
    metrics: MetricsOpt = None,
    exclude: ExcludeAlias = None,
) -> None:
    """Final preference pairs: de-duplicated, eval-clean, split by category, as a Hugging Face dataset.

    Example: builder pairs --in data/judged/pairs.jsonl --out data/pairs --against evals/I-CoNa.json --export csv
    """
    from builder.stages.pairs import Config, run

    config = Config.from_project(test_size=test_size, seed=seed, exports=export or None,
                                 against=either(against or None, exclude or None, "against", "exclude"))
    finish(run(config, stage_io([in_], out, rejects, metrics)))


@app.command()
@command
def show(
    record_id: Annotated[str, typer.Argument(help="A record id (16 hex digits).")],
    in_: Annotated[Optional[list[Path]], typer.Option("--in", "-i", metavar="PATH", help="Files or folders to search [default: data/].")] = None,
) -> None:
    """Print a record and its lineage: every stage it passed, back to its source line.

    Example: builder show 3f2a9c0d1b7e4a55
    """
    from builder.lineage import describe

    roots = in_ or [Path("data")]
    missing = [str(r) for r in roots if not r.exists()]
    if missing:
        raise BadInput(f"no such file or folder: {', '.join(missing)}")
    lines = describe(record_id, roots)
    typer.echo("\n".join(lines))
    if lines and lines[0].endswith("not found under " + ", ".join(map(str, roots))):
        raise typer.Exit(2)  # an unknown id is bad input
