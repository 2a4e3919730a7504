"""Block expansion (LLaMA-Pro, Wu et al. 2024) for a stream: new decoder blocks per task, each a copy of
the original block below it with its output projections (`self_attn.o_proj`, `mlp.down_proj`) set to
zero, so that it adds nothing to the residual stream at insertion and the model's outputs are
unchanged. Task k trains its own blocks only; the base and the earlier tasks' blocks stay frozen.

All blocks are inserted at setup (`blocks_per_task` per task, from the second task on, or from the
first without `train_base_on_first_task`), so the model's structure is fixed for the whole run
(checkpoints, resume). Task k's blocks are spread evenly through the stack, as in LLaMA-Pro (with one
block per task: after the last original block), later tasks' above earlier ones. When task k starts,
its blocks get a fresh copy of their original neighbour's current weights and zero output projections,
and only they train. Every block's `self_attn.layer_idx` (its slot in the KV cache) is renumbered and
`config.num_hidden_layers` updated, so caching and generation see the deeper stack.

Inference:
- `routed` (the default): task i is scored with the blocks of tasks 1..i only (later tasks' blocks are
  skipped: a forward hook hands their input through), chosen by the task of the evaluated rows, i.e.
  by their task token. Every earlier task is then scored by exactly the model it was trained with.
- `all`: every block is in the forward for every task (LLaMA-Pro itself); no task identity needed, but
  later blocks also act on earlier tasks' inputs.

Stored: the new blocks (blocks_per_task x one block's weights per task, in `model.safetensors`). Extra
compute per step: the inserted blocks' forward (and backward) passes.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from typing import Literal

import torch
from pydantic import Field

from lifelong.methods.base import Compatibility, MethodConfig, SelectsPerTask, register


class ExpandConfig(MethodConfig):
    name: Literal["expand"] = "expand"
    blocks_per_task: int = Field(default=1, ge=1)  # new decoder blocks per task
    inference: Literal["routed", "all"] = "routed"  # routed: task i scored with the blocks of tasks <= i
    # The base trains during the first task and new blocks start with the second. For a model trained
    # from scratch (the toy presets), whose base knows nothing yet; leave it off for a pretrained model.
    train_base_on_first_task: bool = False


def zero_outputs(block: torch.nn.Module) -> None:
    """Zero the projections that write into the residual stream: the block becomes the identity."""
    with torch.no_grad():
        for proj in (block.self_attn.o_proj, block.mlp.down_proj):
            proj.weight.zero_()
            if proj.bias is not None:
                proj.bias.zero_()


def pass_through_when_off(module, args, kwargs, output):
    """Forward hook of an inserted block: its input unchanged while `expand_on` is False."""
    return output if module.expand_on else args[0]


class Expand(SelectsPerTask):
    # Adds blocks (refused next to an adapter method); the trainable set changes at each task: under
    # several processes the loop wraps the model in DistributedDataParallel again (train.py `rewrap`).
    compatibility = Compatibility(kind="expansion", exports=False)

    def setup(self, model, ctx):
        decoder = model.base_model
        originals = list(decoder.layers)
        n, per = len(originals), self.cfg.blocks_per_task
        after = [max(0, (b + 1) * n // per - 1) for b in range(per)]  # original block each new one follows
        first = 1 if self.cfg.train_base_on_first_task else 0
        layers: list[torch.nn.Module] = []
        self.blocks: dict[int, list[tuple[int, int]]] = {}  # task -> (new block index, source index)
        source_of: list[int] = []  # original index behind every block of the new stack
        for j, block in enumerate(originals):
            layers.append(block)
            source_of.append(j)
            src = len(layers) - 1
            for task in range(first, len(ctx.stream.tasks)):
                for _ in range(after.count(j)):
                    new = copy.deepcopy(block)
                    zero_outputs(new)
                    new.expand_on = True
                    new.register_forward_hook(pass_through_when_off, with_kwargs=True)
                    self.blocks.setdefault(task, []).append((len(layers), src))
                    layers.append(new)
                    source_of.append(j)
        decoder.layers = torch.nn.ModuleList(layers)
        for i, block in enumerate(decoder.layers):
            block.self_attn.layer_idx = i  # its slot in the KV cache
        config = model.config
        config.num_hidden_layers = len(layers)
        if getattr(config, "layer_types", None):
            config.layer_types = [config.layer_types[j] for j in source_of]
        self.layers = decoder.layers
        new_ids = {id(p) for idx in self.new_indices() for p in self.layers[idx].parameters()}
        self.base = [p for p in model.parameters() if id(p) not in new_ids]
        self.select(0)
        return model

    def new_indices(self, task_index: int | None = None) -> list[int]:
        """The inserted blocks' indices in the stack: task `task_index`'s, or every task's."""
        pairs = self.blocks.get(task_index, []) if task_index is not None else sum(self.blocks.values(), [])
        return [idx for idx, _ in pairs]

    def switch(self, upto: int, layers: torch.nn.ModuleList) -> None:
        """Blocks of tasks <= `upto` in the forward, later tasks' passed through (with `all`: every one);
        `layers`: the stack of the model set up, or of a copy of it."""
        for task, pairs in self.blocks.items():
            for idx, _ in pairs:
                layers[idx].expand_on = self.cfg.inference == "all" or task <= upto

    def select(self, task_index: int) -> None:
        """Task `task_index`'s blocks alone trainable (with the base on the first task, if asked)."""
        base_trains = self.cfg.train_base_on_first_task and task_index == 0
        for p in self.base:
            p.requires_grad_(base_trains)
        for idx in self.new_indices():
            self.layers[idx].requires_grad_(False)
        for idx in self.new_indices(task_index):
            self.layers[idx].requires_grad_(True)
        self.switch(task_index, self.layers)

    def before_task(self, task_index, model) -> None:
        for idx, src in self.blocks.get(task_index, []):
            self.layers[idx].load_state_dict(self.layers[src].state_dict())  # the neighbour as it is now
            zero_outputs(self.layers[idx])
        super().before_task(task_index, model)

    @contextmanager
    def scored_as(self, task_index: int, model: torch.nn.Module):
        """Task `task_index`'s blocks in `model` (the model set up, or a copy: the same stack), then the
        blocks that were on."""
        layers = model.base_model.layers
        saved = [layers[idx].expand_on for idx in self.new_indices()]
        self.switch(task_index, layers)
        try:
            yield
        finally:
            for idx, on in zip(self.new_indices(), saved, strict=True):
                layers[idx].expand_on = on

    def route(self, task_index, model):
        return self.scored_as(task_index, model) if self.cfg.inference == "routed" else nullcontext()


register("expand", ExpandConfig, Expand)
