"""The trainer run: ``run(config, io) -> StageResult``.

io.inputs[0] is the data (file or pairs folder), io.out the adapter folder, io.metrics the dvclive
folder (default: OUT/../metrics/OUT-name). The run:

1. reads and checks the data first (bad data: exit 2 before any model is loaded);
2. checks the hardware against the params: 8/4-bit needs CUDA, and on CPU it is bad input (exit 2),
   not a silent fall back, because the adapter would then not be what params.yaml and the manifest
   say (bitsandbytes does load 8-bit on CPU, but trains no faster and the point of QLoRA is GPU memory);
3. trains with TRL (SFTTrainer / DPOTrainer, LoRA through ``peft_config``, no reference model for DPO:
   TRL switches the adapter off for the reference pass), checkpointing to OUT/checkpoints every
   ``save_steps``; a rerun after a kill resumes from the last checkpoint made with the same data and
   params (a fingerprint in OUT/checkpoints/run.json; other data or params start afresh);
4. writes the finished adapter, its tokenizer and manifest.json beside it, then swaps the folder in
   (the checkpoints are dropped unless ``keep_checkpoints``).

Everything written is deterministic for a given machine, data and params (no timings, no absolute paths
in the adapter folder or the metrics), so DVC hashes and committed metrics do not change on a rerun.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from builder import console
from builder.errors import BadInput
from builder.stages.base import StageIO, StageResult, as_jsonable
from builder.train.config import TrainConfig
from builder.train.data import as_chat, data_files, load_examples, sha256_of

CHECKPOINTS = "checkpoints"
# Trainer log keys that change from run to run; kept out of dvclive so committed metrics stay stable.
TIMING_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second")
# Files the trainer writes into the adapter folder that are either pickles of run-specific arguments or
# an empty model card naming a machine-specific path.
DROPPED_FILES = ("training_args.bin", "README.md")


def metrics_dir(io: StageIO) -> Path:
    out = Path(io.out)
    return Path(io.metrics) if io.metrics is not None else out.parent / "metrics" / out.name


def run(config: TrainConfig, io: StageIO) -> StageResult:
    from builder.llm.models import resolve

    if io.out is None:
        raise BadInput("--out DIR is required (the adapter folder)")
    files = data_files(io.input)
    examples = load_examples(config.mode, files, config.template_name)
    cuda = _check_hardware(config)
    resolved = resolve(config.model)
    out = Path(io.out)
    fingerprint = {"data_sha256": sha256_of(files), "model": resolved.name, "params": as_jsonable(config)}
    last = _resumable_checkpoint(out / CHECKPOINTS, fingerprint)

    trainer, chat = _trainer(config, resolved.path, examples, out / CHECKPOINTS, cuda, metrics_dir(io), last)
    kept = len(trainer.train_dataset)  # TRL drops examples whose completion the cutoff cuts away entirely
    if kept == 0:
        raise BadInput(f"--data {io.input}: train.cutoff {config.cutoff} tokens leaves no completion in any example "
                       "(the prompt, with the chat template, fills it); raise train.cutoff")
    if last:
        console.info(f"resuming from {last} (step {int(Path(last).name.split('-')[-1])})")
    output = trainer.train(resume_from_checkpoint=last)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    manifest = {
        "builder_version": _version(), "mode": config.mode, "base_model": resolved.name,
        "start_adapter": config.adapter,
        "data": [str(f) for f in files], "data_sha256": fingerprint["data_sha256"], "examples": len(examples),
        "template": config.template_name, "chat_template": chat,
        "steps": trainer.state.global_step, "final_loss": losses[-1] if losses else None,
        "train_loss": output.training_loss, "params": fingerprint["params"],
    }
    if trainer.is_world_process_zero():
        _finish(trainer, out, manifest, resolved.name, keep_checkpoints=config.keep_checkpoints)
    loss = f"{manifest['final_loss']:.4f}" if manifest["final_loss"] is not None else "n/a"
    dropped = [f"{len(examples) - kept} examples dropped: the cutoff ({config.cutoff} tokens) left no completion"] \
        if kept < len(examples) else []
    return StageResult(stage=f"train {config.mode}", read=len(examples), kept=examples[:kept], out=out,
                       notes=dropped + [f"{manifest['steps']} steps, final loss {loss}; adapter, tokenizer and manifest.json "
                              f"in {out}; training metrics in {metrics_dir(io)}"])


def _version() -> str:
    from builder import __version__

    return __version__


def _check_hardware(config: TrainConfig) -> bool:
    """True on CUDA. A quantized base needs CUDA: exit 2 on CPU (see the module doc for why)."""
    import torch

    cuda = torch.cuda.is_available()
    if config.quantization != "none" and not cuda:
        raise BadInput(f"train.quantization {config.quantization} (bitsandbytes QLoRA) needs a CUDA GPU and this "
                       "machine has none; set train.quantization: none (fp32 LoRA, what CPUs train) or run on a GPU")
    if config.precision == "bf16" and not cuda:
        console.warning("train.precision bf16 on CPU is 16-27x slower than fp32 here; precision: auto picks fp32")
    return cuda


def _resumable_checkpoint(folder: Path, fingerprint: dict) -> str | None:
    """The last checkpoint of an interrupted run with the same data and params, else None (and any
    checkpoints of another run are removed, so they cannot be resumed by mistake)."""
    from transformers.trainer_utils import get_last_checkpoint

    stamp = folder / "run.json"
    text = json.dumps(fingerprint, sort_keys=True, indent=1)
    if folder.is_dir():
        same = stamp.is_file() and stamp.read_text(encoding="utf-8") == text
        last = get_last_checkpoint(str(folder)) if same else None
        if last:
            return last
        if not same:
            console.info(f"{folder}: checkpoints of a run with other data or params; starting afresh")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    stamp.write_text(text, encoding="utf-8")
    return None


def _load_model(config: TrainConfig, path: str, cuda: bool):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if (config.precision == "bf16" or (config.precision == "auto" and cuda
                                                              and torch.cuda.is_bf16_supported())) else torch.float32
    kwargs: dict = {"dtype": dtype}
    if config.quantization != "none":
        from accelerate import PartialState
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
            if config.quantization == "4bit" else BitsAndBytesConfig(load_in_8bit=True))
        kwargs["device_map"] = {"": PartialState().local_process_index}  # one GPU per process under accelerate
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if config.quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if config.adapter:
        from peft import PeftModel

        if not (Path(config.adapter) / "adapter_config.json").is_file():
            raise BadInput(f"--adapter {config.adapter}: not a PEFT adapter folder (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, config.adapter, is_trainable=True)
    return model, dtype


def _trainer(config: TrainConfig, path: str, examples: list[dict], checkpoints: Path, cuda: bool,
             live_dir: Path, resuming: str | None):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, set_seed

    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    chat = bool(tokenizer.chat_template) if config.use_chat_template is None else config.use_chat_template
    dataset = Dataset.from_list(as_chat(examples) if chat else examples)
    model, dtype = _load_model(config, path, cuda)
    peft_config = None if config.adapter else LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    common = dict(
        output_dir=str(checkpoints), per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, learning_rate=config.learning_rate,
        num_train_epochs=config.epochs, max_steps=config.max_steps or -1, warmup_steps=config.warmup_steps,
        logging_steps=config.logging_steps, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=2, seed=config.seed, data_seed=config.seed, report_to="none",
        use_cpu=not cuda, bf16=dtype == torch.bfloat16, fp16=False, gradient_checkpointing=False,
        max_length=config.cutoff, dataloader_num_workers=0,
    )
    if config.mode == "dpo":
        from trl import DPOConfig, DPOTrainer

        args, trainer_class = DPOConfig(beta=config.beta, **common), DPOTrainer
    else:
        from trl import SFTConfig, SFTTrainer

        args, trainer_class = SFTConfig(**common), SFTTrainer
    live = _live(live_dir, resume=resuming is not None)
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=peft_config, callbacks=[_metrics_callback(live)])
    return trainer, chat


def _live(folder: Path, resume: bool):
    """dvclive on the main process only; no dvc.yaml rewrite and no experiment (the stage declares
    the metrics and plots)."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return None
    from dvclive import Live

    class FilesOnlyLive(Live):
        """dvclive writing its files only. Its git/DVC setup (experiments, Studio) is unused here, and
        it fails in a git repository without commits (dvclive reads HEAD before checking for one):
        a fresh `git init` then `dvc repro` is how many projects start."""

        def _init_dvc(self):
            self._dvc_file = self._init_dvc_file()

    return FilesOnlyLive(dir=str(folder), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)


