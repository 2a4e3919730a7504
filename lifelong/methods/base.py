"""The method protocol, its context and the registry that maps a method's name to its classes.

A method is a config (a pydantic model whose `name` field is its registry key) and a class with a
handful of hooks. `train.py` calls every hook from one place; a hook takes only what it needs and
returns a value, and never touches the optimizer. Methods compose: a run holds a list of them.

Do not inherit implementation from another method: copy what you need (see STYLE.md).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict

from lifelong.data.batching import Batch, EncodedSet, EncodedStream


class MethodConfig(BaseModel):
    """Base of every method's config. `name` selects the method in the registry."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str


@dataclass(frozen=True)
class Compatibility:
    """What a method does to the model and what it can run next to; `check_compatible` refuses a list
    of methods that conflicts, when the config is parsed (before any model loads).

    - `kind`: `full` trains the model's own weights; `adapter` adds adapter weights (LoRA) and freezes
      the base; `expansion` adds new blocks. At most one method of a run may be non-`full`: two would
      each wrap the model.
    - `full_finetuning`: runs without an adapter method (False: the method works on adapters and needs
      one in the list).
    - `adapters`: runs next to an adapter method.
    - `distributed`: runs under several processes (DDP/FSDP need the trainable set fixed for the run).
    """

    kind: Literal["full", "adapter", "expansion"] = "full"
    full_finetuning: bool = True
    adapters: bool = True
    distributed: bool = True

    @property
    def changes_weights_layout(self) -> bool:
        return self.kind != "full"


def check_compatible(methods: list[tuple[str, Compatibility]]) -> str | None:
    """Why this list of (name, compatibility) cannot run together, or None if it can."""
    layout = [name for name, c in methods if c.changes_weights_layout]
    if len(layout) > 1:
        return f"methods {' and '.join(layout)} both add weights to the model (adapters/expansion): use one"
    adapters = [name for name, c in methods if c.kind == "adapter"]
    for name, c in methods:
        if adapters and not c.adapters and name not in adapters:
            return f"method {name} cannot run with the adapter method {adapters[0]}"
        if not c.full_finetuning and not adapters:
            return f"method {name} needs an adapter method in the list (e.g. lora)"
    return None


# A run's route (`MethodContext.route`): the context in which `model` is task `task_index`'s model.
Route = Callable[[int, torch.nn.Module], AbstractContextManager[None]]


def no_route(task_index: int, model: torch.nn.Module) -> AbstractContextManager[None]:
    """The route of a run whose methods select no weights per task."""
    return nullcontext()


@dataclass
class MethodContext:
    """What `setup` receives: the encoded stream, the tokenizer, the device and the run's seed, and the
    run's `route`."""

    stream: EncodedStream
    tokenizer: Any
    device: torch.device
    seed: int
    batch_size: int
    max_length: int
    loss_on: str  # "sequence" or "target": which tokens of a row the loss reads
    # Every method's `route(task_index, model)` of the run (`route_methods`), on the model being trained
    # or a copy of it: self-replay samples task j from its frozen copy inside `route(j, copy)`.
    route: Route = no_route


@dataclass
class Forward:
    """The training forward pass, restricted to one group of rows (the task batch or a replay batch).

    `token_loss` is the next-token cross-entropy of each predicted position, already multiplied by the
    batch's loss mask; `mask` says which positions count.
    """

    batch: Batch
    logits: torch.Tensor  # (B, T, V)
    token_loss: torch.Tensor  # (B, T-1)
    mask: torch.Tensor  # (B, T-1) float

    def mean_loss(self) -> torch.Tensor:
        return self.token_loss.sum() / self.mask.sum().clamp(min=1.0)


