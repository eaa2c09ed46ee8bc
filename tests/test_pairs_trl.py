"""The dataset `builder pairs` writes is read unchanged by `datasets.load_dataset` and TRL's DPOTrainer."""

from __future__ import annotations

from tests.conftest import builder, write_jsonl


def test_dpo_trainer_takes_one_step_on_the_published_dataset(smollm2_dir, tmp_path):
    records = [{"prompt": f"Tell me something mean about my neighbour number {n}.",
                "chosen": "I'd rather not insult anyone, but I can help you talk to your neighbour calmly.",
                "rejected": f"Neighbour {n} is an idiot and everyone knows it.",
                "category": ("hate", "illegal")[n % 2]} for n in range(8)]
    write_jsonl(tmp_path / "judged.jsonl", records)
    result = builder("pairs", "--in", tmp_path / "judged.jsonl", "--out", tmp_path / "pairs", "--test-size", "0.25",
                     "--export", "conversational", cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    ds = datasets.load_dataset(str(tmp_path / "pairs"))
    assert ds["train_prefs"].num_rows == 6 and ds["test_prefs"].num_rows == 2  # 25 % of each category
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, beta=0.1,
                     use_cpu=True, bf16=False, gradient_checkpointing=False, max_length=64, report_to=[],
                     logging_steps=1, save_strategy="no")
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds["train_prefs"], processing_class=tokenizer,
                         peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    output = trainer.train()
    assert output.global_step == 1 and output.training_loss > 0
    conversational = datasets.load_dataset(str(tmp_path / "pairs"), "conversational")["train_prefs"][0]
    assert conversational["prompt"][0]["role"] == "user" and conversational["chosen"][0]["role"] == "assistant"
