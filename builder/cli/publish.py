"""Commands that turn builder outputs into versions others can trust: card, diff, publish."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from builder import console
from builder.cli import app, command

LicenseOpt = Annotated[Optional[str], typer.Option("--license", help="Licence id (e.g. cc-by-nc-4.0) when the sources' licence is not known.")]
MetricsOpt = Annotated[Path, typer.Option("--metrics", help="Folder of the stage metrics files the card counts from.")]


@app.command()
@command
def card(
    path: Annotated[Path, typer.Argument(help="A `builder pairs` folder, a mix or any record file.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write the card [default: PATH/README.md].")] = None,
    license: LicenseOpt = None,
    metrics: MetricsOpt = Path("metrics"),
) -> None:
    """Write a Hugging Face dataset card: licence, sources, pipeline, counts per stage, splits, how to load.

    Example: builder card data/pairs --out data/pairs/README.md
    """
    from builder.publish.card import write_card

    console.info(f"card: {write_card(path, out, license=license, metrics_dir=metrics)}")


@app.command()
@command
def diff(
    old: Annotated[str, typer.Argument(help="Old version: a path or REV:PATH (read through DVC, no checkout).")],
    new: Annotated[str, typer.Argument(help="New version: a path or REV:PATH.")],
    json_: Annotated[Optional[Path], typer.Option("--json", help="Write the full report here as JSON.")] = None,
    fail_on: Annotated[Optional[str], typer.Option("--fail-on", help="Exit 1 when a count exceeds its limit: added>100,removed>0,changed>N,moved>N,leaks>0.")] = None,
    show: Annotated[int, typer.Option(help="How many changed and moved records to show.")] = 5,
    rejects: Annotated[Optional[list[Path]], typer.Option("--rejects", metavar="PATH", help="NEW's rejects files (repeatable): say which stage dropped each removed record.")] = None,
) -> None:
    """Compare two versions record by record: added, removed, changed (which fields, which stage), split moves, shifts.

    Example: builder diff HEAD~1:data/pairs data/pairs --json diff.json --fail-on leaks>0
    """
    from builder.errors import RunFailed
    from builder.publish.diff import diff as compare, exceeded, parse_fail_on, render
    from builder.records import atomic_path

    limits = parse_fail_on(fail_on)
    report = compare(old, new, rejects=rejects or [])
    render(report, show)
    if json_:
        with atomic_path(json_) as tmp:
            tmp.write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    over = exceeded(report, limits)
    if over:
        raise RunFailed("--fail-on exceeded: " + ", ".join(over))


@app.command()
@command
def publish(
    target: Annotated[str, typer.Argument(help="A dataset folder or file, or a DVC artifact name from dvc.yaml.")],
    repo: Annotated[str, typer.Option("--repo", help="Hub dataset repo ORG/NAME.")],
    tag: Annotated[Optional[str], typer.Option("--tag", help="Version tag [default: git describe --tags --always].")] = None,
    public: Annotated[bool, typer.Option("--public", help="Create the repo public (default private).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be pushed and the diff with the Hub; push nothing.")] = False,
    license: LicenseOpt = None,
    metrics: MetricsOpt = Path("metrics"),
) -> None:
    """Validate, then push the splits (parquet) and the card to the Hub in one tagged commit.

    Example: builder publish safer-instruct-pairs --repo my-org/safer-pairs --tag v1.0
    """
    from builder.publish.hub import publish as push

    push(target, repo, tag=tag, public=public, dry_run=dry_run, license=license, metrics_dir=metrics)
