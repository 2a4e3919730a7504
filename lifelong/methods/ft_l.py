"""FT-L (Zhu et al. 2020, the constrained fine-tuning baseline of ROME, Meng et al. 2022): fine-tune
one block's MLP output projection alone, every weight kept within `epsilon` (L-inf) of its value at
the task's start. The editing literature's fine-tuning baseline next to plain `naive`:

    lifelong run --stream edits --method ft_l:epsilon=0.01

The projection runs in a forward pre-hook on the projection: before the layer is used, its weight
is clamped in place (no gradient) to the box around the anchor, so every forward, training or
evaluation, sees a weight inside the box, and an optimizer step that left it is undone before it
counts (projected AdamW; the loop still owns the step). The anchor moves to the current weight at
each task's start: each batch of edits may move a weight by `epsilon`, the stream by more.

Stored: the anchor in `state_dict()` (safetensors); the weight itself is the model's.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from lifelong.methods.base import Compatibility, Method, MethodConfig, register
from lifelong.methods.grace import wrapped_mlp


class FtLConfig(MethodConfig):
    name: Literal["ft_l"] = "ft_l"
    layer: int | None = Field(default=None, ge=0)  # the block (None: the middle, (num_layers - 1) // 2)
    epsilon: float = Field(default=1e-2, gt=0)  # L-inf radius of a weight's move within a task


class FtL(Method):
    # It freezes the base but one matrix, as the adapter methods do: counted as one of them, so no
    # other method that freezes the base (LoRA, GRACE, ...) runs next to it.
    compatibility = Compatibility(kind="adapter")

    def __init__(self, cfg: FtLConfig):
        super().__init__(cfg)
        self.anchor: torch.Tensor | None = None  # the projection's weight at the task's start

    def setup(self, model, ctx):
        self.proj = output_projection(wrapped_mlp(model, self.cfg.layer, "ft_l"))
        for p in model.parameters():
            p.requires_grad_(False)
        self.proj.weight.requires_grad_(True)
        self.proj.register_forward_pre_hook(self.project)
        return model

    def before_task(self, task_index, model):
        self.anchor = self.proj.weight.detach().clone()

    @torch.no_grad()
    def project(self, module, args) -> None:
        """Clamp the weight into the box, written only if it left it (a recomputed forward of gradient
        checkpointing then writes nothing)."""
        if self.anchor is None:
            return
        low, high = self.anchor - self.cfg.epsilon, self.anchor + self.cfg.epsilon  # (out, in) each
        if bool((module.weight < low).any() or (module.weight > high).any()):
            module.weight.copy_(torch.clamp(module.weight, low, high))

    def state_dict(self):
        return {} if self.anchor is None else {"anchor": self.anchor}

    def load_state_dict(self, state, model):
        self.anchor = state.get("anchor")
        if self.anchor is not None:
            self.anchor = self.anchor.to(self.proj.weight.device)


def output_projection(mlp: torch.nn.Module) -> torch.nn.Linear:
    """The MLP's last linear layer (Llama's `down_proj`): what FT-L and ROME edit."""
    linear = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    return getattr(mlp, "down_proj", None) or linear[-1]


register("ft_l", FtLConfig, FtL)
