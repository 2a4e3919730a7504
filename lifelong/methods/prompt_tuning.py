"""Prompt tuning (Lester et al. 2021): learned "virtual token" embeddings prepended to every input, the
base model frozen. With `progressive: true`, Progressive Prompts (Razdaibiedina et al. 2023): a new
prompt per task, the earlier ones frozen, and task k reads the prompts of tasks k, k-1, ..., 1 (newest
first) concatenated in front of its input.

The prompts are stock PEFT modules (`peft.tuners.prompt_tuning.PromptEmbedding`, built from a
`PromptTuningConfig`), one per task of the stream, all created at setup so the model's structure never
changes during a run. They are not applied through `PeftModel`: its forward prepends the virtual tokens
on every call, also on the cached one-token steps of our KV-cache generation loop
(`lifelong/sampling.py`), and it drops `position_ids`, which left-padded batched generation needs. A
forward pre-hook on the decoder (`model.model`) does the prepending instead, on the first
(non-cached) call only:

- first call: `inputs_embeds = [prompts; embed(input_ids)]`, the attention mask gets n ones in
  front, given position ids are shifted by n (the prompts take positions 0..n-1); a forward hook
  drops the n prompt positions from the decoder's output, so the logits stay (B, T, V), aligned with
  `input_ids`, for training, scoring and sampling alike;
- cached calls: the mask gets the same n ones in front and the position ids the same shift.

Stored: the prompts (n_tasks x num_virtual_tokens x hidden), inside the model (`model.prompt_tuning.*`
in `model.safetensors`). Extra compute per step: n (or n x tasks so far) more positions per row.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Literal

import torch
from peft import PromptTuningConfig as PeftPromptTuningConfig
from peft.tuners.prompt_tuning import PromptEmbedding, PromptTuningInit
from pydantic import Field

from lifelong.methods.base import Compatibility, Located, MethodConfig, SelectsPerTask, register
from lifelong.sampling import cache_in

SHARED = "shared"  # the one prompt's name when not progressive


class PromptOptions(MethodConfig):
    """The options prompt tuning and prefix tuning share."""

    num_virtual_tokens: int = Field(default=8, ge=1)  # virtual tokens per prompt (per task if progressive)
    progressive: bool = False  # a new prompt per task, earlier ones frozen and kept in front of the input
    # The base weights train too during the first task. For a model trained from scratch (the toy
    # presets), whose base knows nothing yet; leave it off for a pretrained model.
    train_base_on_first_task: bool = False


def prompt_names(progressive: bool, n_tasks: int) -> list[str]:
    return [f"task_{i}" for i in range(n_tasks)] if progressive else [SHARED]


class PromptSelection:
    """Which prompts are in the forward (`store.active`, newest first) and which train.

    `store` is the module holding one PEFT prompt module per name (`store.prompts[name]`); its
    parameters and the base's are collected once, so selecting is a loop over lists. `only` also routes
    a copy of the model (its store found once by name, `Located`)."""

    def __init__(self, model: torch.nn.Module, store: torch.nn.Module, progressive: bool):
        self.store, self.progressive = store, progressive
        self.located = Located(model, [store])
        self.names = list(store.prompts)
        self.params = {n: list(store.prompts[n].parameters()) for n in self.names}
        own = {id(p) for p in store.parameters()}
        self.base = [p for p in model.parameters() if id(p) not in own]
        self.task = 0

    def active(self, task_index: int) -> list[str]:
        """The prompts task `task_index` reads: its own and every earlier one, newest first."""
        return self.names[task_index::-1] if self.progressive else [SHARED]

    def select(self, task_index: int, base_trains: bool) -> None:
        self.store.active = self.active(task_index)
        trainable = self.names[task_index] if self.progressive else SHARED
        for name, params in self.params.items():
            for p in params:
                p.requires_grad_(name == trainable)
        for p in self.base:
            p.requires_grad_(base_trains)
        self.task = task_index

    @contextmanager
    def only(self, task_index: int, model: torch.nn.Module):
        """Score task `task_index` with its prompts in `model` (the model set up, or a copy of it), then
        restore the prompts that were active."""
        (store,) = self.located(model)
        saved = store.active
        store.active = self.active(task_index)
        try:
            yield
        finally:
            store.active = saved


class Prompts(torch.nn.Module):
    """One PEFT `PromptEmbedding` per name; prepends the active ones through hooks on the decoder."""

    def __init__(self, names: list[str], peft_cfg: PeftPromptTuningConfig, embeddings: torch.nn.Embedding):
        super().__init__()
        self.prompts = torch.nn.ModuleDict({n: PromptEmbedding(peft_cfg, embeddings) for n in names})
        self.n = peft_cfg.num_virtual_tokens
        # a list, so not a submodule (the model owns it); a deep copy of the model maps it to its own
        self.embeddings = [embeddings]
        self.active: list[str] = names[:1]
        self.strip = 0  # prompt positions the running forward prepended (dropped from its output)

    def pre_hook(self, module, args, kwargs):
        n = self.n * len(self.active)
        _, cache = cache_in(kwargs)
        first = cache is None or cache.get_seq_length() == 0
        self.strip = n if first else 0
        if n == 0:
            return None
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            embeds = self.embeddings[0](kwargs["input_ids"])  # (B, T, H)
        batch, device = embeds.shape[0], embeds.device
        mask, pos = kwargs.get("attention_mask"), kwargs.get("position_ids")
        if mask is not None:
            mask = torch.cat([mask.new_ones(batch, n), mask], dim=1)  # (B, n + T)
        if pos is not None:
            pos = pos + n
        if first:
            idx = torch.arange(self.n, device=device).unsqueeze(0).expand(batch, -1)  # (B, n_virtual)
            prompts = torch.cat([self.prompts[name](idx) for name in self.active], dim=1)  # (B, n, H)
            embeds = torch.cat([prompts.to(embeds.dtype), embeds], dim=1)  # (B, n + T, H)
            if pos is not None:
                pos = torch.cat([torch.arange(n, device=device).expand(pos.shape[0], n), pos], dim=1)
        kwargs.update(input_ids=None, inputs_embeds=embeds, attention_mask=mask, position_ids=pos)
        return args, kwargs

    def post_hook(self, module, args, output):
        if self.strip:
            output.last_hidden_state = output.last_hidden_state[:, self.strip :]  # (B, T, H)
            if output.hidden_states is not None:
                output.hidden_states = tuple(h[:, self.strip :] for h in output.hidden_states)
            self.strip = 0
        return output


def decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The model's decoder stack (`model.model` for Llama and most causal LMs on the hub)."""
    return model.base_model


