"""Pretraining a base model from scratch: a byte-level BPE tokenizer and a tiny Llama trained on text
corpora, stored in the local model cache (lifelong/models/cache.py) under the config's `name`.

    lifelong pretrain                                    # the built-in English base model, en-tiny
    lifelong pretrain my.yaml --set train.tokens_per_parameter=5
    lifelong run my_stream.yaml                          # with `model: {base: en-tiny}`

Every training row starts with its source's token (`<kjv>`), which is what lets self-replay prompt
the model for samples of the old distribution later. Checkpoints go to `<cache>/<name>.work/`; the
same command on an unfinished pretraining resumes from the newest one, to the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from pydantic import Field, model_validator
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lifelong.config import (
    _Strict,
    apply_overrides,
    builtin_pretrain_configs,
    parse_yaml,
    read_config_text,
    validated,
)
from lifelong.data.packing import RowOrder, check_corpus, corpus_name, load_documents, pack, split_documents
from lifelong.errors import DivergenceError, UserError
from lifelong.loop import lr_factor, new_optimizer, optimizer_step, set_lr, stop_on_ctrl_c
from lifelong.losses import mean_token_loss, next_token_loss
from lifelong.models import EOS, PAD, UNK, build_preset, no_progress_bars
from lifelong.models.cache import cache_dir, check_name, model_dir, work_dir
from lifelong.progress import eval_line, on_terminal, print_line, progress_bar
from lifelong.rundir import Progress, RunDir, write_json
from lifelong.seeding import load_rng_state, rng_state, seed_everything


# ----------------------------------------------------------------------------------------- config
class Source(_Strict):
    corpus: str  # a registered corpus (lifelong.data.sources.CORPORA), or file:PATH
    token: str | None = None  # starts every row of this source; default "<corpus name>"

    @model_validator(mode="after")
    def _check(self) -> Source:
        check_corpus(self.corpus)
        self.token = self.token or f"<{corpus_name(self.corpus)}>"
        return self


class TokenizerSpec(_Strict):
    vocab_size: int = Field(default=4096, ge=300)  # the self-replay paper's size; >= 256 bytes + specials
    corpora: list[str] | None = None  # None: the sources'. More lets it cover a later language too
    extra_tokens: list[str] = Field(default_factory=list)  # more special tokens, e.g. a later task's

    @model_validator(mode="after")
    def _check(self) -> TokenizerSpec:
        for corpus in self.corpora or []:
            check_corpus(corpus)
        return self


class ModelSpec(_Strict):
    preset: str = "tiny"  # lifelong.models.PRESETS; the fields below override it
    hidden_size: int | None = Field(default=None, ge=1)
    num_layers: int | None = Field(default=None, ge=1)
    num_heads: int | None = Field(default=None, ge=1)
    intermediate_size: int | None = Field(default=None, ge=1)
    max_length: int = Field(default=128, ge=4)  # tokens per training row, and the model's context


class TrainSpec(_Strict):
    # The budget: steps = tokens_per_parameter x parameters (all of them, tied embeddings once)
    # / (batch_size x max_length). The corpus is repeated (reshuffled) when it is smaller.
    tokens_per_parameter: float = Field(default=20.0, gt=0)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    warmup_steps: int = Field(default=100, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)  # floor of the decay
    weight_decay: float = Field(default=0.02, ge=0)  # the self-replay paper's AdamW settings
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = Field(default=1.0, gt=0)
    eval_fraction: float = Field(default=0.02, gt=0, lt=1)  # documents of each source held out
    eval_rows: int = Field(default=64, ge=1)  # held-out rows scored per source (the same ones each time)
    eval_every: int | None = Field(default=100, ge=1)  # steps; the held-out loss is also taken at the end
    checkpoint_every: int | None = Field(default=200, ge=1)  # steps; also on Ctrl-C
    threads: int | None = Field(default=None, ge=1)  # CPU threads: float results depend on the count
    mixed_precision: Literal["no", "bf16"] = "no"


RESUMABLE_FIELDS = {"eval_every", "eval_rows", "checkpoint_every"}  # in `train`: change no weight


class PretrainConfig(_Strict):
    name: str  # the model's name in the cache, e.g. en-tiny
    seed: int = 0
    sources: list[Source] = Field(min_length=1)
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        check_name(self.name)
        names, tokens = [corpus_name(s.corpus) for s in self.sources], [s.token for s in self.sources]
        for what, values in (("corpus name", names), ("token", tokens)):
            if len(set(values)) != len(values):
                raise ValueError(f"two sources share a {what}: each source needs its own")
        if set(tokens) & {PAD, EOS, UNK}:
            raise ValueError(f"a source token cannot be {PAD}, {EOS} or {UNK}")
        return self

    @property
    def special_tokens(self) -> list[str]:
        tokens = [PAD, EOS, UNK, *(s.token for s in self.sources), *self.tokenizer.extra_tokens]
        return list(dict.fromkeys(tokens))  # ids 0, 1, 2 are pad, eos, unk (as build_preset expects)

    def config_hash(self) -> str:
        """Hash of everything that changes the weights (not of RESUMABLE_FIELDS)."""
        data = self.model_dump(mode="json")
        data["train"] = {k: v for k, v in data["train"].items() if k not in RESUMABLE_FIELDS}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_pretrain_config(path_or_name: str | Path, overrides: dict[str, Any] | None = None) -> PretrainConfig:
    """A pretrain config from a YAML file or by built-in name, with `--set` style overrides."""
    text = read_config_text(path_or_name, builtin_pretrain_configs(), "pretrain config")
    data = apply_overrides(parse_yaml(text, str(path_or_name)), overrides or {})
    return validated(PretrainConfig, data, str(path_or_name))


# -------------------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts: list[str], vocab_size: int, specials: list[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2 style: any text encodes, nothing is unknown) with `specials` matched whole."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, clean_up_tokenization_spaces=False
    )


def not_padding(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, L) loss mask of packed rows: every token but padding (only held-out rows have some). The
    source token at position 0 is given, never predicted (the loss reads the mask from column 1)."""
    return ids != pad_id


