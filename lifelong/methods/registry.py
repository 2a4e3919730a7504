"""The method registry: a method's name -> its config class and its class, and what each may run next to.

Light on purpose (pydantic only, no torch): the CLI lists methods and checks a config's method list
without importing a model library. A method's module is imported the first time its name is looked
up; importing it registers its classes (`register`). The table `METHODS` holds one line per method:
its module and its one-line summary. Adding a method = its file + its line in `METHODS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from lifelong.errors import UserError

# name -> (module, one-line summary)
METHODS: dict[str, tuple[str, str]] = {
    "naive": ("lifelong.methods.naive", "sequential fine-tuning (the baseline)"),
    "joint": ("lifelong.methods.joint", "multitask upper bound: trains on every task seen so far"),
    "replay": ("lifelong.methods.replay", "experience replay from a task-balanced buffer of real examples"),
    "self_replay": (
        "lifelong.methods.self_replay",
        "self-generated replay from a frozen copy (the headline)",
    ),
    "lamol": (
        "lifelong.methods.lamol",
        "LAMOL: the model writes a fixed pool of pseudo-examples per old task",
    ),
    "l2": ("lifelong.methods.l2", "L2 pull of the weights toward their values at the task's start"),
    "ewc": (
        "lifelong.methods.ewc",
        "online EWC: weights pulled toward the last task's, scaled by the Fisher",
    ),
    "feature_reg": (
        "lifelong.methods.feature_reg",
        "keep hidden states or output distributions on new inputs close to a frozen copy's",
    ),
    "lwf": ("lifelong.methods.lwf", "learning without forgetting: distil the old model on the new inputs"),
    "lora": ("lifelong.methods.lora", "one LoRA adapter (stock PEFT) through the whole stream, base frozen"),
    "lora_per_task": (
        "lifelong.methods.lora_per_task",
        "a LoRA adapter per task (stock PEFT), earlier ones frozen; routed by task token or merged",
    ),
    "olora": (
        "lifelong.methods.olora",
        "O-LoRA: a LoRA adapter per task, kept orthogonal to the earlier ones",
    ),
    "mole": ("lifelong.methods.mole", "mixture of per-task LoRA experts (stock PEFT) with a learned router"),
    "prompt_tuning": (
        "lifelong.methods.prompt_tuning",
        "learned prompt embeddings (stock PEFT modules), base frozen; progressive: one per task",
    ),
    "prefix_tuning": (
        "lifelong.methods.prefix_tuning",
        "learned attention prefixes (stock PEFT modules), base frozen; progressive: one per task",
    ),
    "adapters": (
        "lifelong.methods.adapters",
        "bottleneck adapters after attention/MLP, base frozen; one per task (routed) or shared",
    ),
    "ft_l": (
        "lifelong.methods.ft_l",
        "FT-L: fine-tune one block's MLP output projection, weights kept within epsilon (L-inf) per task",
    ),
    "grace": (
        "lifelong.methods.grace",
        "GRACE: edits as a codebook of keys and values at one layer, base frozen (edit streams)",
    ),
    "expand": (
        "lifelong.methods.expand",
        "LLaMA-Pro block expansion: identity-initialised blocks per task, only the new ones train",
    ),
    "retrieval": (
        "lifelong.methods.retrieval",
        "no weight update: a growing faiss memory of the tasks' documents, top-k put before each question",
    ),
}


class MethodConfig(BaseModel):
    """Base of every method's config. `name` selects the method in the registry."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str


# The order in which the loop calls the hooks of a run's methods (see `call_order`): methods that
# change what the model is (adapters, prompts, new blocks) come first, so that a method reading the
# model (a frozen teacher, an anchor of the trainable weights, samples) sees the weights this task uses.
Kind = Literal["full", "adapter", "expansion"]


