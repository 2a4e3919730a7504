"""The one training loop: a stream of tasks, each trained for `steps_per_task` steps, the whole stream
evaluated after every task (and every `eval_every` steps), checkpoints after every task (and every
`checkpoint_every` steps). Methods change what is trained through their hooks; only this file calls
backward, clipping, the optimizer and zero_grad.

    from lifelong import load_config, run
    result = run(load_config("toy_self_replay"))
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from lifelong.config import RunConfig, TrainConfig
from lifelong.data import build_stream
from lifelong.data.batching import Batch, BatchSchedule, EncodedStream, concat, encode_stream, forward_groups
from lifelong.errors import DivergenceError, UserError
from lifelong.evaluate import evaluate_stream
from lifelong.methods import Forward, MethodContext, build_method, method_entry, route_methods
from lifelong.models import load_for_run
from lifelong.report import write_results
from lifelong.run import Progress, RunDir
from lifelong.seeding import load_rng_state, rng_state, seed_everything


class Interrupted(Exception):
    """Ctrl-C: a checkpoint was written at the last finished step; the run can be resumed."""


@dataclass
class RunResult:
    path: Path
    config: RunConfig
    progress: Progress
    task_names: list[str]


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak LR at `step` (0-based) of a schedule of `total` steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    shape = 0.5 * (1 + math.cos(math.pi * frac)) if cfg.schedule == "cosine" else 1 - frac
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape


def next_token_loss(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position cross-entropy (masked) and the mask: both (B, T-1)."""
    mask = batch.loss_mask[:, 1:].float()  # token t is predicted at position t-1
    ce = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), batch.input_ids[:, 1:], reduction="none")
    return ce * mask, mask


