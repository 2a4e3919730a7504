"""L2 weight regularization: pull the trainable weights toward their values at the task's start.

    penalty = coef * sum_i (p_i - p_i at task start)^2      over every trainable parameter

From the second task on (during the first there is nothing earlier to keep, unless `include_base`
anchors the base model) the anchor is taken in `before_task`. The loop calls the architecture methods'
`before_task` first, so by then this task's trainable set is in place: with adapters the anchor covers
the adapter weights, with one adapter per task the new one. The parameters and their anchors are kept
as two aligned lists, so a step costs one pass over them.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from lifelong.methods.base import Method, MethodConfig, register


class L2Config(MethodConfig):
    name: Literal["l2"] = "l2"
    coef: float = Field(default=1.0, ge=0)  # summed, not averaged, over weights: scale with model size
    include_base: bool = False  # also anchor at the base model during the first task (pretrained models)


class L2(Method):
    def __init__(self, cfg: L2Config):
        self.cfg = cfg
        self.names: list[str] = []  # anchored parameters, in model.named_parameters() order
        self.params: list[torch.nn.Parameter] = []  # aligned with names
        self.anchor: list[torch.Tensor] = []  # their values at the task's start, aligned with names

    def before_task(self, task_index, model) -> None:
        self.names, self.params, self.anchor = [], [], []
        if task_index > 0 or self.cfg.include_base:
            self.names = [n for n, p in model.named_parameters() if p.requires_grad]
            self.params = parameters(model, self.names)
            self.anchor = [p.detach().clone() for p in self.params]

    def loss_terms(self, model, task, replay):
        if not self.anchor:
            return {}
        pen = sum(((p - a) ** 2).sum() for p, a in zip(self.params, self.anchor, strict=True))
        return {"penalty": self.cfg.coef * pen}

    def after_task(self, task_index, model) -> None:
        self.names, self.params, self.anchor = [], [], []

    def state_dict(self) -> dict[str, Any]:
        return named_state("anchor.", self.names, self.anchor)

    def load_state_dict(self, state: dict[str, Any], model) -> None:
        anchor = load_named(state, "anchor.", model)
        self.names, self.anchor = list(anchor), list(anchor.values())
        self.params = parameters(model, self.names)


def parameters(model: torch.nn.Module, names: list[str]) -> list[torch.nn.Parameter]:
    named = dict(model.named_parameters())
    return [named[n] for n in names]


def named_state(prefix: str, names: list[str], tensors: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{n}": t for n, t in zip(names, tensors, strict=True)}


def load_named(state: dict[str, Any], prefix: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The saved `<prefix><parameter name>` tensors, in model.named_parameters() order, each checked
    against the parameter's shape and moved to its device."""
    saved = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    named = dict(model.named_parameters())
    if unknown := [n for n in saved if n not in named or named[n].shape != saved[n].shape]:
        raise ValueError(f"saved {prefix}{unknown[0]} matches no parameter of the model")
    return {n: saved[n].to(p.device, p.dtype) for n, p in named.items() if n in saved}


register("l2", L2Config, L2)
