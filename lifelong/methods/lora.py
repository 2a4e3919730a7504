"""LoRA (Hu et al. 2021) on stock PEFT: one low-rank adapter trained through the whole stream, the
base weights frozen.

The adapter is injected into the model in place with `peft.inject_adapter_in_model`, so the model
keeps its class (generation, evaluation, frozen copies and checkpoints see a plain causal LM whose
state dict also holds `...lora_A.<name>.weight` / `...lora_B.<name>.weight`). Also home to the pieces
the per-task adapter methods (`lora_per_task`, `olora`, `mole`) share: the options and `Adapters`.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Literal

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from pydantic import Field

from lifelong.errors import UserError
from lifelong.methods.base import Compatibility, Located, MethodConfig, SelectsPerTask, register

# The attention and MLP projections of a Llama block (and of most decoder-only models on the hub).
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraOptions(MethodConfig):
    """The options every LoRA method shares (each method's config adds its `name` and its own)."""

    r: int = Field(default=8, ge=1)  # rank of each adapter
    alpha: float = Field(default=16.0, gt=0)  # the update is scaled by alpha / r
    dropout: float = Field(default=0.0, ge=0, lt=1)  # on the adapter's input
    target_modules: tuple[str, ...] = LLAMA_PROJECTIONS  # module names (suffixes) that get adapters
    # The base weights train too during the first task. For a model trained from scratch (the toy
    # presets), whose base knows nothing yet; leave it off for a pretrained model.
    train_base_on_first_task: bool = False


def add_adapters(model: torch.nn.Module, opts: LoraOptions, names: list[str]) -> torch.nn.Module:
    """Inject one LoRA adapter per name into `model` (in place); the base weights are frozen."""
    peft_cfg = PeftLoraConfig(
        r=opts.r, lora_alpha=opts.alpha, lora_dropout=opts.dropout, target_modules=list(opts.target_modules)
    )
    with warnings.catch_warnings():  # PEFT warns that a second adapter makes several: that is the intent
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        try:
            for name in names:
                model = inject_adapter_in_model(peft_cfg, model, adapter_name=name)
        except ValueError as err:  # no module matched target_modules
            raise UserError(f"LoRA: {str(err).splitlines()[0]}") from None
    return model


class Adapters:
    """The LoRA adapters of a model by name: which are active in the forward, which train.

    The parameters of each adapter and of the base are collected once here, so selecting is a loop over
    lists, never a scan of parameter names. `only` also routes a copy of the model (its layers found
    once by name, `Located`).
    """

    def __init__(self, model: torch.nn.Module, names: list[str]):
        self.names = names
        self.layers: list[LoraLayer] = [m for m in model.modules() if isinstance(m, LoraLayer)]
        self.located = Located(model, self.layers)
        self.params = {
            n: [
                p for layer in self.layers for m in (layer.lora_A[n], layer.lora_B[n]) for p in m.parameters()
            ]
            for n in names
        }
        adapter_ids = {id(p) for ps in self.params.values() for p in ps}
        self.base = [p for p in model.parameters() if id(p) not in adapter_ids]
        self.selection: tuple[list[str], list[str], bool] = ([names[0]], [names[0]], False)

    def select(self, active: list[str], trainable: list[str], base_trains: bool = False) -> None:
        """`active` adapters add their update in the forward (summed); only `trainable` ones (and the
        base if `base_trains`) get requires_grad."""
        for layer in self.layers:
            layer.set_adapter(active)
        for name, params in self.params.items():
            for p in params:
                p.requires_grad_(name in trainable)
        for p in self.base:
            p.requires_grad_(base_trains)
        self.selection = (list(active), list(trainable), base_trains)

    @contextmanager
    def only(self, active: list[str], model: torch.nn.Module):
        """Score with `active` adapters in `model` (the model set up, or a copy of it), then restore its
        adapters as they were, active and trainable (PEFT's `set_adapter` also sets requires_grad)."""
        layers = self.located(model)
        saved = [(list(a.active_adapters), [p.requires_grad for p in a.parameters()]) for a in layers]
        for layer in layers:
            layer.set_adapter(active)
        try:
            yield
        finally:
            for layer, (names, trainable) in zip(layers, saved, strict=True):
                layer.set_adapter(names)
                for p, flag in zip(layer.parameters(), trainable, strict=True):
                    p.requires_grad_(flag)

    def lora_A(self, name: str) -> list[torch.Tensor]:
        """The down-projection weight of adapter `name` in every adapted layer: (r, in_features) each."""
        return [layer.lora_A[name].weight for layer in self.layers]


class LoraConfig(LoraOptions):
    name: Literal["lora"] = "lora"


class Lora(SelectsPerTask):
    compatibility = Compatibility(kind="adapter")

    def setup(self, model, ctx):
        model = add_adapters(model, self.cfg, ["lora"])
        self.adapters = Adapters(model, ["lora"])
        self.select(0)
        return model

    def select(self, task_index: int) -> None:
        base_trains = self.cfg.train_base_on_first_task and task_index == 0
        self.adapters.select(["lora"], ["lora"], base_trains)


def task_adapter_names(n_tasks: int) -> list[str]:
    return [f"task_{i}" for i in range(n_tasks)]


class PerTaskAdapters:
    """One LoRA adapter per task of the stream, all created at setup (so the model's modules never
    change during the run): task k trains adapter k alone, the base and the other adapters frozen.
    `routed` inference scores task i with adapter i alone; `merged` sums every adapter trained so far."""

    def __init__(self, model: torch.nn.Module, opts: LoraOptions, n_tasks: int, inference: str):
        self.names = task_adapter_names(n_tasks)
        self.model = add_adapters(model, opts, self.names)
        self.adapters = Adapters(self.model, self.names)
        self.opts, self.inference = opts, inference

    def active(self, task_index: int) -> list[str]:
        """The adapters in the forward while task `task_index` trains (and after it, when merged)."""
        return self.names[: task_index + 1] if self.inference == "merged" else [self.names[task_index]]

    def select(self, task_index: int) -> None:
        base_trains = self.opts.train_base_on_first_task and task_index == 0
        self.adapters.select(self.active(task_index), [self.names[task_index]], base_trains)

    def route(self, task_index: int, model: torch.nn.Module) -> AbstractContextManager[None]:
        if self.inference == "merged":
            return nullcontext()
        return self.adapters.only([self.names[task_index]], model)


register("lora", LoraConfig, Lora)
