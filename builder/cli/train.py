"""`builder train sft|dpo|reverse`: LoRA fine-tuning on builder's outputs (builder/train/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from builder import console
from builder.cli import app, command

train_app = typer.Typer(
    help="LoRA fine-tuning on builder's outputs (TRL): sft on a mix, dpo on pairs, reverse (the Safer-Instruct "
         "inducer).\n\nExample: builder train sft --data data/mix/mix.json --out models/sft --max-steps 5",
    no_args_is_help=True)
app.add_typer(train_app, name="train")

DataOpt = Annotated[str, typer.Option("--data", help="Training data: SFT records (.json Alpaca list, .jsonl, .parquet); "
                                                     "dpo: a `builder pairs` folder (train_prefs split) or a preference file.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Adapter folder to write (checkpoints go to OUT/checkpoints).")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Base model: smollm2-135m (packaged), a local folder or a hub id [params: train.model].")]
AdapterOpt = Annotated[Optional[str], typer.Option("--adapter", help="Continue training this LoRA adapter folder (e.g. dpo after sft) [params: train.adapter].")]
MaxStepsOpt = Annotated[Optional[int], typer.Option("--max-steps", help="Stop after N optimizer steps (overrides epochs) [params: train.max_steps].")]
MetricsOpt = Annotated[Optional[Path], typer.Option("--metrics", help="dvclive folder for the loss curve [default: OUT/../metrics/OUT-name].")]
KeepOpt = Annotated[Optional[bool], typer.Option("--keep-checkpoints", help="Keep OUT/checkpoints after the run [params: train.keep_checkpoints].")]


def _train(mode: str, data: str, out: Path, model, adapter, max_steps, metrics, keep) -> None:
    from builder.config import section
    from builder.stages.base import StageIO
    from builder.train.config import TrainConfig
    from builder.train.run import run

    config = TrainConfig.for_mode(mode, section("train"), model=model, adapter=adapter, max_steps=max_steps,
                                  keep_checkpoints=keep)
    result = run(config, StageIO(inputs=(data,), out=out, metrics=metrics))
    console.info(result.summary())
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@train_app.command("sft")
@command
def sft(data: DataOpt = ..., out: OutOpt = ..., model: ModelOpt = None, adapter: AdapterOpt = None,
        max_steps: MaxStepsOpt = None, metrics: MetricsOpt = None, keep_checkpoints: KeepOpt = None) -> None:
    """Supervised LoRA tuning on SFT records under the alpaca template (loss on the response).

    Example: builder train sft --data data/mix/family/n30.json --out models/sft/n30
    """
    _train("sft", data, out, model, adapter, max_steps, metrics, keep_checkpoints)


@train_app.command("dpo")
@command
def dpo(data: DataOpt = ..., out: OutOpt = ..., model: ModelOpt = None, adapter: AdapterOpt = None,
        max_steps: MaxStepsOpt = None, metrics: MetricsOpt = None, keep_checkpoints: KeepOpt = None) -> None:
    """DPO LoRA tuning on preference pairs (beta from params; the adapter off is the reference model).

    Example: builder train dpo --data data/pairs --out models/dpo
    """
    _train("dpo", data, out, model, adapter, max_steps, metrics, keep_checkpoints)


@train_app.command("reverse")
@command
def reverse(data: DataOpt = ..., out: OutOpt = ..., model: ModelOpt = None, adapter: AdapterOpt = None,
            max_steps: MaxStepsOpt = None, metrics: MetricsOpt = None, keep_checkpoints: KeepOpt = None) -> None:
    """Reversed instruction tuning (Safer-Instruct's inducer): output -> instruction; use it with induce --adapter.

    Example: builder train reverse --data data/valid/general.jsonl --out models/reverse && builder induce --adapter models/reverse ...
    """
    _train("reverse", data, out, model, adapter, max_steps, metrics, keep_checkpoints)
