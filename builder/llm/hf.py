"""Local generation with transformers: batched (length-sorted batches, left padding), the model's chat
template when it has one, greedy / beam / seeded sampling, LoRA adapters, 8/4-bit on CUDA, fp32 on CPU.

Under greedy decoding the batched outputs equal a one-prompt-at-a-time loop's (left padding with an
attention mask and position ids derived from it; sorting by length keeps padding small).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from builder import console
from builder.errors import BadInput, RunFailed
from builder.llm.base import Completion, Emit, Failure, GenParams, Request, RunStats, now_iso
from builder.llm.models import resolve


def _files_fingerprint(folder: Path, content: bool) -> str:
    """What identifies a local model or adapter folder in cache keys: file contents (adapters are small)
    or names, sizes and modification times (full models are big)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(path.relative_to(folder)).encode())
        if content:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        else:
            st = path.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class HFBackend:
    kind = "hf"

    def __init__(self, spec):
        self.spec = spec
        self.resolved = resolve(spec.model, convert=False)  # converted on first load, not for a cached rerun
        self.adapter = None
        if spec.adapter:
            adapter = Path(spec.adapter).expanduser()
            if not (adapter / "adapter_config.json").is_file():
                raise BadInput(f"--adapter {spec.adapter}: not a PEFT adapter folder (no adapter_config.json)")
            self.adapter = adapter.resolve()
        self.quant = None
        if spec.load_in_8bit or spec.load_in_4bit:
            import torch

            wanted = "4bit" if spec.load_in_4bit else "8bit"
            if torch.cuda.is_available():
                self.quant = wanted
            else:
                console.warning(f"load_in_{wanted} needs a CUDA GPU (bitsandbytes); none found, so the model is "
                                "loaded in fp32 on the CPU instead")
        self._identity = None
        self.model = None
        self.tokenizer = None

    # ----------------------------------------------------------------------------------- identity

    def _has_chat_template(self) -> bool:
        if self.resolved.packaged:
            return True  # every packaged model is an instruct model with a chat template
        folder = Path(self.resolved.path)
        if folder.is_dir():
            if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
                return True
            config = folder / "tokenizer_config.json"
            if config.is_file():
                return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
            return False
        self._load_tokenizer()
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def chat(self) -> bool:
        if self.spec.use_chat_template is None:
            if not hasattr(self, "_chat"):
                self._chat = self._has_chat_template()
            return self._chat
        return bool(self.spec.use_chat_template)

    def identity(self) -> dict:
        if self._identity is None:
            folder = Path(self.resolved.path)
            model_id = self.resolved.name
            if folder.is_dir() and not self.resolved.packaged:
                model_id = f"{self.resolved.name}@{_files_fingerprint(folder, content=False)}"
            self._identity = {
                "backend": "hf",
                "model": model_id,
                "adapter": f"{self.adapter}@{_files_fingerprint(self.adapter, content=True)}" if self.adapter else None,
                "quant": self.quant,
                "chat_template": self.chat,
            }
        return self._identity

    @property
    def model_name(self) -> str:
        return self.resolved.name

    # ----------------------------------------------------------------------------------- loading

    def _load_tokenizer(self):
        if self.tokenizer is None:
            if self.resolved.packaged:
                self.resolved = resolve(self.resolved.name)  # converts once into the cache folder
            from transformers import AutoTokenizer

            try:
                self.tokenizer = AutoTokenizer.from_pretrained(self.resolved.path)
            except OSError as e:
                raise RunFailed(f"cannot load the tokenizer of {self.resolved.path}: {str(e).splitlines()[0]}") from None
            self.tokenizer.padding_side = "left"
            if self.tokenizer.pad_token_id is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
        return self.tokenizer

    def _load(self):
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own bar is the one that matters
        self._load_tokenizer()
        kwargs: dict = {}
        if self.quant:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)
                                             if self.quant == "4bit" else BitsAndBytesConfig(load_in_8bit=True))
            kwargs["device_map"] = "auto"
        elif torch.cuda.is_available():
            kwargs["dtype"] = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            kwargs["device_map"] = "auto"
        else:
            kwargs["dtype"] = torch.float32  # bf16 is far slower batched on CPU (ENVIRONMENT.md)
        try:
            model = AutoModelForCausalLM.from_pretrained(self.resolved.path, **kwargs)
        except OSError as e:
            raise RunFailed(f"cannot load model {self.resolved.path}: {str(e).splitlines()[0]}") from None
        if self.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(self.adapter))
        model.eval()
        self.model = model
        self.device = next(model.parameters()).device

    # ----------------------------------------------------------------------------------- prompts

    def encode(self, request: Request) -> list[int]:
        """Token ids for a request. Record text is data, never control: "<|im_start|>system ..." inside a
        record is tokenised as plain text (split_special_tokens), so only the chat template's own
        markers become special tokens."""
        tok = self._load_tokenizer()
        if self.chat and getattr(tok, "chat_template", None):
            return self._encode_chat(tok, request.messages_list())
        if request.messages is not None:  # no chat template: a plain rendering
            text = "".join(f"{role}: {content}\n\n" for role, content in request.messages) + "assistant: "
        else:
            text = request.prompt
        return tok(text, split_special_tokens=True)["input_ids"]

    def _encode_chat(self, tok, messages: list[dict]) -> list[int]:
        """Render the template around placeholders, then tokenise the template's pieces with their
        special tokens and each message's content without."""
        import re
        import uuid

        marks = [f"@@content-{uuid.uuid4().hex}-{n}@@" for n in range(len(messages))]
        shaped = [{**m, "content": mark} for m, mark in zip(messages, marks)]
        text = tok.apply_chat_template(shaped, add_generation_prompt=True, tokenize=False)
        pieces = re.split("(" + "|".join(map(re.escape, marks)) + ")", text)
        if sorted(p for p in pieces if p in marks) != sorted(marks):
            raise RunFailed(f"the chat template of {self.resolved.path} rewrites message contents; cannot keep "
                            "record text apart from its control tokens (use --no-chat-template)")
        content_of = {mark: m["content"] for mark, m in zip(marks, messages)}
        ids: list[int] = []
        for piece in pieces:
            if piece in content_of:
                ids += tok(content_of[piece], add_special_tokens=False, split_special_tokens=True)["input_ids"]
            elif piece:
                ids += tok(piece, add_special_tokens=False)["input_ids"]
        return ids

    # ----------------------------------------------------------------------------------- running

    def run(self, items: Sequence[tuple[str, Request]], emit: Emit, stats: RunStats, store=None) -> None:
        if not items:
            return
        self._load()

        generate = [(ck, r) for ck, r in items if r.choices is None]
        score = [(ck, r) for ck, r in items if r.choices is not None]
        groups: dict[GenParams, list] = defaultdict(list)
        for ck, r in generate:
            groups[r.params].append((ck, r))
        for params, group in groups.items():
            self._generate_group(params, group, emit, stats)
        if score:
            self._score(score, emit, stats)

    def _generate_group(self, params: GenParams, group, emit: Emit, stats: RunStats) -> None:
        import torch

        encoded = [(ck, r, self.encode(r)) for ck, r in group]
        # Longest first: memory trouble shows on the first batch, not after an hour.
        encoded.sort(key=lambda x: -len(x[2]))
        size = max(1, int(self.spec.batch_size))
        for start in range(0, len(encoded), size):
            batch = encoded[start:start + size]
            try:
                outputs = self._generate(params, [ids for _, _, ids in batch])
            except torch.OutOfMemoryError:
                raise RunFailed(f"out of memory generating a batch of {len(batch)}; lower --batch-size") from None
            except Exception as e:  # a model that cannot generate: one reason per request, kept raw
                for ck, r, _ in batch:
                    emit(ck, Failure(r.key, f"generation failed: {type(e).__name__}: {e}", raw=repr(e)))
                continue
            stats.sent += 1
            for (ck, r, ids), (text, n_new, finish) in zip(batch, outputs):
                stats.prompt_tokens += len(ids)
                stats.completion_tokens += n_new
                emit(ck, Completion(r.key, text, finish, len(ids), n_new, 0.0, self.model_name, False, None, now_iso()))

    def generation_config(self, params: GenParams):
        from transformers import GenerationConfig

        tok = self.tokenizer
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = tok.eos_token_id
        sample = params.temperature > 0 and params.num_beams == 1
        kwargs = dict(max_new_tokens=params.max_new_tokens, num_beams=params.num_beams, do_sample=sample,
                      pad_token_id=tok.pad_token_id, eos_token_id=eos, bos_token_id=tok.bos_token_id)
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or 0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs["stop_strings"] = list(params.stop)
        return GenerationConfig(**kwargs)

    def _generate(self, params: GenParams, batch: list[list[int]]) -> list[tuple[str, int, str]]:
        """Generate for prompts already tokenized; returns (text, new tokens, finish reason) each."""
        import torch

        tok = self.tokenizer
        width = max(len(ids) for ids in batch)
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=self.device)
        config = self.generation_config(params)
        if params.temperature > 0 and params.num_beams == 1:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config,
                                      tokenizer=tok if params.stop else None)
        eos = config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        results = []
        for row in out[:, width:].tolist():
            n = len(row)
            finish = "length"
            for i, t in enumerate(row):
                if t in eos_ids:
                    n, finish = i + 1, "stop"
                    break
            new = [t for t in row[:n] if t not in eos_ids]
            text = tok.decode(new, skip_special_tokens=True)
            for s in params.stop:
                cut = text.find(s)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
            results.append((text, n, finish))
        return results

    def _score(self, items, emit: Emit, stats: RunStats) -> None:
        """Log-probability of each choice as the continuation of the prompt: the sum of its token logprobs.
        When every choice of a request is one token (Yes / No), one forward pass of the prompt reads them
        all from the next-token distribution; longer choices get a pass each (prompt + choice)."""
        import torch

        tok = self.tokenizer
        rows = []  # (item index, prompt len, ids, [(choice, choice ids)])
        prompts = []
        for i, (ck, r) in enumerate(items):
            p = self.encode(r)
            prompts.append(p)
            tokens = [(choice, tok(choice, add_special_tokens=False)["input_ids"] or [tok.eos_token_id])
                      for choice in r.choices]
            if all(len(c) == 1 for _, c in tokens):
                rows.append((i, len(p), p, tokens))
            else:
                rows += [(i, len(p), p + c, [(choice, c)]) for choice, c in tokens]
        scores: dict[int, dict[str, float]] = defaultdict(dict)
        size = max(1, int(self.spec.batch_size))
        pad = tok.pad_token_id
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            width = max(len(ids) for _, _, ids, _ in chunk)
            ids = torch.tensor([x + [pad] * (width - len(x)) for _, _, x, _ in chunk], device=self.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for _, _, x, _ in chunk], device=self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask).logits
            stats.sent += 1
            for j, (i, plen, x, choices) in enumerate(chunk):
                # log-softmax only where a choice's tokens are predicted (not over every position)
                longest = max(len(c) for _, c in choices)
                logp = torch.log_softmax(logits[j, plen - 1:plen - 1 + longest].float(), dim=-1)
                for choice, c in choices:
                    scores[i][choice] = float(logp[torch.arange(len(c)), torch.tensor(c)].sum())
        for i, (ck, r) in enumerate(items):
            lp = scores[i]
            best = max(r.choices, key=lambda c: lp[c])
            stats.prompt_tokens += len(prompts[i])
            emit(ck, Completion(r.key, best, "choices", len(prompts[i]), 0, 0.0, self.model_name, False, dict(lp), now_iso()))

    def close(self) -> None:
        self.model = None
