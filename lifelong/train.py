"""The one training loop: a stream of tasks, each trained for `steps_per_task` steps, the whole stream
evaluated after every task (and every `eval_every` steps), checkpoints after every task (and every
`checkpoint_every` steps). Methods change what is trained through their hooks, called from here in
one order (architecture methods first); only this loop steps the optimizer, through the step core
in `loop.py` (backward, clipping, `step`, `zero_grad`) that `lifelong pretrain` shares.

Per task t: every method's `train_examples`, `before_task` (a retrieval memory adds the task's
documents here), the steps (`replay_batch`, `loss_terms`, the optimizer step), `after_task`, then the
stream's evaluation: task j inside `route(j)`, on the prompts `eval_context(j, questions)` rewrote
(`context_methods`), against the answers revised by the tasks arrived so far. A run whose methods
all train nothing (`Compatibility.trains`, e.g. `retrieval` alone) has 0 steps per task and a frozen
model: no optimizer exists, the hooks, evaluations and checkpoints happen as in any run.

    from lifelong import load_config, run
    result = run(load_config("toy_self_replay"))
"""

from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedType

from lifelong.config import RunConfig
from lifelong.data import build_stream
from lifelong.data.batching import (
    Batch,
    BatchSchedule,
    EncodedSet,
    EncodedStream,
    concat,
    encode_stream,
    forward_groups,
)
from lifelong.distributed import all_sum, any_rank, is_main, join, mean_over_ranks, on_cpu, on_main, world
from lifelong.errors import DivergenceError, UserError
from lifelong.evaluate import evaluate_stream, set_eval_references
from lifelong.loop import (
    check_trackers,
    compiled_for_training,
    lr_factor,
    new_optimizer,
    optimizer_step,
    set_lr,
    stop_on_ctrl_c,
)
from lifelong.losses import next_token_loss
from lifelong.methods import (
    Forward,
    MethodContext,
    build_method,
    call_order,
    check_distributed,
    context_methods,
    method_labels,
    route_methods,
)
from lifelong.models import enable_gradient_checkpointing, load_for_run
from lifelong.models.delta import BaseTracker, train_new_rows
from lifelong.preference import References, dpo_terms, reference_logprobs
from lifelong.progress import stream_position
from lifelong.rundir import (
    Progress,
    RunDir,
    atomic_write,
    check_base,
    warn,
)
from lifelong.runlog import RunLog
from lifelong.seeding import load_rng_state, rng_state, seed_everything


class Interrupted(Exception):
    """Ctrl-C: a checkpoint was written at the last finished step; the run can be resumed."""


@dataclass
class RunResult:
    path: Path
    config: RunConfig
    progress: Progress
    task_names: list[str]
    already_finished: bool = False  # `resume` of a run that had finished: nothing was trained or written


