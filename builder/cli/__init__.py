"""The `builder` command line: thin commands that parse arguments and map failures to exit codes.

Heavy libraries (polars, jsonschema, torch, datasets, openai) are imported inside the commands that
need them, so `builder --help` answers instantly. Exit codes: 0 success, 1 the run failed, 2 bad
usage or bad input (the message names file, line or record, and field).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from builder import __version__
from builder.errors import BadInput, DryRun, RunFailed, Terminated

app = typer.Typer(
    name="builder",
    help="Build, check and version the data that makes language models safer.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"builder {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Build, check and version the data that makes language models safer."""


def say(message: str) -> None:
    """Operator messages go to stderr so stdout stays clean for pipes."""
    typer.echo(message, err=True)


def report_problems(problems, limit: int) -> None:
    for problem in problems[:limit]:
        say(str(problem))
    if len(problems) > limit:
        say(f"... and {len(problems) - limit} more problems (all of them are in the --rejects file)")


def command(fn):
    """Run a command body, turning BadInput into exit 2 and RunFailed into exit 1 with one clear message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _terminate_like_ctrl_c()
        try:
            return fn(*args, **kwargs)
        except BadInput as e:
            report_problems(e.problems, 50)
            say(f"error: {e}")
            raise typer.Exit(2) from None
        except RunFailed as e:
            say(f"error: {e}")
            raise typer.Exit(1) from None
        except DryRun as e:
            say(str(e))
        except KeyboardInterrupt as e:
            what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            say(f"{what}; completed work is stored: rerun the same command to resume")
            raise typer.Exit(getattr(e, "exit_code", 130)) from None

    return wrapper


def _terminate_like_ctrl_c() -> None:
    """SIGTERM raises Terminated in the main thread: the same unwinding as Ctrl-C (stop sending, flush
    the cache, write nothing half-done), then exit 143."""
    import signal
    import threading

    def handler(signum, frame):
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


KindOpt = Annotated[str, typer.Option("--kind", "-k", help="responses|instructions|preferences|sft|eval|generation|score")]
MapOpt = Annotated[Optional[list[str]], typer.Option("--map", metavar="NEW=OLD", help="Rename a column: NEW=OLD (repeatable).")]
AgainstOpt = Annotated[Optional[list[str]], typer.Option("--against", metavar="EVAL", help="Eval suite no record may leak (repeatable) [params: validate.against].")]
RejectsOpt = Annotated[Optional[Path], typer.Option("--rejects", help="Write each rejected record here with its reason (JSONL).")]
MetricsOpt = Annotated[Optional[Path], typer.Option("--metrics", help="Write counts in/out/rejected by reason and category (JSON, a DVC metric).")]
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


# Options shared by every LLM stage (induce, filter, respond, judge, score); None = take params.yaml.
BackendOpt = Annotated[Optional[str], typer.Option("--backend", help="hf (local transformers) | openai (any OpenAI-compatible server) [params: llm.backend].")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="smollm2-135m (packaged), a local folder, a hub id, or the served model name [params: llm.model].")]
BaseUrlOpt = Annotated[Optional[list[str]], typer.Option("--base-url", metavar="URL", help="OpenAI-compatible server URL, e.g. http://gpu1:8000/v1 (repeatable: round robin).")]
AdapterOpt = Annotated[Optional[str], typer.Option("--adapter", help="LoRA adapter folder (hf) or served adapter name (openai).")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Only the first N input records.")]
BatchSizeOpt = Annotated[Optional[int], typer.Option("--batch-size", help="hf: prompts per generate call [params: llm.batch_size].")]
ConcurrencyOpt = Annotated[Optional[int], typer.Option("--concurrency", help="openai: requests in flight [params: llm.concurrency].")]
MaxNewTokensOpt = Annotated[Optional[int], typer.Option("--max-new-tokens", help="Tokens to generate (always sent explicitly).")]
TemperatureOpt = Annotated[Optional[float], typer.Option("--temperature", help="0 = greedy.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Sampling seed.")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Ignore cached completions (new ones are still stored).")]
MaxBudgetOpt = Annotated[Optional[float], typer.Option("--max-budget", help="openai: stop sending once this many dollars were spent (needs llm.prices) [params: llm.max_budget_usd].")]
DryRunOpt = Annotated[Optional[bool], typer.Option("--dry-run", help="Count the requests not in the cache and estimate tokens and cost; send nothing.")]


cache_app = typer.Typer(help="The LLM completion cache ($BUILDER_CACHE or ~/.cache/builder).\n\nExample: builder cache stats",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("stats")
@command
def cache_stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print the stats as JSON.")] = False,
) -> None:
    """How many completions are cached, for which models, what they cost, and the size on disk.

    Example: builder cache stats --json
    """
    import json

    from builder.llm.cache import Cache

    cache = Cache()
    stats = cache.stats()
    cache.close()
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
        return
    typer.echo(f"{stats['path']}: {stats['completions']} completions, {stats['bytes'] / 1e6:.1f} MB, "
               f"${stats['cost_usd']:.4f} spent, tokens {stats['prompt_tokens']} in / {stats['completion_tokens']} out")
    for row in stats["by_model"]:
        typer.echo(f"  {row['backend']:7} {row['model']}: {row['completions']} (${row['cost_usd']:.4f})")


@cache_app.command("prune")
@command
def cache_prune(
    older_than: Annotated[Optional[float], typer.Option("--older-than", help="Remove completions stored more than DAYS ago.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Remove completions of this model.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Remove every completion.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Remove them; without it, only list what would be removed.")] = False,
) -> None:
    """Remove cached completions (a rerun then pays for them again). Without --yes, list what would go.

    Example: builder cache prune --older-than 30 --yes
    """
    from builder.llm.cache import Cache

    if older_than is None and model is None and not all_:
        raise BadInput("say what to prune: --older-than DAYS, --model NAME or --all")
    which = {"older_than_days": older_than, "model": model, "everything": all_}
    cache = Cache()
    try:
        if not yes:
            doomed = cache.prunable(**which)
            for backend, name, n in doomed:
                typer.echo(f"  {backend:7} {name}: {n}")
            say(f"would remove {sum(n for *_, n in doomed)} cached completions from {cache.path}; "
                "add --yes to remove them")
            return
        removed = cache.prune(**which)
    finally:
        cache.close()
    say(f"removed {removed} cached completions from {cache.path}")


@cache_app.command("model")
@command
def cache_model(
    name: Annotated[str, typer.Argument(help="A packaged model name.")] = "smollm2-135m",
) -> None:
    """Print the local folder of a model (converting the packaged GGUF once), e.g. for `transformers serve`.

    Example: transformers serve "$(builder cache model smollm2-135m)" --host 127.0.0.1 --port 8000
    """
    from builder.llm.models import resolve

    typer.echo(resolve(name).path)


# --- the LLM stages: induce, filter, respond, judge ----------------------------------------------

LLM_FLAGS = {"backend": BackendOpt, "model": ModelOpt, "base_url": BaseUrlOpt, "adapter": AdapterOpt,
             "batch_size": BatchSizeOpt, "concurrency": ConcurrencyOpt, "dry_run": DryRunOpt,
             "max_budget_usd": MaxBudgetOpt}
GEN_FLAGS = {"max_new_tokens": MaxNewTokensOpt, "temperature": TemperatureOpt, "seed": SeedOpt}
InOpt = Annotated[str, typer.Option("--in", "-i", help="Input records (any readable format).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output records (.jsonl, .json, .parquet, .csv).")]


def llm_stage(fn):
    """Give a command the options every LLM stage shares. The command declares only its own options and
    receives the rest as ``stage``: in_path, out, rejects, metrics, limit, use_cache, and the
    ``llm_flags`` / ``gen_flags`` dicts (None = not given: params.yaml decides) that stage functions take."""
    import inspect

    kw = inspect.Parameter.KEYWORD_ONLY
    io = [inspect.Parameter("in_path", kw, annotation=InOpt, default=...),
          inspect.Parameter("out", kw, annotation=OutOpt, default=...),
          inspect.Parameter("rejects", kw, annotation=RejectsOpt, default=None),
          inspect.Parameter("metrics", kw, annotation=MetricsOpt, default=None)]
    own = [p.replace(kind=kw) for p in inspect.signature(fn, eval_str=True).parameters.values()
           if p.kind is not p.VAR_KEYWORD]  # eval_str: real Annotated types, for Typer
    shared = [inspect.Parameter(name, kw, annotation=annotation, default=None)
              for name, annotation in {**LLM_FLAGS, **GEN_FLAGS, "limit": LimitOpt}.items()]
    shared.append(inspect.Parameter("no_cache", kw, annotation=NoCacheOpt, default=False))

    @functools.wraps(fn)
    def wrapper(**kwargs):
        llm_flags = {name: kwargs.pop(name) for name in LLM_FLAGS}
        gen_flags = {name: kwargs.pop(name) for name in GEN_FLAGS}
        use_cache = not kwargs.pop("no_cache")
        return fn(**kwargs, llm_flags=llm_flags, gen_flags=gen_flags, use_cache=use_cache)

    wrapper.__signature__ = inspect.Signature(io + own + shared)
    return wrapper


def finish(result, problems_shown: int = 50) -> None:
    """Print a stage's input problems (the first ``problems_shown``), its summary (and its notes: the
    LLM summary, errors) and exit with its code."""
    report_problems(result.problems, problems_shown)
    say(result.summary())
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def stage_io(inputs, out, rejects=None, metrics=None):
    """The stage's paths; the ones it writes must be distinct (a quarantine must never replace the output)."""
    from builder.stages.base import StageIO

    from builder.records import distinct_outputs

    distinct_outputs(out=out, rejects=rejects, metrics=metrics)
    return StageIO(tuple(str(i) for i in inputs), out, rejects, metrics)


def run_llm_stage(name: str, stage: dict, **own) -> None:
    """An LLM stage command: its params section with flags on top, one run(config, io), the summary."""
    import importlib

    from builder.config import section

    module = importlib.import_module(f"builder.stages.{name}")
    config = module.Config.load(section(name), llm_flags=stage["llm_flags"], gen_flags=stage["gen_flags"],
                                limit=stage["limit"], use_cache=stage["use_cache"], **own)
    finish(module.run(config, stage_io([stage["in_path"]], stage["out"], stage["rejects"], stage["metrics"])))


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


# Commands of later themes live in their own modules and add themselves to ``app`` on import.
# (Each import is light: the modules import heavy libraries inside their commands.)
THEMES = ("train", "evaluate", "publish")  # builder/cli/<theme>.py
for _theme in THEMES:
    __import__(f"builder.cli.{_theme}")


def run() -> None:  # pragma: no cover - console entry for `python -m builder`
    app(prog_name="builder")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
