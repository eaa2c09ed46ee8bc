"""Evaluating: generate (a model answers eval suites), score (refusal, reward model, moderation, judge), report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from builder.cli import (GEN_FLAGS, LLM_FLAGS, DryRunOpt, LimitOpt, MetricsOpt, NoCacheOpt, OutOpt, RejectsOpt, app,
                         command, finish, stage_io)


def _llm_options(fn):
    """Add the shared LLM flags (backend, model, adapter, ...) to a command; they arrive as ``llm_flags``."""
    import functools
    import inspect

    kw = inspect.Parameter.KEYWORD_ONLY
    own = [p.replace(kind=kw) for p in inspect.signature(fn, eval_str=True).parameters.values()
           if p.kind is not p.VAR_KEYWORD]
    shared = [inspect.Parameter(n, kw, annotation=a, default=None) for n, a in LLM_FLAGS.items()]

    @functools.wraps(fn)
    def wrapper(**kwargs):
        return fn(**kwargs, llm_flags={n: kwargs.pop(n) for n in list(LLM_FLAGS)})

    wrapper.__signature__ = inspect.Signature(own + shared)
    return wrapper


@app.command()
@command
@_llm_options
def generate(
    eval_: Annotated[list[str], typer.Option("--eval", "-e", metavar="PATH", help="Eval suite files (the seeds' {instructions, inputs} JSON or eval records); repeatable.")] = ...,
    out: OutOpt = ...,
    format_: Annotated[Optional[str], typer.Option("--format", help="records | seed ({parameters, inputs, instructions, outputs}); .json out means seed.")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="safety-tuned-llamas (4 beams, 128 tokens, inputs dropped) | none [params: generate.preset].")] = None,
    max_new_tokens: GEN_FLAGS["max_new_tokens"] = None,
    num_beams: Annotated[Optional[int], typer.Option("--num-beams", help="Beam width; 1 = greedy [preset].")] = None,
    limit: LimitOpt = None,
    rejects: RejectsOpt = None,
    metrics: MetricsOpt = None,
    no_cache: NoCacheOpt = False,
    **llm,
) -> None:
    """A model (optionally with a LoRA adapter) answers eval suites: one generation record per prompt.

    Example: builder generate --eval evals/I-MaliciousInstructions.json --out data/gen/base.jsonl --limit 20
    """
    from builder.config import section
    from builder.llm import LLMSpec
    from builder.stages.generate import GenerateConfig, run

    params = section("generate")
    config = GenerateConfig.from_params(params, preset=preset, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                        limit=limit)
    spec = LLMSpec.from_params(params, **llm["llm_flags"])
    seed = format_ == "seed" or (format_ is None and out.suffix == ".json")
    finish(run(config, stage_io(eval_, out, rejects, metrics), llm=spec, use_cache=not no_cache, seed_format=seed))


@app.command()
@command
def score(
    in_: Annotated[str, typer.Option("--in", "-i", help="Generation records (builder generate or ingest --kind generation).")] = ...,
    out: OutOpt = ...,
    scorer: Annotated[Optional[list[str]], typer.Option("--scorer", "-s", metavar="NAME", help="refusal | reward-model | moderation | judge (repeatable) [params: score.scorers].")] = None,
    refusal_preset: Annotated[Optional[str], typer.Option("--refusal-preset", help="xstest-v1 | gcg-v1 | seeds-v1 [params: score.refusal_preset].")] = None,
    reward_model: Annotated[Optional[str], typer.Option("--reward-model", help="Sequence-classification model folder or hub id [params: score.reward_model].")] = None,
    moderation_model: Annotated[Optional[str], typer.Option("--moderation-model", help="Moderation model [params: score.moderation.model; omni-moderation-latest].")] = None,
    moderation_base_url: Annotated[Optional[str], typer.Option("--moderation-base-url", metavar="URL", help="Moderation server [params: score.moderation.base_url; $OPENAI_BASE_URL or api.openai.com]; the key comes from $OPENAI_API_KEY only.")] = None,
    judge_model: Annotated[Optional[str], typer.Option("--judge-model", help="Judge model [params: score.judge.model; smollm2-135m].")] = None,
    judge_backend: Annotated[Optional[str], typer.Option("--judge-backend", help="hf | openai [params: score.judge.backend].")] = None,
    judge_base_url: Annotated[Optional[str], typer.Option("--judge-base-url", metavar="URL", help="Judge server for --judge-backend openai (it must return logprobs) [params: score.judge.base_url].")] = None,
    dry_run: DryRunOpt = None,
    rejects: RejectsOpt = None,
    metrics: MetricsOpt = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Score generations: one score record per generation, with every scorer's value.

    Example: builder score --in data/gen/base.jsonl --out data/scores/base.jsonl --scorer refusal --scorer judge
    """
    from builder.config import section
    from builder.stages.score import ScoreConfig, run

    config = ScoreConfig.load(section("score"), scorers=scorer or None, refusal_preset=refusal_preset,
                              reward_model=reward_model, use_cache=False if no_cache else None,
                              moderation_flags={"model": moderation_model, "base_url": moderation_base_url,
                                                "dry_run": dry_run},
                              judge_flags={"model": judge_model, "backend": judge_backend, "base_url": judge_base_url,
                                           "dry_run": dry_run})
    finish(run(config, stage_io([in_], out, rejects, metrics)))


@app.command()
@command
def report(
    in_: Annotated[list[str], typer.Option("--in", "-i", metavar="PATH", help="Score files (builder score), or a folder of them; repeatable.")] = ...,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder: metrics.json, plots.csv, refusal.png, summary.md.")] = ...,
    benign: Annotated[Optional[list[str]], typer.Option("--benign", metavar="SUITE", help="A benign suite (repeatable): refusals there are exaggerated safety [params: report.benign_suites].")] = None,
) -> None:
    """Refusal rate and harmfulness per model and suite with 95 % CIs; metrics, plot data, PNG, Markdown.

    Example: builder report --in data/scores/base.jsonl --out reports/eval
    """
    from builder.config import section
    from builder.report import ReportConfig, run

    config = ReportConfig.from_params(section("report"), benign_suites=benign or None)
    finish(run(config, stage_io(in_, out, None, None)))