class Trainer:
    """Holds what the loop needs; `run()` is the loop. Not meant to be subclassed."""

    last_loss: float | None = None  # of the latest step, for the progress lines off a terminal

    def __init__(self, cfg: RunConfig, run_dir: RunDir, resume: bool = False, show_progress: bool = True):
        self.cfg, self.run_dir, self.resume = cfg, run_dir, resume
        seed_everything(cfg.seed)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        check_trackers(cfg.tracking)
        self.accelerator = Accelerator(
            cpu=on_cpu(),  # several processes on a machine without a GPU: gloo
            mixed_precision=cfg.train.mixed_precision,
            log_with=list(cfg.tracking) or None,
            project_dir=str(run_dir.path / "tracking"),
        )
        check_distributed([m.name for m in cfg.methods], self.accelerator.num_processes)
        if self.accelerator.distributed_type == DistributedType.FSDP:  # sharded weights: see the docs
            raise UserError("FSDP is not supported yet (docs/distributed.md): launch with DDP")
        self.device = self.accelerator.device
        if cfg.model.dtype == "float16" and self.device.type == "cpu":
            raise UserError(
                "model dtype float16 does not train on a CPU (its loss overflows): use float32 or bfloat16"
            )
        stream = build_stream(cfg.stream, cfg.seed)
        self.task_names = stream.task_names
        self.columns = [*stream.task_names, *(t.name for t in stream.kept)]  # a matrix row's columns
        show = show_progress and cfg.progress
        self.log = RunLog(self.accelerator, run_dir, cfg.name, self.columns, bool(cfg.tracking), show)
        if stream.kept and stream.vocabulary is not None:
            warn("the stream's word-level vocabulary cannot spell the kept sets: they are scored on <unk>")
        model, self.tokenizer, max_length, new_token_ids, base = load_for_run(cfg.model, stream)
        # a pretrained base: checkpoints hold only what can differ from it (None: a preset, whole)
        self.base = None if base is None else {"source": base.source, "weights_hash": base.weights_hash}
        self.tracker = BaseTracker(model) if base is not None else None
        self.data: EncodedStream = encode_stream(stream, self.tokenizer, max_length)
        for note in self.data.notes:  # rows clipped or skipped to fit: never a silent loss
            warn(note)
        model = model.to(self.device)
        # DPO's references: the eval pairs' under the initial model (restored on resume), the training
        # pairs' under the model at each task's start (`train_task`)
        set_eval_references(model, self.data, cfg.train.eval_batch_size, cfg.train.eval_examples)
        self.references = References(self.data)
        # the initial model, before any method adds weights: the baseline b of forward transfer
        self.initial = None if resume and run_dir.latest_checkpoint() else self.score(model)
        self.methods = [build_method(m) for m in cfg.methods]  # in config order (checkpoints' keys)
        self.labels = method_labels([m.name for m in cfg.methods])  # each method's loss terms' prefix
        # the order of every hook call: architecture methods first (registry.call_order)
        self.order = call_order([type(m).compatibility for m in self.methods])
        self.hooked = [self.methods[i] for i in self.order]
        ctx = MethodContext(
            self.data,
            self.tokenizer,
            self.device,
            cfg.seed,
            cfg.train.batch_size,
            max_length,
            cfg.train.loss_on,
            partial(route_methods, self.hooked),
            self.write_sample,
            self.write_file,
            self.accelerator.process_index,
            self.accelerator.num_processes,
        )
        for method in self.hooked:
            model = method.setup(model, ctx)
        # a run of methods that train nothing (retrieval alone): 0 steps a task, nothing trainable
        trains = any(type(m).compatibility.trains for m in self.methods)
        self.steps = cfg.train.steps_per_task if trains else 0
        # a task's width in the global step count of the logs: a task that trains nothing counts as one
        # (its evaluation is at step 1), so a resume drops what was logged after its checkpoint
        self.span = max(self.steps, 1)
        if not self.steps:
            model.requires_grad_(False)
        elif any(type(m).compatibility.kind != "full" for m in self.methods):  # the base may be frozen
            model = train_new_rows(model, new_token_ids)  # the added task tokens' rows train anyway
        if cfg.train.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.raw = self.model = model
        self.wrapped: set[int] | None = None  # the parameters DistributedDataParallel reduces
        if self.accelerator.num_processes == 1:
            self.model = self.accelerator.prepare(model)
            self.raw = self.accelerator.unwrap_model(self.model)
            self.model = compiled_for_training(self.model, self.raw, cfg.train.compile)
        self.rewrap()
        self.optimizer: torch.optim.Optimizer | None = None
        self.progress = Progress(
            cfg.config_hash(),
            kept=self.columns[len(self.task_names) :],
            total_params=sum(p.numel() for p in self.raw.parameters()),
        )
        self.log.start_trackers(cfg)  # last: a tracker that cannot start leaves no run behind

    # ------------------------------------------------------------------ setup
    def new_optimizer(self) -> torch.optim.Optimizer:
        trainable = (p for p in self.raw.parameters() if p.requires_grad)
        return new_optimizer(trainable, self.cfg.train, self.device)

    def trainable_ids(self) -> set[int]:
        return {id(p) for p in self.raw.parameters() if p.requires_grad}

    def rewrap(self) -> None:
        """Under several processes, wrap the model in DistributedDataParallel, and again whenever its
        trainable parameters change (a task's new adapter, prompt or block), since DDP fixes the
        parameters it reduces when it wraps. The old wrapper is released first, with its hooks."""
        trainable = self.trainable_ids()
        if self.accelerator.num_processes == 1 or trainable == self.wrapped:
            return
        self.model = None
        self.accelerator.free_memory()  # drops Accelerate's reference to the old wrapper
        # nothing trains yet (grace before its first edit, retrieval): DDP has nothing to reduce
        if trainable:
            prepared = self.accelerator.prepare(self.raw)
            self.model = compiled_for_training(prepared, self.raw, self.cfg.train.compile)
        else:
            self.model = self.raw
        self.wrapped = trainable

    def truncate_logs(self, global_step: int) -> None:
        if self.accelerator.is_main_process:
            self.run_dir.truncate_logs(global_step)
        self.accelerator.wait_for_everyone()

    def restore(self) -> None:
        ckpt = self.run_dir.latest_checkpoint()
        if ckpt is None:  # stopped before the first checkpoint: start over
            self.truncate_logs(-1)
            return
        check_base(ckpt, self.base)
        self.progress, opt_state, rng = self.run_dir.load_checkpoint(
            ckpt, self.raw, self.methods, self.references
        )
        if self.tracker is not None:
            self.tracker.trained = set(self.progress.trained_base)
        if opt_state is not None:
            self.optimizer = self.new_optimizer()
            self.optimizer.load_state_dict(opt_state)
        load_rng_state(rng)
        self.rewrap()  # the methods selected the resumed task's weights
        self.truncate_logs(self.global_step())

    def global_step(self) -> int:
        return self.progress.task * self.span + self.progress.step

    # ------------------------------------------------------------------- loop
    def run(self) -> RunResult:
        with self.log.closing_trackers(stopped=(Interrupted, KeyboardInterrupt)):
            if self.resume:
                self.restore()
            if self.progress.baseline is None:
                self.progress.baseline = self.record_eval(-1, 0, *self.initial)
            with stop_on_ctrl_c() as ctrl_c, self.log.bar() as bar:
                for task_index in range(self.progress.task, len(self.data)):
                    self.train_task(task_index, bar, ctrl_c)
            self.log.results(self.progress, self.task_names, self.data, self.global_step())
        self.accelerator.wait_for_everyone()  # the results are written before any process reads them
        return RunResult(self.run_dir.path, self.cfg, self.progress, self.task_names)

    def train_task(self, t: int, bar, ctrl_c) -> None:
        cfg = self.cfg.train
        supplied = [e for m in self.hooked if (e := m.train_examples(t, self.data)) is not None]
        assert len(supplied) <= 1, "check_compatible allows one method that supplies the training rows"
        examples = supplied[0] if supplied else self.data.tasks[t].train
        schedule = BatchSchedule(len(examples), cfg.batch_size, self.cfg.seed, t)
        if self.progress.step == 0:
            self.start_task(t, examples)
        examples.reference = self.references.train if examples.pairs else None
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        bar_task = bar.add_task(
            f"task {t + 1}/{len(self.data)} {self.task_names[t]}",
            total=self.steps,
            completed=self.progress.step,
            loss=float("nan"),
            tps=0.0,
        )
        for step in range(self.progress.step, self.steps):
            start = time.perf_counter()
            total = self.steps if cfg.rewarm else self.steps * len(self.data)
            at = step if cfg.rewarm else self.global_step()
            set_lr(self.optimizer, cfg.lr * lr_factor(at, total, cfg))
            rows = schedule.rows(step)[rank::world]
            batch = examples.batch(rows, cfg.loss_on)
            extras = [m.replay_batch(t, step, self.raw) for m in self.hooked]
            reference = examples.reference[rows] if examples.pairs else None
            terms = self.step(batch, extras, reference, self.data.tasks[t].beta)
            self.progress.step = step + 1
            elapsed = time.perf_counter() - start
            self.progress.train_seconds += elapsed
            self.log_step(t, step, terms, batch, extras, elapsed, bar, bar_task)
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < self.steps:
                self.evaluate(task=t, step=step + 1)
            if ctrl_c["stop"] or (
                cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < self.steps
            ):
                self.checkpoint(f"task-{t + 1:03d}-step-{step + 1:07d}")
            if ctrl_c["stop"]:
                raise Interrupted(str(self.run_dir.path))
        for method in self.hooked:
            method.after_task(t, self.raw)
        self.progress.matrix.append(self.evaluate(task=t, step=self.span))
        self.progress.task, self.progress.step = t + 1, 0
        self.checkpoint(f"after-task-{t + 1:03d}")
        bar.remove_task(bar_task)

    def start_task(self, t: int, examples: EncodedSet) -> None:
        """Task `t`'s first step is next: the methods' `before_task`, a fresh optimizer if the trainable
        set changed (e.g. a new task's adapter) or `reset_optimizer`, and DPO's reference."""
        for method in self.hooked:
            method.before_task(t, self.raw)
        trainable = [p for p in self.raw.parameters() if p.requires_grad]
        held = [p for g in self.optimizer.param_groups for p in g["params"]] if self.optimizer else []
        if not trainable:  # a run that trains nothing has no optimizer
            self.optimizer = None
        elif {id(p) for p in trainable} != {id(p) for p in held} or self.cfg.train.reset_optimizer:
            self.optimizer = self.new_optimizer()
        self.rewrap()
        n_trainable = sum(p.numel() for p in trainable)
        self.progress.trainable_params = max(self.progress.trainable_params, n_trainable)
        if self.tracker is not None:  # base tensors that train now go into every later checkpoint
            self.tracker.note_trainable(self.raw)
            self.progress.trained_base = sorted(self.tracker.trained)
        if examples.pairs:  # DPO's reference: the model at the task's start, once per pair
            batch = self.cfg.train.eval_batch_size // 2 or 1
            self.references.train = reference_logprobs(self.raw, examples, batch)

    def step(
        self,
        batch: Batch,
        extras: list[Batch | None],
        reference: torch.Tensor | None = None,
        beta: float = 0.0,
    ) -> dict[str, float]:
        """One optimizer step on the task batch plus the methods' replay rows. The task's objective is
        its next-token loss, or with a `reference` (B, 2) (a preference task's pairs) the DPO loss at
        `beta` (lifelong/preference.py), logged with its reward margins.

        Rows of different widths (e.g. long replayed samples next to short new rows) get a forward
        pass each rather than being padded to one width. Under DistributedDataParallel it is always
        one pass: DDP expects one forward per backward.
        """
        parts = [batch, *(e.trimmed() for e in extras if e is not None)]
        groups = forward_groups(parts) if self.accelerator.num_processes == 1 else [list(range(len(parts)))]
        views: list[Forward] = [None] * len(parts)  # type: ignore[list-item]
        for group in groups:
            full = concat([parts[i] for i in group], self.data.pad_id).to(self.device)
            with self.accelerator.autocast():
                logits = self.model(input_ids=full.input_ids, attention_mask=full.attention_mask).logits
            token_loss, mask = next_token_loss(logits, full.input_ids, full.loss_mask)  # (B, T-1) each
            offset = 0
            for i in group:
                rows = slice(offset, offset + len(parts[i]))
                views[i] = Forward(full.select(rows), logits[rows], token_loss[rows], mask[rows])
                offset += len(parts[i])
        task_view, replay_views = views[0], iter(views[1:])
        terms, stats = {"task": self.task_loss(task_view)}, {}
        if reference is not None:
            terms, stats = dpo_terms(task_view.token_loss, reference, beta)
        for i, method, extra in zip(self.order, self.hooked, extras, strict=True):
            own = method.loss_terms(self.raw, task_view, next(replay_views) if extra is not None else None)
            terms |= {f"{self.labels[i]}.{name}": value for name, value in own.items()}  # unique keys
        loss = sum(terms.values())
        # nan or inf on this process, or on another (then this one's loss is finite): all stop together
        if any_rank(~torch.isfinite(loss.detach())):
            value = loss.item() if not torch.isfinite(loss) else float("nan")
            raise DivergenceError(self.divergence_message(value))
        optimizer_step(self.accelerator, loss, self.optimizer, self.model, self.cfg.train.grad_clip)
        return mean_over_ranks({"loss": loss.item(), **{k: v.item() for k, v in terms.items()}, **stats})

    def task_loss(self, view: Forward) -> torch.Tensor:
        """The task rows' mean token loss. Under several processes the sum of this process's token
        losses over the tokens counted on all of them, times their number: DDP averages the gradients,
        so they are those of the whole batch's mean, as one process computes it (a mean per process
        would weigh a process's tokens by how few it has)."""
        world = self.accelerator.num_processes
        if world == 1:
            return view.mean_loss()
        counted = view.mask.sum().detach()
        all_sum([counted])
        return view.token_loss.sum() * world / counted.clamp(min=1.0)

    def divergence_message(self, loss: float) -> str:
        where = f"task {self.progress.task + 1} step {self.progress.step + 1}"
        ckpt = self.run_dir.latest_checkpoint()
        kept = (
            f"the last checkpoint ({ckpt.name}) is kept: lifelong run --resume {self.run_dir.path}"
            if ckpt
            else "no checkpoint was written yet"
        )
        return f"the loss became {loss} at {where} (try a lower learning rate); {kept}"

    # -------------------------------------------------------------- outputs
    def score(
        self, model: torch.nn.Module, route=None, newest: int = -1, contexts=None
    ) -> tuple[list[float], dict, float, dict]:
        """Every task's score for `model` (inside `route(j)` for task j; none: as it is) once tasks up
        to `newest` have arrived, on the prompts `contexts(j, questions)` gives (none: as encoded), the
        metrics' details, the seconds it took, and the first answers of each task (train.predictions)."""
        start = time.perf_counter()
        t = self.cfg.train
        details: dict[str, dict[str, float]] = {}
        shown: dict[str, list[dict]] = {}
        route = route or (lambda task_index: nullcontext())
        scores = evaluate_stream(
            model,
            self.data,
            t.eval_batch_size,
            t.eval_examples,
            route,
            details,
            shown,
            t.predictions,
            newest,
            contexts or (lambda task_index, questions: None),
            (self.accelerator.process_index, self.accelerator.num_processes),
        )
        return scores, details, time.perf_counter() - start, shown

    def evaluate(self, task: int, step: int) -> list[float]:
        contexts = partial(context_methods, self.hooked)
        return self.record_eval(task, step, *self.score(self.raw, self.route, task, contexts))

    def record_eval(
        self, task: int, step: int, scores: list[float], details: dict, seconds: float, shown: dict
    ) -> list[float]:
        """Log one evaluation of the stream (`task` -1: the initial model) and return its scores."""
        self.progress.eval_seconds += seconds
        if bad := [n for n, v in zip(self.columns, scores, strict=True) if not math.isfinite(v)]:
            where = "the initial model" if task < 0 else f"task {task + 1} step {step}"
            warn(f'the evaluation of {", ".join(bad)} at {where} diverged (score nan/inf, written as "nan")')
        global_step = max(task, 0) * self.span + step if task >= 0 else 0
        trained = self.task_names[task] if task >= 0 else None
        position = stream_position(task, len(self.data), step)
        elapsed = self.progress.train_seconds + self.progress.eval_seconds
        where = (global_step, task, step)
        self.log.evaluation(where, scores, details, shown, trained, position, self.last_loss, elapsed)
        return scores

    def route(self, task_index: int) -> AbstractContextManager[None]:
        """Every method's weights for scoring task `task_index` (e.g. that task's adapter)."""
        return route_methods(self.hooked, task_index, self.raw)

    def log_step(self, t, step, terms, batch, extras, elapsed, bar, bar_task) -> None:
        tokens = sum(int(b.attention_mask.sum()) for b in (batch, *extras) if b is not None)
        self.progress.trained_tokens += tokens * self.accelerator.num_processes
        tokens_per_s = tokens / max(elapsed, 1e-9)
        lr = self.optimizer.param_groups[0]["lr"]
        self.log.step(self.global_step(), t, step + 1, lr, terms, tokens_per_s)
        bar.update(bar_task, advance=1, loss=terms["loss"], tps=tokens_per_s)
        self.last_loss = terms["loss"]

    def checkpoint(self, tag: str) -> None:
        if self.accelerator.is_main_process:
            changed = None if self.tracker is None else (self.tracker.changed_state(self.raw), self.base)
            # at a task boundary with reset_optimizer the next task starts a fresh AdamW: no moments kept
            fresh = self.progress.step == 0 and self.cfg.train.reset_optimizer
            optimizer = None if fresh else self.optimizer
            self.run_dir.save_checkpoint(
                tag,
                self.raw,
                optimizer,
                self.methods,
                self.progress,
                rng_state(),
                changed,
                self.references,
            )
            self.run_dir.prune_checkpoints(self.cfg.train.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    def write_file(self, path: str, data: bytes) -> None:
        """`MethodContext.write_file`: a method's file for users, `<run dir>/<path>`, written whole."""
        if self.accelerator.is_main_process:
            atomic_write(self.run_dir.path / path, data)

    def write_sample(self, name: str, record: dict) -> None:
        """`MethodContext.write_sample`: a method's record, stamped with the global step it serves
        (1-based, as train_log.jsonl: a resume drops the records after its checkpoint)."""
        self.log.sample(name, self.global_step() + 1, record)


def run(cfg: RunConfig, show_progress: bool = True) -> RunResult:
    """Start a new run of `cfg` in a new directory under `cfg.output_dir` (under several processes:
    made by rank 0, its path sent to the others)."""
    join()
    check_distributed([m.name for m in cfg.methods], world())
    run_dir = RunDir(on_main(lambda: RunDir.create(cfg).path))
    try:
        trainer = Trainer(cfg, run_dir, show_progress=show_progress)
    except UserError:
        if is_main():
            run_dir.remove_if_unstarted()
        raise
    return trainer.run()


def resume(path: str | Path, cfg: RunConfig | None = None, show_progress: bool = True) -> RunResult:
    """Continue the run in `path` from its newest checkpoint (or from the start if it has none). A
    finished run is returned as it is: nothing is trained or written again."""
    if RunDir(Path(path)).finished:
        return RunResult(Path(path), *RunDir(Path(path)).finished_state(cfg), already_finished=True)
    join()
    run_dir, cfg = on_main(lambda: RunDir.open(Path(path), cfg))  # a changed config: recorded by rank 0
    check_distributed([m.name for m in cfg.methods], world())
    return Trainer(cfg, run_dir, resume=True, show_progress=show_progress).run()
