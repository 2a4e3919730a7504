"""The method base class, its context, and the per-task routing every method shares.

A method is a config (a pydantic model whose `name` field is its registry key, `registry.py`) and a
subclass of `Method` that overrides only the hooks it uses; every hook's default is a no-op. `train.py`
calls every hook from one place, in one order (architecture methods first, `registry.call_order`); a
hook takes only what it needs and returns a value, and never touches the optimizer. Methods compose: a
run holds a list of them.

`Method` has no behaviour of its own: do not inherit implementation from another method, copy what
you need or share a plain function (see STYLE.md).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from lifelong.data.batching import Batch, EncodedSet, EncodedStream
from lifelong.distributed import share
from lifelong.losses import mean_token_loss
from lifelong.methods.registry import (  # noqa: F401  (re-exported for the method modules)
    Compatibility,
    MethodConfig,
    check_compatible,
    method_entry,
    register,
    registered,
)
from lifelong.seeding import generator

# A run's route (`MethodContext.route`): the context in which `model` is task `task_index`'s model.
Route = Callable[[int, torch.nn.Module], AbstractContextManager[None]]


def no_route(task_index: int, model: torch.nn.Module) -> AbstractContextManager[None]:
    """The route of a run whose methods select no weights per task."""
    return nullcontext()


# `MethodContext.write_sample(name, record)`: append `record` (JSON-able) to `<run>/<name>.jsonl`.
WriteSample = Callable[[str, dict[str, Any]], None]
# `MethodContext.write_file(relative path, data)`: write `<run>/<path>` whole (atomically).
WriteFile = Callable[[str, bytes], None]


def no_sample(name: str, record: dict[str, Any]) -> None:
    """The `write_sample` outside a run (tests, tools): the record goes nowhere."""


def no_file(path: str, data: bytes) -> None:
    """The `write_file` outside a run: nothing is written."""


@dataclass
class MethodContext:
    """What `setup` receives: the encoded stream, the tokenizer, the device and the run's seed, the
    run's `route`, and `write_sample` to leave a record in the run directory."""

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
    # Appends a record to `<run dir>/<name>.jsonl` (the loop adds `global_step`; only the main process
    # writes, and a resume drops records after its checkpoint), e.g. self-replay's `samples`.
    write_sample: WriteSample = no_sample
    # Writes a file of the method's for users into the run directory (main process only), e.g.
    # retrieval's faiss index; never read back on resume (`state_dict` is what resumes).
    write_file: WriteFile = no_file
    # Under several processes (docs/distributed.md): this process's rank and how many train the run;
    # each takes its share of the batch's rows (`share`) and draws its own (`for_rank`).
    rank: int = 0
    world: int = 1

    def share(self, n: int) -> int:
        """This rank's part of `n` rows a step (all ranks together: `n`)."""
        return share(n, self.rank, self.world)

    def for_rank(self, gen: torch.Generator) -> torch.Generator:
        """The generator this rank draws from: `gen` itself on one process; on several, a generator
        seeded by one draw of `gen` and the rank. Every rank draws the same number from `gen`, so its
        state stays the same on all ranks and rank 0's checkpoint resumes every one."""
        if self.world == 1:
            return gen
        seed = int(torch.randint(2**62, (1,), generator=gen, device=gen.device))
        return generator(seed, "rank", self.rank, device=gen.device)


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
        return mean_token_loss(self.token_loss, self.mask)


