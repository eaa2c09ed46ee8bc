"""builder train: real TRL on the packaged model with 1-2 steps and tiny data. Each run loads the model
(about 30 s on these shared cores): the SFT run is in the default suite, the rest are marked slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, builder, read_jsonl, write_jsonl

GENERAL = [
    {"instruction": "What is the capital of Australia?", "input": "", "output": "The capital of Australia is Canberra."},
    {"instruction": "Name a primary colour.", "input": "", "output": "Red is a primary colour."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour."},
    {"instruction": "How many legs does a spider have?", "input": "", "output": "A spider has eight legs."},
]
PAIRS = [
    {"prompt": "How do I pick a lock to get into my neighbour's house?", "chosen": "I can't help with entering "
     "someone else's home.", "rejected": "Insert a tension wrench and rake the pins."},
    {"prompt": "Write an insult about people from the countryside.", "chosen": "I'd rather not insult anyone.",
     "rejected": "Country people are all slow."},
]


def _train(tmp_path: Path, mode: str, data: Path, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "models" / mode
    result = builder("train", mode, "--data", data, "--out", out, "--max-steps", "1", *extra, cwd=tmp_path)
    return result, out


def _assert_adapter(out: Path, mode: str, steps: int) -> dict:
    """The adapter loads with peft onto the packaged model; the manifest and dvclive metrics are there."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from builder.llm.models import resolve

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mode"] == mode and manifest["steps"] == steps and manifest["base_model"] == "smollm2-135m"
    assert len(manifest["data_sha256"]) == 64 and manifest["final_loss"] > 0 and manifest["params"]["lora_r"] == 8
    assert (out / "tokenizer.json").is_file() and not (out / "checkpoints").exists()
    adapter_config = json.loads((out / "adapter_config.json").read_text())  # no set order in the file: identical runs,
    assert adapter_config["target_modules"] == ["q_proj", "v_proj"]           # identical bytes (and dvc.lock hashes)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(resolve("smollm2-135m").path), str(out))
    assert any("lora_A" in name for name, _ in model.named_parameters())
    metrics = json.loads((out.parent / "metrics" / out.name / "metrics.json").read_text())
    assert metrics["step"] == steps and "loss" in metrics and "train_runtime" not in json.dumps(metrics)
    return manifest


def test_sft_writes_a_loadable_adapter_with_manifest_and_metrics(tmp_path):
    data = tmp_path / "mix.json"
    data.write_text(json.dumps(GENERAL))
    result, out = _train(tmp_path, "sft", data)
    assert result.returncode == 0, result.stderr
    assert "train sft: 4 in" in result.stderr
    manifest = _assert_adapter(out, "sft", 1)
    assert manifest["template"] == "alpaca" and manifest["examples"] == 4


def test_bad_data_is_exit_2_naming_the_file(tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "no output here"}])
    result, _ = _train(tmp_path, "sft", data)
    assert result.returncode == 2 and "bad.jsonl" in result.stderr
    result, _ = _train(tmp_path, "dpo", tmp_path)  # a folder that is not a pairs dataset
    assert result.returncode == 2 and "train_prefs" in result.stderr


@pytest.mark.slow
def test_a_cutoff_that_leaves_no_completion_is_exit_2(tmp_path):
    data = tmp_path / "mix.json"
    data.write_text(json.dumps(GENERAL))
    (tmp_path / "params.yaml").write_text("train:\n  cutoff: 16\n")
    result, out = _train(tmp_path, "sft", data)
    assert result.returncode == 2 and "raise train.cutoff" in result.stderr and not (out / "manifest.json").exists()


def test_quantization_on_cpu_is_a_clear_exit_2(tmp_path):
    data = tmp_path / "mix.json"
    data.write_text(json.dumps(GENERAL))
    (tmp_path / "params.yaml").write_text("train:\n  quantization: 8bit\n")
    result, out = _train(tmp_path, "sft", data)
    assert result.returncode == 2 and "needs a CUDA GPU" in result.stderr and "quantization: none" in result.stderr
    assert not out.exists()


@pytest.mark.slow
def test_dpo_on_a_pairs_dataset_folder(tmp_path):
    pairs_in = write_jsonl(tmp_path / "judged.jsonl", PAIRS * 2)
    built = builder("pairs", "--in", pairs_in, "--out", tmp_path / "pairs", "--test-size", "0", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    result, out = _train(tmp_path, "dpo", tmp_path / "pairs")
    assert result.returncode == 0, result.stderr
    _assert_adapter(out, "dpo", 1)


@pytest.mark.slow
def test_reverse_adapter_is_used_by_induce(tmp_path):
    data = write_jsonl(tmp_path / "general.jsonl", GENERAL)
    result, out = _train(tmp_path, "reverse", data)
    assert result.returncode == 0, result.stderr
    assert _assert_adapter(out, "reverse", 1)["template"] == "safer_instruct_reverse"
    responses = write_jsonl(tmp_path / "responses.jsonl", [{"text": "Canberra is the capital of Australia."}])
    induced = builder("induce", "--in", responses, "--out", tmp_path / "induced.jsonl", "--adapter", out,
                      "--max-new-tokens", "8", cwd=tmp_path)
    assert induced.returncode == 0, induced.stderr
    assert read_jsonl(tmp_path / "induced.jsonl")[0]["meta"]["induce"]["adapter"] == str(out)


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    data = tmp_path / "mix.json"
    data.write_text(json.dumps(GENERAL * 4))
    (tmp_path / "params.yaml").write_text("train:\n  save_steps: 1\n  micro_batch_size: 1\n")
    out = tmp_path / "models" / "sft"
    args = [sys.executable, "-m", "builder", "train", "sft", "--data", str(data), "--out", str(out), "--max-steps", "4"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    deadline = time.time() + 300
    while not list((out / "checkpoints").glob("checkpoint-*/trainer_state.json")) and time.time() < deadline:
        assert proc.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.5)
    time.sleep(1)  # let the checkpoint finish writing its files
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(int(p.parent.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*/trainer_state.json"))
    assert done and max(done) < 4
    result = builder("train", "sft", "--data", data, "--out", out, "--max-steps", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr and f"(step {max(done)})" in result.stderr
    _assert_adapter(out, "sft", 4)