class PromptTuningConfig(PromptOptions):
    name: Literal["prompt_tuning"] = "prompt_tuning"
    # sample_vocab: start from the embeddings of random vocabulary tokens (on the scale of real
    # inputs); random: N(0, 1), far larger than a small model's embeddings.
    init: Literal["sample_vocab", "random"] = "sample_vocab"


INITS = {"sample_vocab": PromptTuningInit.SAMPLE_VOCAB, "random": PromptTuningInit.RANDOM}


class PromptTuning(SelectsPerTask):
    # Adds weights and freezes the base, like an adapter; the trainable set changes between tasks
    # (progressive, or the base on the first task): under several processes the loop wraps the model in
    # DistributedDataParallel again then (train.py `rewrap`).
    compatibility = Compatibility(kind="adapter", exports=False)

    def setup(self, model, ctx):
        embeddings = model.get_input_embeddings()
        peft_cfg = PeftPromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=self.cfg.num_virtual_tokens,
            token_dim=embeddings.embedding_dim,
            num_transformer_submodules=1,
            prompt_tuning_init=INITS[self.cfg.init],
        )
        names = prompt_names(self.cfg.progressive, len(ctx.stream.tasks))
        store = Prompts(names, peft_cfg, embeddings).to(embeddings.weight.device)
        dec = decoder(model)
        dec.prompt_tuning = store
        dec.register_forward_pre_hook(store.pre_hook, with_kwargs=True)
        dec.register_forward_hook(store.post_hook)
        self.selection = PromptSelection(model, store, self.cfg.progressive)
        self.selection.select(0, self.cfg.train_base_on_first_task)
        return model

    def select(self, task_index: int) -> None:
        self.selection.select(task_index, self.cfg.train_base_on_first_task and task_index == 0)

    def route(self, task_index, model):
        return self.selection.only(task_index, model) if self.cfg.progressive else nullcontext()


register("prompt_tuning", PromptTuningConfig, PromptTuning)