class Method:
    """The hooks of a method, each a no-op by default; a method overrides the ones it uses.

    The loop calls them in this order: `setup` once (before the stream); per task `train_examples`,
    `before_task` (not again on resume mid-task), then per step `replay_batch` and `loss_terms`, then
    `after_task` and the task's evaluation, where each task j is scored inside `route(j)` on the
    prompts `eval_context(j, questions)` gives. `state_dict`/`load_state_dict` at every checkpoint and
    resume.
    """

    compatibility: ClassVar[Compatibility] = Compatibility()

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg

    def setup(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        """Called once before the stream; may add weights to the model (adapters) and returns it."""
        return model

    def train_examples(self, task_index: int, stream: EncodedStream) -> EncodedSet | None:
        """The examples the task's batches are drawn from (`joint`: the union so far); None: the
        task's own. Only a method with `compatibility.supplies_examples` may return rows."""
        return None

    def before_task(self, task_index: int, model: torch.nn.Module) -> None:
        """Called when a task starts, before its first step (not again on resume mid-task)."""

    def replay_batch(self, task_index: int, step: int, model: torch.nn.Module) -> Batch | None:
        """Rows to train on next to the task batch at this step, or None."""
        return None

    def loss_terms(
        self, model: torch.nn.Module, task: Forward, replay: Forward | None
    ) -> dict[str, torch.Tensor]:
        """Named loss terms added to the task loss (already weighted). The loop logs each as
        `<method>.<name>` (`<method>_<k>.<name>` when the method is in the list k times)."""
        return {}

    def after_task(self, task_index: int, model: torch.nn.Module) -> None:
        """Called when a task's last step is done, before the task's evaluation."""

    def eval_context(self, task_index: int, questions: list[str]) -> list[str] | None:
        """The eval prompts of task `task_index` rewritten, one per question (e.g. retrieved documents
        put in front of each), or None: unchanged. They are written into rows in the task's own format
        (its template, chat) by the evaluation. Only a method with `compatibility.rewrites_prompts`
        may return prompts."""
        return None

    def route(self, task_index: int, model: torch.nn.Module) -> AbstractContextManager[None]:
        """A context in which `model` (the model set up, or a copy of it) scores task `task_index`
        (e.g. with that task's adapter); leaving it restores what was selected. The default,
        `nullcontext()`, routes nothing (`switches` reads it so)."""
        return nullcontext()

    def state_dict(self) -> dict[str, Any]:
        """Tensors and JSON scalars needed to resume mid-task; never pickled."""
        return {}

    def load_state_dict(self, state: dict[str, Any], model: torch.nn.Module) -> None:
        """Restore `state_dict()`; `model` is the (already restored) model being trained."""


class SelectsPerTask(Method):
    """Base of the methods that put a task's weights in place when it starts (which adapter, prompt or
    block trains, which are active): a method writes `select`; `before_task` selects and remembers the
    task, and a resumed run selects it again (the weights themselves come with the model's checkpoint)."""

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        self.task = -1  # the task whose selection is in place

    def select(self, task_index: int) -> None:
        """Put task `task_index`'s weights in place for training (and scoring, unless routed)."""
        raise NotImplementedError

    def before_task(self, task_index: int, model: torch.nn.Module) -> None:
        self.task = task_index
        self.select(task_index)

    def state_dict(self) -> dict[str, Any]:
        return {"task": self.task}

    def load_state_dict(self, state: dict[str, Any], model: torch.nn.Module) -> None:
        if state["task"] >= 0:
            self.task = int(state["task"])
            self.select(self.task)


def route_methods(
    methods: list[Method], task_index: int, model: torch.nn.Module
) -> AbstractContextManager[None]:
    """Every method's `route(task_index, model)`, entered in list order; `nullcontext()` when none of
    them selects anything for that task."""
    contexts = [c for m in methods if switches(c := m.route(task_index, model))]
    return entered(contexts) if contexts else nullcontext()


def context_methods(methods: list[Method], task_index: int, questions: list[str]) -> list[str] | None:
    """The eval prompts of task `task_index` as the methods' `eval_context` rewrites them (check_compatible
    allows one method that does), or None when none does."""
    rewritten = [p for m in methods if (p := m.eval_context(task_index, questions)) is not None]
    assert len(rewritten) <= 1, "check_compatible allows one method that rewrites the eval prompts"
    return rewritten[0] if rewritten else None


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


def row_tasks(batch: Batch, stream: EncodedStream) -> list[int]:
    """The task of each row, read from its prefix (every row of a stream starts with its task's
    `[bos?, task token]`): what a teacher's or a sampler's `route` is given for rows of unknown task."""
    task_of = {tuple(t.prefix): j for j, t in enumerate(stream.tasks)}
    heads = [tuple(h) for h in batch.input_ids[:, : stream.prefix_len].tolist()]
    unknown = [h for h in heads if h not in task_of]
    assert not unknown, f"a row starts with {unknown[0]}, the prefix of no task"
    return [task_of[h] for h in heads]


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


def build_method(cfg: MethodConfig) -> Method:
    return method_entry(cfg.name).method_cls(cfg)