# ------------------------------------------------------------------------------------------- loop
class PretrainInterrupted(Exception):
    """Stopped (Ctrl-C or a step limit) after writing a checkpoint; str() is the work directory."""


class Pretrainer:
    """Sets everything up in __init__ (or finds the model already made); `train()` is the loop.

    The work directory is a run directory (lifelong/rundir.py): train_log.jsonl, evals.jsonl and
    checkpoints/<step-N>/ (safetensors + JSON, no pickle), plus config.json and the trained tokenizer/.
    """

    def __init__(self, cfg: PretrainConfig, cache: str | Path | None = None, show_progress: bool = True):
        self.cfg, self.show_progress, start = cfg, show_progress, time.perf_counter()
        self.root, self.final, work = cache_dir(cache), model_dir(cfg.name, cache), work_dir(cfg.name, cache)
        self.done = self._already_made(cfg.config_hash())
        if self.done:
            return
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        seed_everything(cfg.seed)
        self.accelerator = Accelerator(mixed_precision=t.mixed_precision)
        self.device, self.run_dir = self.accelerator.device, RunDir(work)
        if self.accelerator.is_main_process:
            self._open_work_dir(cfg.config_hash())
        self.accelerator.wait_for_everyone()
        train_docs, eval_docs = {}, {}
        for s in cfg.sources:
            name = corpus_name(s.corpus)
            train_docs[name], eval_docs[name] = split_documents(s.corpus, t.eval_fraction, cfg.seed)
        self.tokenizer = self._setup_tokenizer(train_docs)
        self.rows = self._setup_rows(train_docs, pad=False)
        self.train_rows = torch.cat(list(self.rows.values()))  # (N, L): sources mixed in proportion to size
        self.eval_rows = {k: rows[: t.eval_rows] for k, rows in self._setup_rows(eval_docs, pad=True).items()}
        overrides = cfg.model.model_dump(exclude={"preset", "max_length"}, exclude_none=True)
        model = build_preset(cfg.model.preset, len(self.tokenizer), cfg.model.max_length, overrides)
        self.params = sum(p.numel() for p in model.parameters())
        self.tokens_per_step = t.batch_size * cfg.model.max_length
        self.total_steps = max(1, math.ceil(t.tokens_per_parameter * self.params / self.tokens_per_step))
        self.model = self.accelerator.prepare(model.to(self.device))
        self.raw = self.accelerator.unwrap_model(self.model)
        self.optimizer = new_optimizer(self.raw.parameters(), t, self.device)
        self.order = RowOrder(len(self.train_rows), t.batch_size, cfg.seed)
        self.progress = Progress(cfg.config_hash(), total_params=self.params)
        if (ckpt := self.run_dir.latest_checkpoint()) is not None:  # resume
            self.progress, optimizer, rng = self.run_dir.load_checkpoint(ckpt, self.raw, [])
            self.optimizer.load_state_dict(optimizer)
            load_rng_state(rng)
        if self.accelerator.is_main_process:
            self.run_dir.truncate_logs(self.progress.step)  # drop lines written after the checkpoint
        self.setup_seconds = time.perf_counter() - start

    # ------------------------------------------------------------------ setup
    def _already_made(self, config_hash: str) -> bool:
        if not self.final.exists():
            return False
        info = self.final / "pretrain.json"
        if info.is_file() and json.loads(info.read_text()).get("config_hash") == config_hash:
            return True  # the same config made it: nothing to do
        raise UserError(
            f"model {self.cfg.name!r} is already in the cache ({self.final}) from another config; "
            "delete that directory or choose another name (--set name=...)"
        )

    def _open_work_dir(self, config_hash: str) -> None:
        """Resume the same config; refuse another once a checkpoint exists, else start over."""
        work, saved = self.run_dir.path, self.run_dir.path / "config.json"
        if saved.is_file() and json.loads(saved.read_text())["config_hash"] != config_hash:
            if self.run_dir.latest_checkpoint() is not None:
                raise UserError(
                    f"the config of {self.cfg.name!r} differs from the one its unfinished pretraining in "
                    f"{str(work)!r} was started with; resume with that config, or delete the directory"
                )
            shutil.rmtree(work)  # nothing trained yet
        if not saved.is_file():
            write_json(saved, {"config_hash": config_hash, "config": self.cfg.model_dump(mode="json")})

    def _setup_tokenizer(self, train_docs: dict[str, list[str]]) -> PreTrainedTokenizerFast:
        """Trained once into the work directory and read back from there, by a resumed run too. It
        sees the sources' training documents (never the held-out ones) and all of any other corpus."""
        saved = self.run_dir.path / "tokenizer"
        if self.accelerator.is_main_process and not saved.is_dir():
            sources, texts = {s.corpus for s in self.cfg.sources}, []
            for corpus in self.cfg.tokenizer.corpora or [s.corpus for s in self.cfg.sources]:
                texts += train_docs[corpus_name(corpus)] if corpus in sources else load_documents(corpus)
            tokenizer = train_tokenizer(texts, self.cfg.tokenizer.vocab_size, self.cfg.special_tokens)
            tmp = Path(tempfile.mkdtemp(dir=self.run_dir.path, prefix=".tokenizer-"))
            tokenizer.save_pretrained(str(tmp))
            os.replace(tmp, saved)
        self.accelerator.wait_for_everyone()
        return AutoTokenizer.from_pretrained(str(saved), local_files_only=True)

    def _setup_rows(self, docs: dict[str, list[str]], pad: bool) -> dict[str, torch.Tensor]:
        """Each source's documents tokenized and packed into rows (N, L) that start with its token."""
        tok, length, out = self.tokenizer, self.cfg.model.max_length, {}
        for s in self.cfg.sources:
            name = corpus_name(s.corpus)
            ids = tok(docs[name], add_special_tokens=False)["input_ids"]
            source_id = tok.convert_tokens_to_ids(s.token)
            out[name] = pack(ids, source_id, tok.eos_token_id, length, tok.pad_token_id if pad else None)
            if not len(out[name]):
                raise UserError(f"corpus {name!r} is shorter than one row of {length} tokens")
        return out

    def summary(self) -> str:
        if self.done:
            return f"{self.cfg.name}: already in the model cache ({self.final})"
        tokens, t = self.total_steps * self.tokens_per_step, self.cfg.train
        return (
            f"{self.cfg.name}: {self.params / 1e6:.2f}M parameters, vocabulary {len(self.tokenizer)}, "
            f"{self.total_steps} steps of {t.batch_size}x{self.cfg.model.max_length} tokens "
            f"({tokens / 1e6:.2f}M tokens, {tokens / self.params:.1f} per parameter, "
            f"{tokens / self.train_rows.numel():.2f} epochs); training rows: "
            + ", ".join(f"{name} {len(r):,}" for name, r in self.rows.items())
            + (f"; resuming at step {self.progress.step}" if self.progress.step else "")
        )

    # ------------------------------------------------------------------- loop
    def train(self, stop_after: int | None = None) -> Path:
        """Train to the budget and put the model in the cache; return its directory. `stop_after`
        (a step number) stops there with a checkpoint, as Ctrl-C does."""
        if self.done:
            return self.final
        t, rank, world = self.cfg.train, self.accelerator.process_index, self.accelerator.num_processes
        with stop_on_ctrl_c() as ctrl_c, self._progress_bar() as bar:
            loss, fields = math.nan, {"loss": math.nan, "tps": 0.0, "held": ""}
            bar_task = bar.add_task(
                self.cfg.name, total=self.total_steps, completed=self.progress.step, **fields
            )
            while self.progress.step < self.total_steps:
                start = time.perf_counter()
                lr = t.lr * lr_factor(self.progress.step, self.total_steps, t)
                set_lr(self.optimizer, lr)
                rows = self.order.rows(self.progress.step)[rank::world]
                loss = self._step(self.train_rows[rows].to(self.device, torch.long))
                elapsed = time.perf_counter() - start
                self.progress.step += 1
                self.progress.train_seconds += elapsed
                step, tps = self.progress.step, self.tokens_per_step / elapsed
                self._log(
                    "train_log.jsonl", {"global_step": step, "lr": lr, "loss": loss, "tokens_per_s": tps}
                )
                bar.update(bar_task, advance=1, loss=loss, tps=tps)
                if t.eval_every and step % t.eval_every == 0 and step < self.total_steps:
                    held_out = self.evaluate()
                    held = " ".join(f"{k} {v:.3f}" for k, v in held_out.items())
                    bar.update(bar_task, held=f"held-out {held}")
                    self._report(loss, held_out)
                stop = ctrl_c["stop"] or (stop_after is not None and step >= stop_after)
                if stop or (
                    t.checkpoint_every and step % t.checkpoint_every == 0 and step < self.total_steps
                ):
                    self.checkpoint()
                if stop:
                    raise PretrainInterrupted(str(self.run_dir.path))
            held_out = self.evaluate()
            self._report(loss, held_out)
        return self._finish(held_out)

    def _step(self, ids: torch.Tensor) -> float:
        with self.accelerator.autocast():
            logits = self.model(input_ids=ids).logits  # (B, L, V)
        loss = mean_token_loss(*next_token_loss(logits, ids))  # training rows have no padding
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"the loss became {loss.item()} at step {self.progress.step + 1} of pretraining "
                f"{self.cfg.name!r} (try a lower learning rate); the last checkpoint is kept"
            )
        optimizer_step(self.accelerator, loss, self.optimizer, self.model, self.cfg.train.grad_clip)
        return loss.item()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean next-token loss (nats per token) on each source's held-out rows, padding not counted."""
        start, out = time.perf_counter(), {}
        self.raw.eval()
        for name, rows in self.eval_rows.items():
            total, count = 0.0, 0
            for chunk in rows.split(self.cfg.train.batch_size):
                ids = chunk.to(self.device, torch.long)  # (b, L); padding only at the end: no attention mask
                logits = self.raw(input_ids=ids).logits  # (b, L, V)
                token_loss, mask = next_token_loss(logits, ids, not_padding(ids, self.tokenizer.pad_token_id))
                total += float(token_loss.sum())
                count += int(mask.sum())
            out[name] = float(total) / count
        self.raw.train()
        self.progress.eval_seconds += time.perf_counter() - start
        self._log("evals.jsonl", {"global_step": self.progress.step, "held_out_loss": out})
        return out

    # -------------------------------------------------------------- outputs
    def checkpoint(self) -> None:
        """checkpoints/step-N/ in the work directory (the older one is removed once it is written)."""
        if self.accelerator.is_main_process:
            tag = f"step-{self.progress.step:07d}"
            self.run_dir.save_checkpoint(tag, self.raw, self.optimizer, [], self.progress, rng_state())
            for old in self.run_dir.ckpt_dir.glob("step-*"):
                if old.name != tag:
                    shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def _finish(self, held_out: dict[str, float]) -> Path:
        """Model, tokenizer, pretrain.json and logs into the cache in one rename; the work dir goes."""
        if self.accelerator.is_main_process:
            tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{self.cfg.name}-"))
            tmp.chmod(0o755)
            with no_progress_bars():  # no "Writing model shards" bar
                self.raw.save_pretrained(str(tmp))  # config.json + model.safetensors
            self.tokenizer.save_pretrained(str(tmp))
            p, tokens = self.progress, self.progress.step * self.tokens_per_step
            info = {
                "name": self.cfg.name,
                "config_hash": p.config_hash,
                "params": self.params,
                "steps": p.step,
                "tokens": tokens,
                "tokens_per_parameter": tokens / self.params,
                "epochs": tokens / self.train_rows.numel(),
                "held_out_loss": held_out,  # nats per token, per source
                "tokens_per_s": tokens / p.train_seconds,
                "train_seconds": p.train_seconds,  # every session's
                "eval_seconds": p.eval_seconds,
                "setup_seconds": self.setup_seconds,  # this session's: corpora, tokenizer, packing
                "device": str(self.device),
                "threads": torch.get_num_threads(),
                "config": self.cfg.model_dump(mode="json"),
            }
            write_json(tmp / "pretrain.json", info)
            for log in ("train_log.jsonl", "evals.jsonl"):
                shutil.copy(self.run_dir.path / log, tmp / log)
            os.replace(tmp, self.final)
            shutil.rmtree(self.run_dir.path)
        self.accelerator.wait_for_everyone()
        return self.final

    def _log(self, name: str, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            self.run_dir.append(name, record)

    def _progress_bar(self):
        return progress_bar(self.show_progress and self.accelerator.is_main_process, "held")

    def _report(self, loss: float, held_out: dict[str, float]) -> None:
        """Off a terminal (no live bar there), a line per held-out evaluation."""
        if self.show_progress and self.accelerator.is_main_process and not on_terminal():
            elapsed = self.progress.train_seconds + self.progress.eval_seconds
            where = f"step {self.progress.step}/{self.total_steps}"
            print_line(eval_line(self.cfg.name, where, loss, held_out, elapsed))


def pretrain(cfg: PretrainConfig, cache: str | Path | None = None, show_progress: bool = True) -> Path:
    """Pretrain `cfg` (or resume it) and return the model's directory in the cache."""
    return Pretrainer(cfg, cache, show_progress).train()
