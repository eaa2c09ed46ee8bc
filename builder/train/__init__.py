"""builder train: LoRA fine-tuning on builder's own outputs (TRL's SFTTrainer and DPOTrainer).

- ``config``: TrainConfig, the typed params (``train:`` in params.yaml, ``train.<mode>:`` on top).
- ``data``: builder's outputs as training examples: SFT mixes, preference pairs, reversed SFT records.
- ``run``: the trainer run (``run(config, io) -> StageResult``): resumable checkpoints, dvclive
  metrics, the finished adapter folder with its manifest.
"""

MODES = ("sft", "dpo", "reverse")