@contextmanager
def stop_on_ctrl_c():
    """The first Ctrl-C sets a flag that the loop reads between steps; a second one stops at once."""
    flag = {"stop": False}

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C alone
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class Trainer:
    """Holds what the loop needs; `run()` is the loop. Not meant to be subclassed."""

    def __init__(self, cfg: RunConfig, run_dir: RunDir, resume: bool = False, show_progress: bool = True):
        self.cfg, self.run_dir, self.resume = cfg, run_dir, resume
        self.show_progress = show_progress and cfg.progress
        seed_everything(cfg.seed)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        check_trackers(cfg.tracking)
        self.accelerator = Accelerator(
            mixed_precision=cfg.train.mixed_precision,
            log_with=list(cfg.tracking) or None,
            project_dir=str(run_dir.path / "tracking"),
        )
        single = [
            m.name for m in cfg.methods if not method_entry(m.name).method_cls.compatibility.distributed
        ]
        if single and self.accelerator.num_processes > 1:
            raise UserError(f"method {single[0]} cannot run on several processes (its trainable set changes)")
        if cfg.tracking:
            self.accelerator.init_trackers(run_dir.path.name, config=flat_config(cfg))
        self.device = self.accelerator.device
        stream = build_stream(cfg.stream, cfg.seed)
        self.task_names = stream.task_names
        model, self.tokenizer, max_length = load_for_run(cfg.model, stream)
        self.data: EncodedStream = encode_stream(stream, self.tokenizer, max_length)
        self.methods = [build_method(m) for m in cfg.methods]
        ctx = MethodContext(
            self.data,
            self.tokenizer,
            self.device,
            cfg.seed,
            cfg.train.batch_size,
            max_length,
            cfg.train.loss_on,
            partial(route_methods, self.methods),
        )
        model.to(self.device)
        for method in self.methods:
            model = method.setup(model, ctx)
        self.model = self.accelerator.prepare(model)
        self.raw = self.accelerator.unwrap_model(self.model)
        self.optimizer: torch.optim.Optimizer | None = None
        self.progress = Progress(
            cfg.config_hash(), total_params=sum(p.numel() for p in self.raw.parameters())
        )

    # ------------------------------------------------------------------ setup
    def new_optimizer(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        params = [p for p in self.raw.parameters() if p.requires_grad]
        # the fused kernel is several times faster than the per-tensor loop on CPU and on CUDA
        fused = True if self.device.type in ("cpu", "cuda") else None
        return torch.optim.AdamW(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, fused=fused)

    def restore(self) -> None:
        ckpt = self.run_dir.latest_checkpoint()
        if ckpt is None:  # stopped before the first checkpoint: start over
            self.run_dir.truncate_logs(-1)
            return
        self.progress, opt_state, rng = self.run_dir.load_checkpoint(ckpt, self.raw, self.methods)
        if opt_state is not None:
            self.optimizer = self.new_optimizer()
            self.optimizer.load_state_dict(opt_state)
        load_rng_state(rng)
        self.run_dir.truncate_logs(self.global_step())

    def global_step(self) -> int:
        return self.progress.task * self.cfg.train.steps_per_task + self.progress.step

    # ------------------------------------------------------------------- loop
    def run(self) -> RunResult:
        if self.resume:
            self.restore()
        if self.progress.baseline is None:
            self.progress.baseline = self.evaluate(task=-1, step=0)
        with stop_on_ctrl_c() as ctrl_c, self.progress_bar() as bar:
            for task_index in range(self.progress.task, len(self.data)):
                self.train_task(task_index, bar, ctrl_c)
        self.write_results()
        return RunResult(self.run_dir.path, self.cfg, self.progress, self.task_names)

    def train_task(self, t: int, bar, ctrl_c) -> None:
        cfg = self.cfg.train
        examples = next(
            (e for m in self.methods if (e := m.train_examples(t, self.data)) is not None),
            self.data.tasks[t].train,
        )
        schedule = BatchSchedule(len(examples), cfg.batch_size, self.cfg.seed, t)
        if self.progress.step == 0:
            for method in self.methods:
                method.before_task(t, self.raw)
            trainable = [p for p in self.raw.parameters() if p.requires_grad]
            held = [p for g in self.optimizer.param_groups for p in g["params"]] if self.optimizer else []
            changed = {id(p) for p in trainable} != {id(p) for p in held}  # e.g. a new task's adapter
            if changed or cfg.reset_optimizer:
                self.optimizer = self.new_optimizer()
            self.progress.trainable_params = max(
                self.progress.trainable_params, sum(p.numel() for p in trainable)
            )
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        bar_task = bar.add_task(
            f"task {t + 1}/{len(self.data)} {self.task_names[t]}",
            total=cfg.steps_per_task,
            completed=self.progress.step,
            loss=float("nan"),
            tps=0.0,
        )
        for step in range(self.progress.step, cfg.steps_per_task):
            start = time.perf_counter()
            total = cfg.steps_per_task if cfg.rewarm else cfg.steps_per_task * len(self.data)
            at = step if cfg.rewarm else self.global_step()
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(at, total, cfg)
            batch = examples.batch(schedule.rows(step)[rank::world], cfg.loss_on)
            extras = [m.replay_batch(t, step, self.raw) for m in self.methods]
            terms = self.step(batch, extras)
            self.progress.step = step + 1
            elapsed = time.perf_counter() - start
            self.progress.train_seconds += elapsed
            self.log_step(t, step, terms, batch, extras, elapsed, bar, bar_task)
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps_per_task:
                self.evaluate(task=t, step=step + 1)
            if ctrl_c["stop"] or (
                cfg.checkpoint_every
                and (step + 1) % cfg.checkpoint_every == 0
                and step + 1 < cfg.steps_per_task
            ):
                self.checkpoint(f"task-{t + 1:03d}-step-{step + 1:07d}")
            if ctrl_c["stop"]:
                raise Interrupted(str(self.run_dir.path))
        for method in self.methods:
            method.after_task(t, self.raw)
        self.progress.matrix.append(self.evaluate(task=t, step=cfg.steps_per_task))
        self.progress.task, self.progress.step = t + 1, 0
        self.checkpoint(f"after-task-{t + 1:03d}")
        bar.remove_task(bar_task)

    def step(self, batch: Batch, extras: list[Batch | None]) -> dict[str, float]:
        """One optimizer step on the task batch plus the methods' replay rows.

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
            token_loss, mask = next_token_loss(logits, full)  # (B, T-1) each
            offset = 0
            for i in group:
                rows = slice(offset, offset + len(parts[i]))
                views[i] = Forward(full.select(rows), logits[rows], token_loss[rows], mask[rows])
                offset += len(parts[i])
        task_view, replay_views = views[0], iter(views[1:])
        terms = {"task": task_view.mean_loss()}
        for method, extra in zip(self.methods, extras, strict=True):
            terms |= method.loss_terms(self.raw, task_view, next(replay_views) if extra is not None else None)
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            where = f"task {self.progress.task + 1} step {self.progress.step + 1}"
            raise DivergenceError(
                f"the loss became {loss.item()} at {where} (try a lower learning rate); "
                "the last checkpoint is kept"
            )
        self.accelerator.backward(loss)
        if self.cfg.train.grad_clip:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}

    # -------------------------------------------------------------- outputs
    def evaluate(self, task: int, step: int) -> list[float]:
        start = time.perf_counter()
        t = self.cfg.train
        details: dict[str, dict[str, float]] = {}
        scores = evaluate_stream(self.raw, self.data, t.eval_batch_size, t.eval_examples, self.route, details)
        self.progress.eval_seconds += time.perf_counter() - start
        global_step = max(task, 0) * t.steps_per_task + step if task >= 0 else 0
        if self.accelerator.is_main_process:
            record = {"global_step": global_step, "task": task, "step": step, "scores": scores}
            self.run_dir.append("evals.jsonl", record | ({"details": details} if details else {}))
        if self.cfg.tracking:
            named = {f"eval/{name}": score for name, score in zip(self.task_names, scores, strict=True)}
            self.accelerator.log(named, step=global_step)
        return scores

    def route(self, task_index: int) -> AbstractContextManager[None]:
        """Every method's weights for scoring task `task_index` (e.g. that task's adapter)."""
        return route_methods(self.methods, task_index, self.raw)

    def log_step(self, t, step, terms, batch, extras, elapsed, bar, bar_task) -> None:
        tokens = int(batch.attention_mask.sum()) + sum(
            int(e.attention_mask.sum()) for e in extras if e is not None
        )
        record = {
            "global_step": self.global_step(),
            "task": t,
            "step": step + 1,
            "lr": self.optimizer.param_groups[0]["lr"],
            **{name if name == "loss" else f"loss_{name}": value for name, value in terms.items()},
            "tokens_per_s": tokens / max(elapsed, 1e-9),
        }
        if self.accelerator.is_main_process:
            self.run_dir.append("train_log.jsonl", record)
        if self.cfg.tracking:
            self.accelerator.log({f"train/{k}": v for k, v in record.items()}, step=record["global_step"])
        bar.update(bar_task, advance=1, loss=terms["loss"], tps=record["tokens_per_s"])

    def checkpoint(self, tag: str) -> None:
        if self.accelerator.is_main_process:
            self.run_dir.save_checkpoint(
                tag, self.raw, self.optimizer, self.methods, self.progress, rng_state()
            )
            self.run_dir.prune_checkpoints(self.cfg.train.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    def write_results(self) -> None:
        if self.accelerator.is_main_process:
            result = write_results(self.run_dir, self.progress, self.task_names, self.data)
            if self.cfg.tracking:
                metrics = {f"metrics/{k}": v for k, v in result["metrics"].items() if v is not None}
                self.accelerator.log(metrics, step=self.global_step())
        if self.cfg.tracking:
            self.accelerator.end_training()

    def progress_bar(self):
        return progress_bar(enabled=self.show_progress and self.accelerator.is_main_process)


def progress_bar(enabled: bool, *extra_fields: str):
    """A rich progress bar of steps with the loss and tokens/s (fields `loss`, `tps`), and each of
    `extra_fields` shown as it is."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TimeRemainingColumn(),
        *(TextColumn(f"{{task.fields[{name}]}}") for name in extra_fields),
        disable=not enabled,
        transient=True,
    )


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def check_trackers(trackers: list[str]) -> None:
    import importlib.util

    for name in trackers:
        if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None:
            raise UserError(f"tracking with {name} needs its package: pip install {TRACKER_PACKAGES[name]}")


def flat_config(cfg: RunConfig) -> dict[str, str | int | float | bool]:
    """The config as flat scalars, the form experiment trackers accept as hyperparameters."""
    out: dict[str, str | int | float | bool] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        elif value is not None:
            out[prefix] = value if isinstance(value, str | int | float | bool) else str(value)

    walk("", cfg.model_dump(mode="json"))
    return out


def run(cfg: RunConfig, show_progress: bool = True) -> RunResult:
    """Start a new run of `cfg` in a new directory under `cfg.output_dir`."""
    run_dir = RunDir.create(cfg)
    try:
        trainer = Trainer(cfg, run_dir, show_progress=show_progress)
    except UserError:
        run_dir.remove_if_unstarted()
        raise
    return trainer.run()


def resume(path: str | Path, cfg: RunConfig | None = None, show_progress: bool = True) -> RunResult:
    """Continue the run in `path` from its newest checkpoint (or from the start if it has none)."""
    run_dir, cfg = RunDir.open(Path(path), cfg)
    return Trainer(cfg, run_dir, resume=True, show_progress=show_progress).run()