def _metrics_callback(live):
    from transformers.integrations import DVCLiveCallback

    class TrainingMetrics(DVCLiveCallback):
        """transformers' DVCLiveCallback, logging at the trainer's own step (a resumed run continues
        the curve) without timings, and without dumping every TrainingArguments field (run-specific
        paths): the params are in manifest.json and params.yaml."""

        def setup(self, args, state, model):
            self._initialized = True

        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            if self.live is None:
                return
            self.live.step = state.global_step
            logs = {k: v for k, v in (logs or {}).items() if k not in TIMING_KEYS}
            super().on_log(args, state, control, model=model, logs=logs, **kwargs)

        def on_train_end(self, args, state, control, **kwargs):
            if self.live is not None:
                self.live.end()

    return TrainingMetrics(live=live)


def _finish(trainer, out: Path, manifest: dict, base_name: str, *, keep_checkpoints: bool) -> None:
    """The adapter, tokenizer and manifest built beside OUT and swapped in (no half-written folder)."""
    staging = out.parent / f".{out.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    trainer.processing_class.save_pretrained(str(staging))
    for name in DROPPED_FILES:
        (staging / name).unlink(missing_ok=True)
    adapter_config = staging / "adapter_config.json"
    config = json.loads(adapter_config.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_name  # the name, not this machine's cache path
    # peft keeps target_modules as a set: its order follows the process's hash seed, so two identical
    # runs would write different files (and dvc.lock hashes).
    for key in ("target_modules", "modules_to_save"):
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    checkpoints = out / CHECKPOINTS
    if keep_checkpoints and checkpoints.is_dir():
        os.replace(checkpoints, staging / CHECKPOINTS)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