@dataclass(frozen=True)
class Compatibility:
    """What a method does to the model; `check_compatible` refuses a list of methods that conflicts when
    the config is parsed (before any model loads).

    - `kind`: `full` trains the model's own weights; `adapter` adds adapter weights (LoRA, prompts,
      bottleneck adapters) and freezes the base (so do the editors `grace` and `ft_l`); `expansion`
      adds new blocks. At most one method of a run may be non-`full`: two would each wrap the model
      or decide what of it trains.
    - `distributed`: runs under several processes (docs/distributed.md; the loop wraps the model in DDP
      again when a task changes what trains).
    - `supplies_examples`: its `train_examples` replaces the task's training rows (`joint`); two such
      methods would each want their own rows, so a run holds at most one.
    - `edits_only`: runs only on a stream of edit tasks (`stream: edits`), e.g. `grace`.
    - `trains`: it needs optimizer steps. A run whose methods all train nothing (`retrieval` alone)
      makes none: its model is frozen and each task has 0 steps (hooks, evaluations and checkpoints
      still happen); next to a method that trains, the run trains as that method says.
    - `rewrites_prompts`: its `eval_context` rewrites the eval prompts (`retrieval`); two such methods
      would wrap each other's rewritten prompts, so a run holds at most one.
    - `exports`: what it learns ends up in plain weights (LoRA merged in), so `lifelong export` can write
      the run's model as a plain transformers model; not so for per-task weights routed by task, prompts,
      added modules, a codebook or an external memory.
    """

    kind: Kind = "full"
    distributed: bool = True
    supplies_examples: bool = False
    edits_only: bool = False
    trains: bool = True
    rewrites_prompts: bool = False
    exports: bool = True

    @property
    def architecture(self) -> bool:
        """Whether the method changes what the model is (its hooks are called first)."""
        return self.kind != "full"


def check_compatible(methods: list[tuple[str, Compatibility]]) -> str | None:
    """Why this list of (name, compatibility) cannot run together, or None if it can."""
    layout = [name for name, c in methods if c.architecture]
    if len(layout) > 1:
        return (
            f"methods {' and '.join(layout)} both add weights to the model or freeze its base "
            "(adapters, expansion, editors): use one"
        )
    rows = [name for name, c in methods if c.supplies_examples]
    if len(rows) > 1:
        return f"methods {' and '.join(rows)} both replace the training rows: use one"
    readers = [name for name, c in methods if c.rewrites_prompts]
    if len(readers) > 1:
        return f"methods {' and '.join(readers)} both rewrite the eval prompts (a context each): use one"
    return None


def check_distributed(names: list[str], processes: int) -> None:
    """Refuse, before anything is loaded, a method that cannot train on several processes."""
    single = [name for name in names if not method_entry(name).method_cls.compatibility.distributed]
    if single and processes > 1:
        raise UserError(
            f"method {single[0]} cannot run on several processes (docs/distributed.md says why): "
            "launch it on one"
        )


def call_order(kinds: list[Compatibility]) -> list[int]:
    """The positions of a run's methods in the order the loop calls their hooks: architecture methods
    first, then the others, each group in list order."""
    return sorted(range(len(kinds)), key=lambda i: not kinds[i].architecture)


@dataclass(frozen=True)
class MethodEntry:
    name: str
    config_cls: type[MethodConfig]
    method_cls: type  # a subclass of lifelong.methods.base.Method
    summary: str = ""


_REGISTRY: dict[str, MethodEntry] = {}


def register(name: str, config_cls: type[MethodConfig], method_cls: type) -> None:
    """Called by a method's module when it is imported. `name` must be a line of `METHODS`."""
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is registered twice")
    if name not in METHODS:
        raise ValueError(f"method {name!r} has no line in lifelong.methods.registry.METHODS")
    _REGISTRY[name] = MethodEntry(name, config_cls, method_cls, METHODS[name][1])


def method_names() -> list[str]:
    """Every method's name, without importing any method."""
    return sorted(METHODS)


def method_summaries() -> dict[str, str]:
    """Each method's one-line summary, without importing any method."""
    return {name: summary for name, (_, summary) in sorted(METHODS.items())}


def method_entry(name: str) -> MethodEntry:
    """The registered classes of method `name` (its module imported on first use)."""
    if name not in _REGISTRY:
        if name not in METHODS:
            raise KeyError(f"unknown method {name!r} (known: {', '.join(sorted(METHODS))})")
        importlib.import_module(METHODS[name][0])
    return _REGISTRY[name]


def registered() -> dict[str, MethodEntry]:
    """Every method's entry (imports every method)."""
    return {name: method_entry(name) for name in method_names()}


def method_labels(names: list[str]) -> list[str]:
    """Each method's name, numbered (`l2_1`, `l2_2`) when the list holds it more than once."""
    seen: dict[str, int] = {}
    labels = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        labels.append(f"{name}_{seen[name]}" if names.count(name) > 1 else name)
    return labels
