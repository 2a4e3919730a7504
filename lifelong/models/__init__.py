"""Models and tokenizers: tiny Llama presets built from a `transformers` config, or any causal LM
by hub id, local path, GGUF file or name in the model cache. Task tokens are added to the vocabulary
when missing; a pretrained base is described by a `BaseRef` (what a checkpoint stores on top of)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as transformers_logging

from lifelong.errors import UserError, first_line
from lifelong.models.gguf_import import cached_or_imported, require_gguf, sha256
from lifelong.paths import missing_model_path

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


@dataclass(frozen=True)
class Preset:
    """A tiny Llama-architecture model trained from scratch, for CPU runs and tests."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int


# tiny has 8 heads of width 16: with 4 heads of 32 the 2-layer model stalls near 90% on 2-digit
# addition (carries into the tens digit need several digits attended at once); 8 heads reach ~97%.
PRESETS: dict[str, Preset] = {
    "tiny": Preset(hidden_size=128, num_layers=2, num_heads=8, intermediate_size=512),
    "small": Preset(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=688),
    "base": Preset(hidden_size=512, num_layers=8, num_heads=8, intermediate_size=1376),
}


def build_tokenizer(vocabulary: list[str] | None, task_tokens: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `vocabulary` (whitespace-separated symbols), or a byte-level one
    when `vocabulary` is None. Task tokens are special tokens: matched whole, never split."""
    specials = [PAD, EOS, UNK, *task_tokens]
    if vocabulary is not None:
        vocab = {tok: i for i, tok in enumerate([*specials, *vocabulary])}
        tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.decoder = decoders.WordPiece(prefix="##")  # joins symbols with spaces
    else:
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        vocab = {tok: i for i, tok in enumerate([*specials, *sorted(alphabet)])}
        tok = Tokenizer(models.BPE(vocab, merges=[], unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def build_preset(name: str, vocab_size: int, max_length: int, overrides: dict | None = None):
    if name not in PRESETS:
        raise UserError(f"unknown model preset {name!r} (known: {', '.join(PRESETS)})")
    preset = {**PRESETS[name].__dict__, **(overrides or {})}
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=preset["hidden_size"],
        intermediate_size=preset["intermediate_size"],
        num_hidden_layers=preset["num_layers"],
        num_attention_heads=preset["num_heads"],
        num_key_value_heads=preset["num_heads"],
        max_position_embeddings=max_length,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def load_pretrained(
    path: str,
    task_tokens: list[str],
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
    dtype: str = "float32",
):
    """A causal LM, its tokenizer and the ids of the task tokens added to its vocabulary (whose
    embedding rows are new), by hub id or local path (hub ids need network access)."""
    kwargs = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        require_gguf()
        kwargs["gguf_file"] = gguf_file
    if problem := missing_model_path(path):
        raise UserError(problem)
    local = Path(path).expanduser()
    if local.exists():
        kwargs["local_files_only"] = True
        path = str(local)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        # a GGUF's de-quantisation takes tens of seconds: its bar stays; safetensors load in one
        with nullcontext() if gguf_file else no_progress_bars():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(f"could not load model {path!r}: {first_line(err)}") from err
    except Exception as err:
        if type(err).__name__ != "SafetensorError":
            raise
        bad = unreadable_weights(local) if local.is_dir() else None
        raise UserError(f"could not load model {path!r}: {bad or first_line(err)}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    missing = [t for t in task_tokens if t not in tokenizer.get_vocab()]
    rows = model.get_input_embeddings().weight.shape[0]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
        resize_quietly(model, len(tokenizer))
    new_ids = [i for i in tokenizer.convert_tokens_to_ids(missing) if i >= rows]  # rows added for them
    return model, tokenizer, new_ids


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """transformers' progress bars off inside (restored after, if they were on)."""
    was_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            transformers_logging.enable_progress_bar()


def unreadable_weights(folder: Path) -> str | None:
    """`file is corrupt or truncated: why` for the first safetensors file in `folder` that cannot be read."""
    from safetensors import safe_open

    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    f.get_tensor(key)
        except Exception as err:  # noqa: BLE001 (SafetensorError, OSError: the file is the problem)
            return f"{weights} is corrupt or truncated: {first_line(err)}"
    return None


def resize_quietly(model, vocab_size: int) -> None:
    """Grow the embeddings for the task tokens (new rows drawn around the old rows' mean) without
    transformers' notice that it does so: adding task tokens is expected, not something to warn about."""
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model.resize_token_embeddings(vocab_size)
    finally:
        transformers_logging.set_verbosity(verbosity)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute activations in the backward pass (non-reentrant: frozen inputs under adapters still
    get gradients to the adapters; the input embedding's output is made to require grad as well)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x: the new name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if not model.get_input_embeddings().weight.requires_grad:
        model.enable_input_require_grads()
    model.train()  # transformers checkpoints only in training mode


def context_length(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 2048)


@dataclass(frozen=True)
class BaseRef:
    """The pretrained weights a run starts from: a checkpoint holds only what can differ from them."""

    source: str  # the cache name, local path or hub id
    weights_hash: str | None  # sha256 over the weight files (a hub id: its commit), None if unknown


class Loaded(NamedTuple):
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerFast
    max_length: int
    new_token_ids: list[int]  # the task tokens added to a pretrained vocabulary (their rows are new)
    base: BaseRef | None  # None: a preset trained from scratch (its checkpoints hold the whole model)


def load_for_run(cfg, stream) -> Loaded:
    """The model, tokenizer and context length a run's config asks for, with the stream's task tokens;
    for a pretrained base also the ids of the task tokens added to it and its `BaseRef`."""
    task_tokens = [t.token for t in stream.tasks if t.format.task_token]
    if cfg.preset is not None:
        tokenizer = build_tokenizer(stream.vocabulary, task_tokens)
        model = build_preset(cfg.preset, len(tokenizer), cfg.max_length, cfg.overrides)
        return Loaded(model.to(getattr(torch, cfg.dtype)), tokenizer, cfg.max_length, [], None)
    path = cfg.path if cfg.base is None else str(cached_or_imported(cfg.base))
    model, tokenizer, new_ids = load_pretrained(
        path, task_tokens, cfg.gguf_file, cfg.trust_remote_code, cfg.dtype
    )
    base = BaseRef(cfg.base or cfg.path, weights_hash(path, cfg.gguf_file, model))
    return Loaded(model, tokenizer, context_length(model), new_ids, base)


def weights_hash(path: str, gguf_file: str | None, model) -> str | None:
    """sha256 over a local model's weight files (the GGUF file, or every *.safetensors / *.bin in
    name order); for a hub id, the commit transformers resolved (None if it does not say)."""
    local = Path(path).expanduser()
    if not local.exists():
        return getattr(model.config, "_commit_hash", None)
    files = [local / gguf_file] if gguf_file else sorted([*local.glob("*.safetensors"), *local.glob("*.bin")])
    return sha256_files(files) if files else None


def sha256_files(files: list[Path]) -> str:
    import hashlib

    return hashlib.sha256("".join(f"{f.name}:{sha256(f)}\n" for f in files).encode()).hexdigest()
