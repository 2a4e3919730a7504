"""Prefix tuning (Li & Liang 2021): learned key/value vectors prepended to every attention layer's keys
and values, the base model frozen. With `progressive: true`, one prefix per task, the earlier ones
frozen, and task k attends to the prefixes of tasks k, ..., 1 (newest first) concatenated (the
Progressive Prompts scheme applied to prefixes).

The prefixes are stock PEFT modules (`peft.tuners.prefix_tuning.PrefixEncoder`, built from a
`PrefixTuningConfig`, PEFT's (B, n, layers x 2 x kv_dim) layout), one per task of the stream, created
at setup. They are not applied through `PeftModel`, for the reasons given in `prompt_tuning.py`: it
drops `position_ids` and rebuilds the prefix cache on every call, which our KV-cache generation loop
(`lifelong/sampling.py`) cannot use. A forward pre-hook on the decoder (`model.model`) does it:

- first (non-cached) call: the KV cache is filled with the prefix (n positions per layer) before the
  input is run; the attention mask gets n ones in front; when no position ids are given, the input
  takes positions 0..T-1 as without a prefix (the prefix has no position: its keys are not rotated);
- cached calls: the mask gets the same n ones in front (the cache already holds the prefix).

The output keeps the input's length, so nothing is dropped afterwards. Stored: the prefixes
(n_tasks x num_virtual_tokens x layers x 2 x kv_dim) in the model (`model.prefix_tuning.*`). Extra
compute per step: attention over n more keys per layer.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Literal

import torch
from peft import PrefixTuningConfig as PeftPrefixTuningConfig
from peft.tuners.prefix_tuning import PrefixEncoder
from transformers import DynamicCache

from lifelong.methods.base import Compatibility, SelectsPerTask, register
from lifelong.methods.prompt_tuning import PromptOptions, PromptSelection, decoder, prompt_names
from lifelong.sampling import cache_in


class Prefixes(torch.nn.Module):
    """One PEFT `PrefixEncoder` per name; fills the cache with the active ones through a decoder hook."""

    def __init__(self, names: list[str], peft_cfg: PeftPrefixTuningConfig, kv_heads: int):
        super().__init__()
        self.prompts = torch.nn.ModuleDict({n: PrefixEncoder(peft_cfg) for n in names})
        self.n, self.layers, self.kv_heads = peft_cfg.num_virtual_tokens, peft_cfg.num_layers, kv_heads
        self.head_dim = peft_cfg.token_dim // kv_heads
        self.active: list[str] = names[:1]

    def key_values(self, batch: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(key, value) per layer, each (B, kv_heads, n, head_dim), n the active prefixes' length."""
        idx = torch.arange(self.n, device=device).unsqueeze(0).expand(batch, -1)  # (B, n_virtual)
        flat = torch.cat([self.prompts[name](idx) for name in self.active], dim=1)  # (B, n, 2L * kv)
        kv = flat.view(batch, flat.shape[1], 2 * self.layers, self.kv_heads, self.head_dim)
        kv = kv.permute(2, 0, 3, 1, 4)  # (2L, B, kv_heads, n, head_dim): PEFT's order, key then value
        return [(kv[2 * i], kv[2 * i + 1]) for i in range(self.layers)]

    def pre_hook(self, module, args, kwargs):
        n = self.n * len(self.active)
        if n == 0:
            return None
        cache_key, cache = cache_in(kwargs)
        first = cache is None or cache.get_seq_length() == 0
        ids, embeds = kwargs.get("input_ids"), kwargs.get("inputs_embeds")
        batch, width = (ids if ids is not None else embeds).shape[:2]
        device = (ids if ids is not None else embeds).device
        mask = kwargs.get("attention_mask")
        if mask is not None:
            mask = torch.cat([mask.new_ones(batch, n), mask], dim=1)  # (B, n + T)
        if first:
            cache = cache if cache is not None else DynamicCache()
            dtype = next(self.parameters()).dtype if embeds is None else embeds.dtype
            for layer, (key, value) in enumerate(self.key_values(batch, device)):
                cache.update(key.to(dtype), value.to(dtype), layer)
            if kwargs.get("position_ids") is None:
                kwargs["position_ids"] = torch.arange(width, device=device).unsqueeze(0)  # (1, T)
        kwargs.update({cache_key: cache, "attention_mask": mask})
        return args, kwargs


class PrefixTuningConfig(PromptOptions):
    name: Literal["prefix_tuning"] = "prefix_tuning"


class PrefixTuning(SelectsPerTask):
    # Adds weights and freezes the base, like an adapter; the trainable set changes between tasks
    # (progressive, or the base on the first task): under several processes the loop wraps the model in
    # DistributedDataParallel again then (train.py `rewrap`).
    compatibility = Compatibility(kind="adapter", exports=False)

    def setup(self, model, ctx):
        config = model.config
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        peft_cfg = PeftPrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=self.cfg.num_virtual_tokens,
            token_dim=kv_heads * head_dim,
            num_layers=config.num_hidden_layers,
            num_attention_heads=kv_heads,
        )
        names = prompt_names(self.cfg.progressive, len(ctx.stream.tasks))
        device = model.get_input_embeddings().weight.device
        store = Prefixes(names, peft_cfg, kv_heads).to(device)
        dec = decoder(model)
        dec.prefix_tuning = store
        dec.register_forward_pre_hook(store.pre_hook, with_kwargs=True)
        self.selection = PromptSelection(model, store, self.cfg.progressive)
        self.selection.select(0, self.cfg.train_base_on_first_task)
        return model

    def select(self, task_index: int) -> None:
        self.selection.select(task_index, self.cfg.train_base_on_first_task and task_index == 0)

    def route(self, task_index, model):
        return self.selection.only(task_index, model) if self.cfg.progressive else nullcontext()


register("prefix_tuning", PrefixTuningConfig, PrefixTuning)
