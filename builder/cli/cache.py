"""builder cache: the LLM completion cache (stats, prune, the packaged model's folder)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from builder import console
from builder.cli import app, command
from builder.errors import BadInput

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
            console.info(f"would remove {sum(n for *_, n in doomed)} cached completions from {cache.path}; "
                "add --yes to remove them")
            return
        removed = cache.prune(**which)
    finally:
        cache.close()
    console.info(f"removed {removed} cached completions from {cache.path}")


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
