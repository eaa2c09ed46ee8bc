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
from builder.errors import BadInput, RunFailed

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
        say(f"... and {len(problems) - limit} more problems (all of them are in the --quarantine file)")


def command(fn):
    """Run a command body, turning BadInput into exit 2 and RunFailed into exit 1 with one clear message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BadInput as e:
            report_problems(e.problems, 50)
            say(f"error: {e}")
            raise typer.Exit(2) from None
        except RunFailed as e:
            say(f"error: {e}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            say("interrupted; rerun the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


KindOpt = Annotated[str, typer.Option("--kind", "-k", help="responses|instructions|preferences|sft|eval|generation|score")]
MapOpt = Annotated[Optional[list[str]], typer.Option("--map", help="Rename a column: NEW=OLD (repeatable).")]


@app.command()
@command
def ingest(
    sources: Annotated[list[str], typer.Argument(help="Files (.json .jsonl .csv .parquet) or hf://ORG/NAME[:CONFIG]/SPLIT.")],
    kind: KindOpt = ...,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.jsonl, .parquet, .json, .csv).")] = ...,
    map_: MapOpt = None,
    quarantine: Annotated[Optional[Path], typer.Option(help="Write rows that cannot be read here, with reasons.")] = None,
) -> None:
    """Read sources into records of one kind, with ids and provenance.

    Example: builder ingest posts.csv --kind responses --map text=body --out data/responses.jsonl
    """
    from builder.stages.ingest import ingest as run

    summary = run(sources, kind, out, mapping_pairs=map_ or [], quarantine=quarantine)
    say(summary.message)
    if summary.problems:
        report_problems(summary.problems, 50)
        say(f"error: {len(summary.problems)} problems in {summary.bad} rows; the {summary.written} good records "
            f"were written to {out}" + (f" and the bad rows to {quarantine}" if quarantine else
                                         "; add --quarantine BAD.jsonl to keep the bad rows"))
        raise typer.Exit(2)


@app.command()
@command
def validate(
    path: Annotated[str, typer.Argument(help="File to check (any readable format).")],
    kind: Annotated[Optional[str], typer.Option("--kind", "-k", help="Record kind; guessed from the fields if omitted.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the good records here.")] = None,
    quarantine: Annotated[Optional[Path], typer.Option(help="Write each bad record here with its reasons.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write JSON stats here (usable as a DVC metric).")] = None,
    against: Annotated[Optional[list[str]], typer.Option(help="Eval suite to check for contamination (repeatable).")] = None,
    map_: MapOpt = None,
    max_chars: Annotated[Optional[int], typer.Option(help="Longest text field allowed [params: validate.max_chars].")] = None,
) -> None:
    """Check records: schema, empty text, chosen == rejected, length, duplicates, eval leaks.

    Example: builder validate contrib.jsonl --kind preferences --against evals/I-CoNa.json --quarantine bad.jsonl
    """
    from builder.stages.validate import validate as run

    outcome = run(path, kind, out=out, quarantine=quarantine, report=report, against=against,
                  mapping_pairs=map_ or [], max_chars=max_chars)
    if outcome.problems:
        report_problems(outcome.problems, outcome.shown)
    say(outcome.message)
    if outcome.problems:
        raise typer.Exit(2)


def run() -> None:  # pragma: no cover - console entry for `python -m builder`
    app(prog_name="builder")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
