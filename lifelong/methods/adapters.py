"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021 with `sites: [mlp]`): a small
down-projection, a nonlinearity and an up-projection added to the output of the attention and/or MLP
sublayer of every decoder block, before the block's residual sum; the base model frozen.

    h = f(x) + up(act(down(f(x))))      f: the block's self_attn or mlp,  up initialised to zero

`up` starts at zero, so inserting the adapters leaves the model's outputs exactly as they were.
`per_task: true` creates one adapter per task (all at setup, so the model's modules never change during
a run): task k trains adapter k alone, and task i is scored with adapter i (routed by the task of the
evaluated rows, i.e. by their task token, as in `lora_per_task`); `per_task: false` trains one shared
adapter through the stream.

Our own module, not a library's: AdapterHub's `adapters` 1.3.0 (the current release) requires
transformers ~= 4.57 and this package runs on transformers 5. The adapters hang off the modules they
follow (`...self_attn.bottleneck.<name>.*`, `...mlp.bottleneck.<name>.*` in `model.safetensors`) and
act through a forward hook on each, so the base weights keep their names. Stored: per adapter and
site, hidden x bottleneck x 2 weights. Extra compute per step: two small matmuls per site.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Literal

import torch
from pydantic import Field

from lifelong.methods.base import Compatibility, Located, MethodConfig, SelectsPerTask, register

ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "silu": torch.nn.SiLU}


class Bottleneck(torch.nn.Module):
    """x -> up(act(down(x))): the adapter's update (the hook adds it to x). Zero at the start."""

    def __init__(self, hidden: int, size: int, activation: str):
        super().__init__()
        self.down = torch.nn.Linear(hidden, size)
        self.act = ACTIVATIONS[activation]()
        self.up = torch.nn.Linear(size, hidden)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))  # (B, T, H)


class Site(torch.nn.Module):
    """The adapters after one sublayer, by name; `active` is the one in the forward (None: none)."""

    def __init__(self, names: list[str], hidden: int, size: int, activation: str):
        super().__init__()
        self.adapters = torch.nn.ModuleDict({n: Bottleneck(hidden, size, activation) for n in names})
        self.active: str | None = names[0]

    def hook(self, module, args, output):
        if self.active is None:
            return output
        if isinstance(output, tuple):  # self_attn returns (attn_output, attn_weights)
            h = output[0]
            return (h + self.adapters[self.active](h), *output[1:])
        return output + self.adapters[self.active](output)


class AdaptersConfig(MethodConfig):
    name: Literal["adapters"] = "adapters"
    size: int = Field(default=16, ge=1)  # the bottleneck width
    sites: tuple[Literal["attn", "mlp"], ...] = ("attn", "mlp")  # Houlsby: both; Pfeiffer: mlp only
    activation: Literal["relu", "gelu", "silu"] = "relu"
    per_task: bool = True  # one adapter per task, routed by task token; else one shared adapter
    # The base weights train too during the first task. For a model trained from scratch (the toy
    # presets), whose base knows nothing yet; leave it off for a pretrained model.
    train_base_on_first_task: bool = False


SUBLAYERS = {"attn": "self_attn", "mlp": "mlp"}  # site -> attribute of a Llama decoder block


class Adapters(SelectsPerTask):
    # The trainable set changes between tasks: under several processes the loop wraps the model in
    # DistributedDataParallel again then (train.py `rewrap`).
    compatibility = Compatibility(kind="adapter", exports=False)

    def setup(self, model, ctx):
        n_tasks = len(ctx.stream.tasks)
        self.names = [f"task_{i}" for i in range(n_tasks)] if self.cfg.per_task else ["shared"]
        hidden = model.config.hidden_size
        device = model.get_input_embeddings().weight.device
        self.sites: list[Site] = []
        for block in model.base_model.layers:
            for site in self.cfg.sites:
                sublayer = getattr(block, SUBLAYERS[site])
                adapters = Site(self.names, hidden, self.cfg.size, self.cfg.activation).to(device)
                sublayer.bottleneck = adapters
                sublayer.register_forward_hook(adapters.hook)
                self.sites.append(adapters)
        self.located = Located(model, self.sites)  # the same sites in a copy of the model
        self.params = {n: [p for s in self.sites for p in s.adapters[n].parameters()] for n in self.names}
        own = {id(p) for ps in self.params.values() for p in ps}
        self.base = [p for p in model.parameters() if id(p) not in own]
        self.select(0)
        return model

    def name(self, task_index: int) -> str:
        return self.names[task_index] if self.cfg.per_task else self.names[0]

    def select(self, task_index: int) -> None:
        """Task `task_index`'s adapter in the forward and alone trainable (with the base on the first
        task if asked)."""
        base_trains = self.cfg.train_base_on_first_task and task_index == 0
        active = self.name(task_index)
        for site in self.sites:
            site.active = active
        for name, params in self.params.items():
            for p in params:
                p.requires_grad_(name == active)
        for p in self.base:
            p.requires_grad_(base_trains)

    @contextmanager
    def only(self, task_index: int, model: torch.nn.Module):
        """Score task `task_index` with its own adapter in `model` (the model set up, or a copy of it),
        then restore the adapter that was active."""
        sites = self.located(model)
        saved = [site.active for site in sites]
        for site in sites:
            site.active = self.name(task_index)
        try:
            yield
        finally:
            for site, active in zip(sites, saved, strict=True):
                site.active = active

    def route(self, task_index, model):
        return self.only(task_index, model) if self.cfg.per_task else nullcontext()


register("adapters", AdaptersConfig, Adapters)
