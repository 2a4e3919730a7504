"""Online EWC (Kirkpatrick et al. 2017; Schwarz et al. 2018): pull the weights toward their values at
the end of the last task, each weight scaled by the diagonal Fisher information of the tasks so far.

    penalty = strength / 2 * sum_i F_i * (p_i - anchor_i)^2

After each task the diagonal Fisher is estimated on `fisher_rows` of that task's training rows and
accumulated, F = gamma * F_old + F_new; the anchor becomes the weights at the task's end. It is the
empirical Fisher: the squared gradient of the negative log-likelihood of the observed tokens (not of
tokens sampled from the model) summed over each row, averaged over micro-batches of
`fisher_batch_size` rows. Summed, not averaged per token: the Fisher of the model's distribution over
whole rows, so it does not weigh short rows more (a per-token mean would scale a row's F by
1/length^2). With the default of one row this is the per-example estimator; larger micro-batches are
faster but sum gradients before squaring, which mixes rows. The gradients come from
`torch.autograd.grad`, so the model's `.grad` is left as it was. Under several processes each
estimates the Fisher on its share of the micro-batches and the sums are all-reduced, so every process
holds the same Fisher, that of all `fisher_rows` rows.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from lifelong.data.batching import EncodedSet
from lifelong.distributed import all_sum
from lifelong.losses import next_token_loss, sequence_loss
from lifelong.methods.base import Method, MethodConfig, register
from lifelong.methods.l2 import load_named, named_state, parameters
from lifelong.seeding import generator


class EWCConfig(MethodConfig):
    name: Literal["ewc"] = "ewc"
    strength: float = Field(default=10.0, ge=0)  # lambda; F holds squared gradients of row log-likelihoods
    gamma: float = Field(default=1.0, ge=0, le=1)  # decay of earlier tasks' Fisher (1: plain sum)
    fisher_rows: int = Field(default=256, ge=1)  # training rows of the task the Fisher is estimated on
    fisher_batch_size: int = Field(default=1, ge=1)  # rows per squared gradient (1: per-example)


class EWC(Method):
    def __init__(self, cfg: EWCConfig):
        self.cfg = cfg
        self.names: list[str] = []  # parameters with a Fisher, in model.named_parameters() order
        self.params: list[torch.nn.Parameter] = []  # aligned with names
        self.fisher: list[torch.Tensor] = []  # accumulated diagonal Fisher, aligned with names
        self.anchor: list[torch.Tensor] = []  # weights at the last task's end, aligned with names

    def setup(self, model, ctx):
        self.ctx = ctx
        return model

    def loss_terms(self, model, task, replay):
        if not self.fisher:
            return {}
        terms = zip(self.params, self.fisher, self.anchor, strict=True)
        pen = sum((f * (p - a) ** 2).sum() for p, f, a in terms)
        return {"penalty": 0.5 * self.cfg.strength * pen}

    def after_task(self, task_index, model) -> None:
        """F = gamma * F_old + F_new, F_new estimated for the parameters trainable in this task (with
        one adapter per task, the new adapter; the earlier ones keep their decayed Fisher)."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        pick = generator(self.ctx.seed, "ewc-fisher", task_index)
        data = self.ctx.stream.tasks[task_index].train
        rows = torch.randperm(len(data), generator=pick)[: self.cfg.fisher_rows]
        new = diagonal_fisher(model, [p for _, p in named], data, rows, self.cfg.fisher_batch_size, self.ctx)
        fisher = {n: self.cfg.gamma * f for n, f in zip(self.names, self.fisher, strict=True)}
        for (n, _), f in zip(named, new, strict=True):
            fisher[n] = fisher[n] + f if n in fisher else f
        self.names = [n for n, _ in model.named_parameters() if n in fisher]
        self.params = parameters(model, self.names)
        self.fisher = [fisher[n] for n in self.names]
        self.anchor = [p.detach().clone() for p in self.params]

    def state_dict(self) -> dict[str, Any]:
        return named_state("fisher.", self.names, self.fisher) | named_state(
            "anchor.", self.names, self.anchor
        )

    def load_state_dict(self, state: dict[str, Any], model) -> None:
        fisher, anchor = load_named(state, "fisher.", model), load_named(state, "anchor.", model)
        assert list(fisher) == list(anchor), "ewc: the saved Fisher and anchor cover different weights"
        self.names, self.fisher, self.anchor = list(fisher), list(fisher.values()), list(anchor.values())
        self.params = parameters(model, self.names)


def diagonal_fisher(
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    data: EncodedSet,
    rows: torch.Tensor,
    batch_size: int,
    ctx,
) -> list[torch.Tensor]:
    """Mean over micro-batches of the squared gradient of their summed next-token loss, per parameter.

    The loss of a row is its negative log-likelihood over the tokens the loss reads (summed, not
    averaged): the Fisher of the model's distribution over whole rows, so a long row weighs as much as
    its tokens and a short one is not scaled up by 1/length^2."""
    fisher = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the model as it is
    try:
        chunks = rows.split(batch_size)
        for chunk in chunks[ctx.rank :: ctx.world]:  # each process its share; summed over them below
            batch = data.batch(chunk, ctx.loss_on).to(ctx.device)
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            token_loss, _ = next_token_loss(logits, batch.input_ids, batch.loss_mask)  # (B, T-1)
            loss = sequence_loss(token_loss).sum()  # minus the log-likelihood of the rows, not a mean
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for f, g in zip(fisher, grads, strict=True):
                if g is not None:
                    f.add_(g.detach().float() ** 2)
    finally:
        model.train(was_training)
    all_sum(fisher)  # every process then holds the Fisher of all the rows
    return [(f / len(chunks)).to(p.dtype) for f, p in zip(fisher, params, strict=True)]


register("ewc", EWCConfig, EWC)
