"""Training examples from builder's own outputs, read as they are:

- sft: SFT records (a mix's Alpaca .json list, .jsonl, .parquet) rendered with the alpaca template:
  prompt = the template with instruction (and input), completion = output (loss on the completion only).
- reverse: the same records swapped for Safer-Instruct's inducer: prompt = the safer_instruct_reverse
  template filled with the output, completion = the instruction.
- dpo: preference records {prompt, chosen, rejected}: the pairs dataset folder (its train_prefs split)
  or any preference file (pairs.jsonl).

With a chat template (the packaged SmolLM2 has one) the rendered prompt becomes the user turn and the
completion the assistant turn, because that is how `builder induce` / `generate` send the same prompt
to the same model (hf backend: the chat template whenever the model has one); training in another
format than the one used at inference would teach the adapter the wrong thing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from builder.errors import BadInput
from builder.validate import load_records

PAIRS_TRAIN_GLOB = "data/train_prefs-*.parquet"  # builder pairs' train split (builder/stages/pairs.py)


def data_files(path: str) -> list[Path]:
    """The files a --data argument stands for: a file, or a pairs dataset folder's train split."""
    given = Path(path)
    if given.is_dir():
        files = sorted(given.glob(PAIRS_TRAIN_GLOB))
        if not files:
            raise BadInput(f"--data {path}: a folder must be a `builder pairs` dataset ({PAIRS_TRAIN_GLOB}); "
                           "or give a records file (.json, .jsonl, .parquet)")
        return files
    if not given.is_file():
        raise BadInput(f"--data {path}: no such file or folder")
    return [given]


def sha256_of(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_examples(mode: str, files: list[Path], template_name: str | None) -> list[dict]:
    """Plain-text examples: {prompt, completion} (sft, reverse) or {prompt, chosen, rejected} (dpo).
    Bad records are bad input (exit 2) naming the file and record, like every stage's input."""
    from builder.prompts import load_template

    kind = "preference" if mode == "dpo" else "sft"
    records = [rec for file in files for rec in load_records(str(file), kind)]
    if not records:
        raise BadInput(f"--data {files[0]}: no {kind} records to train on")
    template = load_template(template_name) if template_name else None
    if mode == "dpo":
        render = template.render if template else (lambda instruction, **_: instruction)
        return [{"prompt": render(instruction=r["prompt"], input=""), "chosen": r["chosen"], "rejected": r["rejected"]}
                for r in records]
    if mode == "sft":
        return [{"prompt": template.render(instruction=r["instruction"], input=r.get("input") or "", output=""),
                 "completion": r["output"]} for r in records]
    # reverse: the response is the prompt and the instruction (with its input, if any) the target
    return [{"prompt": template.render(output=r["output"], instruction="", input=""),
             "completion": "\n\n".join(p for p in (r["instruction"], r.get("input") or "") if p.strip())}
            for r in records]


def as_chat(examples: list[dict]) -> list[dict]:
    """The conversational form TRL applies the chat template to: prompt = the user turn, the rest
    assistant turns."""
    return [{key: [{"role": "user" if key == "prompt" else "assistant", "content": text}] for key, text in ex.items()}
            for ex in examples]
