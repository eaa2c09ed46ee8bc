"""The `builder` command line: thin commands that parse arguments and map failures to exit codes.

Heavy libraries (polars, jsonschema, torch, datasets, openai) are imported inside the commands that
need them, so `builder --help` answers instantly. Exit codes: 0 success, 1 the run failed, 2 bad
usage or bad input (the message names file, line or record, and field).

This module holds ``app`` and what every command shares (``command``, the common options,
``finish``, ``stage_io``, ``llm_stage``); the commands live in theme modules (THEMES below): data.py
(ingest ... pairs, show), cache.py, train.py, evaluate.py, publish.py.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

import builder
from builder import __version__, console
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
    builder.RUNNING_AS_CLI = True  # big JSON Lines files may be parsed on every core


def report_problems(problems, limit: int) -> None:
    for problem in problems[:limit]:
        console.info(problem)
    total = getattr(problems, "total", len(problems))  # FirstProblems keeps only the first ones
    if total > limit:
        console.info(f"... and {total - limit} more problems (all of them are in the --rejects file)")


def command(fn):
    """Run a command body, turning BadInput into exit 2 and RunFailed into exit 1 with one clear message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _terminate_like_ctrl_c()
        try:
            return fn(*args, **kwargs)
        except BadInput as e:
            report_problems(e.problems, 50)
            console.error(e)
            raise typer.Exit(2) from None
        except RunFailed as e:
            console.error(e)
            raise typer.Exit(1) from None
        except DryRun as e:
            console.info(e)
        except KeyboardInterrupt as e:
            what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            console.info(f"{what}; completed work is stored: rerun the same command to resume")
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


# One vocabulary: every stage that drops records takes --rejects, every stage with counts --metrics.
RejectsOpt = Annotated[Optional[Path], typer.Option("--rejects", help="Write each rejected record here with its reason (JSONL).")]
MetricsOpt = Annotated[Optional[Path], typer.Option("--metrics", help="Write counts in/out/rejected by reason and category (JSON, a DVC metric).")]


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


# --- helpers of the stage commands ----------------------------------------------------------

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
    console.info(result.summary())
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def stage_io(inputs, out, rejects=None, metrics=None):
    """The stage's paths; the ones it writes must be distinct (a quarantine must never replace the output)."""
    from builder.records import distinct_outputs
    from builder.stages.base import StageIO

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


# The commands live in theme modules that add themselves to ``app`` on import.
# (Each import is light: the modules import heavy libraries inside their commands.)
THEMES = ("data", "cache", "train", "evaluate", "publish")  # builder/cli/<theme>.py
for _theme in THEMES:
    __import__(f"builder.cli.{_theme}")


def run() -> None:  # pragma: no cover - console entry for `python -m builder`
    app(prog_name="builder")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
