"""TrainConfig: one typed config for the three modes; ``train:`` in params.yaml, then ``train.<mode>:``
(e.g. ``train.dpo.learning_rate``), then command-line flags. Defaults are the seeds' (Alpaca-LoRA as used
by Safety-Tuned LLaMAs and Safer-Instruct): LoRA r 8, alpha 16, dropout 0.05 on q_proj and v_proj,
lr 3e-4, 3 epochs, cutoff 256, micro-batch 4; DPO beta 0.1."""

from __future__ import annotations

from dataclasses import dataclass, field

from builder.config import StageConfig
from builder.errors import BadInput
from builder.train import MODES

PRECISIONS = ("auto", "fp32", "bf16")
QUANTIZATIONS = ("none", "8bit", "4bit")
# The template each mode renders its examples with (DPO prompts are used as they are).
DEFAULT_TEMPLATES = {"sft": "alpaca", "reverse": "safer_instruct_reverse", "dpo": None}


@dataclass
class TrainConfig(StageConfig):
    section_name = "train"

    mode: str = field(default="sft", metadata={"flag_only": True, "help": "sft | dpo | reverse (the subcommand)."})
    model: str = field(default="smollm2-135m", metadata={"help": "Base model: packaged name, local folder or hub id."})
    adapter: str | None = field(default=None, metadata={"help": "Start from this LoRA adapter folder (e.g. DPO after SFT)."})
    template: str | None = field(default=None, metadata={"help": "Prompt template (default: alpaca for sft, safer_instruct_reverse for reverse, none for dpo)."})
    use_chat_template: bool | None = field(default=None, metadata={"help": "Wrap prompts in the model's chat template: null = when it has one (as generation does)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    target_modules: list = field(default_factory=lambda: ["q_proj", "v_proj"], metadata={"help": "Modules LoRA adapts."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate."})
    epochs: float = field(default=3.0, metadata={"help": "Passes over the data (when max_steps is not set)."})
    max_steps: int | None = field(default=None, metadata={"help": "Stop after this many optimizer steps (overrides epochs)."})
    cutoff: int = field(default=256, metadata={"help": "Longest example in tokens (longer ones are truncated)."})
    micro_batch_size: int = field(default=4, metadata={"help": "Examples per forward pass (per device)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step (the seeds: 32, for batch 128)."})
    warmup_steps: int = field(default=10, metadata={"help": "Linear warmup steps."})
    beta: float = field(default=0.1, metadata={"help": "DPO: strength of the KL term."})
    seed: int = field(default=0, metadata={"help": "Seed of initialisation and data order."})
    precision: str = field(default="auto", metadata={"help": "auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16."})
    quantization: str = field(default="none", metadata={"help": "none | 8bit | 4bit (QLoRA): bitsandbytes, CUDA only."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps (a killed run resumes from the last)."})
    logging_steps: int = field(default=1, metadata={"help": "Log loss to dvclive every N steps."})
    keep_checkpoints: bool = field(default=False, metadata={"help": "Keep OUT/checkpoints after a finished run."})

    def __post_init__(self):
        for name, value, accepted in (("mode", self.mode, MODES), ("precision", self.precision, PRECISIONS),
                                      ("quantization", self.quantization, QUANTIZATIONS)):
            if value not in accepted:
                raise BadInput(f"train.{name}: {value!r} is not one of {', '.join(accepted)}")
        for name in ("lora_r", "lora_alpha", "cutoff", "micro_batch_size", "gradient_accumulation_steps",
                     "save_steps", "logging_steps"):
            if int(getattr(self, name)) < 1:
                raise BadInput(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise BadInput(f"--max-steps must be at least 1, got {self.max_steps}")

    @classmethod
    def ignored_keys(cls) -> set[str]:
        return set(MODES)  # the per-mode subsections, merged by for_mode

    @classmethod
    def for_mode(cls, mode: str, params: dict | None = None, **flags) -> TrainConfig:
        """``train:`` keys, then ``train.<mode>:`` keys, then flags (None = not given)."""
        params = dict(params or {})
        specific = params.get(mode) or {}
        if not isinstance(specific, dict):
            raise BadInput(f"params.yaml: train.{mode}: expected a mapping of train keys")
        merged = {k: v for k, v in params.items() if k not in MODES}
        merged.update(specific)
        return cls.from_params(merged, mode=mode, **flags)

    @property
    def template_name(self) -> str | None:
        return self.template or DEFAULT_TEMPLATES[self.mode]