@runtime_checkable
class Method(Protocol):
    """The hooks a method implements. Every hook has a no-op meaning; write the no-ops out."""

    compatibility: ClassVar[Compatibility]

    def setup(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        """Called once before the stream; may wrap the model (adapters) and must return it."""

    def train_examples(self, task_index: int, stream: EncodedStream) -> EncodedSet:
        """The examples the task's batches are drawn from (`joint` returns the union so far)."""

    def before_task(self, task_index: int, model: torch.nn.Module) -> None:
        """Called when a task starts, before its first step (not again on resume mid-task)."""

    def replay_batch(self, task_index: int, step: int, model: torch.nn.Module) -> Batch | None:
        """Rows to train on next to the task batch at this step, or None."""

    def loss_terms(
        self, model: torch.nn.Module, task: Forward, replay: Forward | None
    ) -> dict[str, torch.Tensor]:
        """Named loss terms added to the task loss (already weighted)."""

    def after_task(self, task_index: int, model: torch.nn.Module) -> None:
        """Called when a task's last step is done, before the task's evaluation."""

    def route(self, task_index: int, model: torch.nn.Module) -> AbstractContextManager[None]:
        """A context in which `model` (the model set up, or a copy of it) scores task `task_index`
        (e.g. with that task's adapter); leaving it restores what was selected. No-op: `return
        nullcontext()` (`switches` reads that as "routes nothing")."""

    def state_dict(self) -> dict[str, Any]:
        """Tensors and JSON scalars needed to resume mid-task; never pickled."""

    def load_state_dict(self, state: dict[str, Any], model: torch.nn.Module) -> None:
        """Restore `state_dict()`; `model` is the (already restored) model being trained."""


def route_methods(
    methods: list[Method], task_index: int, model: torch.nn.Module
) -> AbstractContextManager[None]:
    """Every method's `route(task_index, model)`, entered in list order; `nullcontext()` when none of
    them selects anything for that task."""
    contexts = [c for m in methods if switches(c := m.route(task_index, model))]
    return entered(contexts) if contexts else nullcontext()


@contextmanager
def entered(contexts: list[AbstractContextManager[None]]) -> Iterator[None]:
    with ExitStack() as stack:
        for context in contexts:
            stack.enter_context(context)
        yield


def switches(route: AbstractContextManager[None]) -> bool:
    """Whether a route selects weights: the protocol's no-op is `nullcontext()`."""
    return not isinstance(route, nullcontext)


def per_task_rows(
    tasks: list[int],
    route: Route,
    model: torch.nn.Module,
    run: Callable[[list[int] | None], tuple[torch.Tensor | None, ...]],
) -> tuple[torch.Tensor | None, ...]:
    """`run(rows)` on the rows of each task j inside `route(j, model)`, the tasks in increasing order,
    its outputs (one entry per row, or None) put back in row order; `run(None)` on every row at once
    when no task's route switches weights."""
    groups = sorted(set(tasks))
    if not any(switches(route(j, model)) for j in groups):
        return run(None)
    out: list[torch.Tensor | None] | None = None
    for j in groups:
        rows = [i for i, t in enumerate(tasks) if t == j]
        with route(j, model):
            parts = run(rows)
        if out is None:
            out = [None if p is None else p.new_empty((len(tasks), *p.shape[1:])) for p in parts]
        for full, part in zip(out, parts, strict=True):
            if part is not None:
                full[torch.tensor(rows, device=part.device)] = part
    return tuple(out)


class Located:
    """Modules a method switches (its adapters, its prompt store), found in any model of the run's
    structure: the model the method was set up on, or a copy of it (self-replay's frozen pi). Their
    names are read once, at setup; in another model they are looked up by name once, and cached by
    model (weakly: a dropped copy leaves nothing behind)."""

    def __init__(self, model: torch.nn.Module, modules: list[torch.nn.Module]):
        names = {id(m): name for name, m in model.named_modules()}
        self.names = [names[id(m)] for m in modules]
        self.found = weakref.WeakKeyDictionary({model: list(modules)})

    def __call__(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        """The modules in `model`, in the order given at setup."""
        if model not in self.found:
            self.found[model] = [model.get_submodule(name) for name in self.names]
        return self.found[model]


@dataclass(frozen=True)
class MethodEntry:
    name: str
    config_cls: type[MethodConfig]
    method_cls: type
    summary: str = ""


_REGISTRY: dict[str, MethodEntry] = {}


def register(name: str, config_cls: type[MethodConfig], method_cls: type, summary: str = "") -> None:
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is registered twice")
    _REGISTRY[name] = MethodEntry(name, config_cls, method_cls, summary)


def registered() -> dict[str, MethodEntry]:
    return dict(_REGISTRY)


def method_entry(name: str) -> MethodEntry:
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown method {name!r} (known: {known})")
    return _REGISTRY[name]


def build_method(cfg: MethodConfig) -> Method:
    return method_entry(cfg.name).method_cls(cfg)
