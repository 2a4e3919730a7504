"""Mixture of LoRA experts (MoLE-style) with a learned router, on stock PEFT.

One LoRA expert per task (all created at setup, as in `lora_per_task`): task t trains expert t, the
earlier experts and the base stay frozen. Every adapted projection also gets a small gate, a linear
map (in_features -> n_tasks, zero at the start, so the first mixture is uniform), and its experts'
updates are mixed per token:

    y = W x + sum_k g_k(x) * scale * B_k A_k x,     g(x) = softmax over the experts trained so far

Routing is the same at training and at evaluation: the gate reads the projection's input at each
position (in deeper layers that hidden state has attended to the task token), so no task identity is
given at inference and the `route` hook is a no-op. The gates train through the whole stream (next to
the current expert), so the router itself can drift towards the newest expert.

The gates are our own modules (`model.mole_router`, saved with the model); PEFT's X-LoRA (peft 0.21)
loads its experts from saved adapter paths and runs an extra "scalings" forward pass on every call. The
mixing is done by PyTorch hooks: a forward pre-hook on each adapted layer computes g(x), a forward
hook on each expert's `lora_B` scales its output by its weight.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch

from lifelong.methods.base import Compatibility, SelectsPerTask, register
from lifelong.methods.lora import Adapters, LoraOptions, add_adapters, task_adapter_names


class MoleConfig(LoraOptions):
    name: Literal["mole"] = "mole"


class Router(torch.nn.Module):
    """The gate of one adapted layer. `weights` holds the last forward's mixture: (B, T, n_experts)."""

    def __init__(self, in_features: int, n_experts: int):
        super().__init__()
        self.gate = torch.nn.Linear(in_features, n_experts, bias=False)
        torch.nn.init.zeros_(self.gate.weight)  # a uniform mixture to start with
        self.n_active = 1  # experts trained so far (the others get weight 0)
        self.weights: torch.Tensor | None = None

    def __getstate__(self) -> dict[str, Any]:  # a copy (a frozen teacher) keeps no graph of ours
        return {**self.__dict__, "weights": None}

    def mix(self, module, args) -> None:  # forward pre-hook of the adapted layer
        x = args[0]  # (B, T, in)
        logits = self.gate(x.to(self.gate.weight.dtype))  # (B, T, E)
        logits[..., self.n_active :] = float("-inf")
        self.weights = torch.softmax(logits, dim=-1)  # (B, T, E)

    def scale(self, k: int, module, args, output: torch.Tensor) -> torch.Tensor:  # hook of lora_B[k]
        return output * self.weights[..., k : k + 1].to(output.dtype)  # (B, T, out)


class Mole(SelectsPerTask):
    # The trainable set changes between tasks: under several processes the loop wraps the model in
    # DistributedDataParallel again then (train.py `rewrap`).
    compatibility = Compatibility(kind="adapter", exports=False)

    def setup(self, model, ctx):
        self.names = task_adapter_names(len(ctx.stream.tasks))
        model = add_adapters(model, self.cfg, self.names)
        self.adapters = Adapters(model, self.names)  # before the routers: they are not "base"
        routers = []
        for layer in self.adapters.layers:
            router = Router(layer.in_features, len(self.names)).to(layer.lora_A[self.names[0]].weight.device)
            layer.register_forward_pre_hook(router.mix)
            for k, name in enumerate(self.names):
                layer.lora_B[name].register_forward_hook(partial(router.scale, k))
            routers.append(router)
        self.routers = torch.nn.ModuleList(routers)
        model.add_module("mole_router", self.routers)
        self.select(0)
        return model

    def select(self, task_index: int) -> None:
        base_trains = self.cfg.train_base_on_first_task and task_index == 0
        self.adapters.select(self.names[: task_index + 1], [self.names[task_index]], base_trains)
        for router in self.routers:
            router.n_active = task_index + 1
        self.routers.requires_grad_(True)


register("mole", MoleConfig, Mole)
