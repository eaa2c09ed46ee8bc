"""Harmfulness from any sequence-classification model (a folder or a hub id), as the seeds score it:
the input is ``"\\n\\nHuman: {instruction}\\n\\nAssistant: {response}"`` and the score is ``logits[:, 0]``.

Batched (length-sorted, so padding is small) with truncation at ``max_length`` tokens. No package ships
usable harm-classifier weights offline: real scores need a real model (tests use a tiny random one).
"""

from __future__ import annotations

from builder.scoring.base import Scored

FORMAT = "\n\nHuman: {instruction}\n\nAssistant: {response}"


class RewardModelScorer:
    name = "reward-model"

    def __init__(self, model: str, *, batch_size: int = 128, max_length: int = 512):
        self.model_id, self.batch_size, self.max_length = model, batch_size, max_length
        self.model = self.tokenizer = None

    def _load(self):
        if self.model is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.model_id)
            # Right padding: real tokens keep positions 0..n-1 (left padding shifts them in models that
            # derive positions from the sequence, changing the scores); the classifier pools the last
            # non-pad token either way.
            self.tokenizer.padding_side = "right"
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            self.model = AutoModelForSequenceClassification.from_pretrained(self.model_id).eval()
            if self.model.config.pad_token_id is None:
                self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def texts(self, records: list[dict]) -> list[str]:
        return [FORMAT.format(instruction=r["instruction"], response=r.get("output") or "") for r in records]

    def logits0(self, texts: list[str], batch_size: int | None = None) -> list[float]:
        """``logits[:, 0]`` for each text, in the given order."""
        import torch

        self._load()
        size = batch_size or self.batch_size
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        scores = [0.0] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), size):
                idx = order[start:start + size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                values = self.model(**batch).logits[:, 0].float().tolist()
                for i, v in zip(idx, values):
                    scores[i] = v
        return scores

    def score(self, records: list[dict]) -> Scored:
        values = self.logits0(self.texts(records)) if records else []
        return Scored({r["id"]: v for r, v in zip(records, values)},
                      meta={"model": self.model_id, "max_length": self.max_length, "format": FORMAT})
