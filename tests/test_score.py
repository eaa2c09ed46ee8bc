"""score: refusal presets with their own rules, a real (tiny, random) reward model, batched."""

from __future__ import annotations

import json

import pytest

from builder.scoring.refusal import PRESETS, refused
from tests.conftest import builder, read_jsonl, write_jsonl


def generation(instruction: str, output: str, model: str = "m", suite: str = "s") -> dict:
    from builder.records import record_id

    rec = {"instruction": instruction, "suite": suite, "output": output, "model": model, "adapter": None}
    return {"id": record_id("generation", rec), **rec}


def test_each_preset_keeps_its_own_rule():
    outputs = ["I'm sorry, I can't.", "  SORRY, no.", "Sure. Doing that is illegal in most places.", "Here you go"]
    # XSTest: lower-cased, phrase at the start.
    assert refused(outputs, PRESETS["xstest-v1"]) == [True, True, False, False]
    # GCG: case-sensitive, anywhere (the long answer mentioning "illegal" counts as a refusal).
    assert refused(outputs, PRESETS["gcg-v1"]) == [True, False, True, False]


def test_score_cli_writes_one_record_per_generation_with_every_scorer(tmp_path):
    gens = write_jsonl(tmp_path / "g.jsonl", [generation("a", "I cannot help with that."), generation("b", "Sure!")])
    run = builder("score", "--in", gens, "--out", tmp_path / "s.jsonl", "--scorer", "refusal",
                  "--metrics", tmp_path / "m.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    scores = read_jsonl(tmp_path / "s.jsonl")
    assert [s["scores"] for s in scores] == [{"refusal": True}, {"refusal": False}]
    assert scores[0]["meta"]["score"]["scorers"]["refusal"]["preset"] == "xstest-v1"
    assert json.loads((tmp_path / "m.json").read_text())["by_scorer"] == {"refusal": 2}
    assert builder("validate", tmp_path / "s.jsonl", "--kind", "score", cwd=tmp_path).returncode == 0


def test_unknown_scorer_and_missing_reward_model_are_bad_input(tmp_path):
    gens = write_jsonl(tmp_path / "g.jsonl", [generation("a", "x")])
    for extra in (["--scorer", "vibes"], ["--scorer", "reward-model"]):
        run = builder("score", "--in", gens, "--out", tmp_path / "s.jsonl", *extra, cwd=tmp_path)
        assert run.returncode == 2, run.stderr


@pytest.fixture
def tiny_reward_model(smollm2_dir, tmp_path):
    """A randomly initialised Llama sequence classifier with the packaged tokenizer: real loading and
    batching code, values that mean nothing."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, num_labels=1,
                         pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    model = LlamaForSequenceClassification(config)
    folder = tmp_path / "rm"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.slow  # converts the packaged model for its tokenizer once per session (~60 s on 2 shared cores)
def test_reward_model_batched_equals_one_at_a_time_and_keeps_order(tiny_reward_model, tmp_path):
    from builder.scoring.reward_model import RewardModelScorer

    records = [generation(f"question {i}", "word " * (1 + 7 * i)) for i in range(6)]
    scorer = RewardModelScorer(str(tiny_reward_model), batch_size=4, max_length=32)
    texts = scorer.texts(records)
    assert texts[0] == "\n\nHuman: question 0\n\nAssistant: word "
    batched = scorer.logits0(texts)
    single = [scorer.logits0([t], batch_size=1)[0] for t in texts]
    assert batched == pytest.approx(single, abs=1e-4)
    assert len(set(round(v, 5) for v in batched)) > 1  # real, differing outputs

    gens = write_jsonl(tmp_path / "g.jsonl", records)
    run = builder("score", "--in", gens, "--out", tmp_path / "s.jsonl", "--scorer", "refusal", "--scorer",
                  "reward-model", "--reward-model", tiny_reward_model, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    values = [s["scores"]["reward-model"] for s in read_jsonl(tmp_path / "s.jsonl")]
    assert values == pytest.approx(RewardModelScorer(str(tiny_reward_model)).logits0(texts), abs=1e-4)  # max_length 512
