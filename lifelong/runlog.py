"""Where a run's records go: the run directory's logs (`train_log.jsonl`, `evals.jsonl`,
`predictions.jsonl`, a method's own `<name>.jsonl`, the results files), the configured trackers
(through Accelerate) and, off a terminal, a line per evaluation. Only the main process writes files;
every process calls in the same order, so trackers see one stream of records."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from accelerate import Accelerator
from pydantic import BaseModel

from lifelong.loop import end_trackers, start_trackers, tracker_key
from lifelong.progress import eval_line, on_terminal, print_line, progress_bar
from lifelong.report import write_results
from lifelong.rundir import Progress, RunDir

# What a step logs next to its loss terms without the `loss_` prefix (a preference task's DPO margins).
STEP_STATS = ("reward_margin", "reward_accuracy")


class RunLog:
    def __init__(
        self,
        accelerator: Accelerator,
        run_dir: RunDir,
        name: str,
        columns: list[str],  # of a matrix row: the stream's tasks, then the kept sets
        tracking: bool,
        show: bool,  # progress bars on a terminal, a line per evaluation off one
    ):
        self.accelerator, self.run_dir, self.name, self.columns = accelerator, run_dir, name, columns
        self.tracking = tracking
        self.show = show and accelerator.is_main_process
        self.main = accelerator.is_main_process

    def bar(self):
        return progress_bar(enabled=self.show)

    def start_trackers(self, cfg: BaseModel) -> None:
        """Open the configured trackers (`cfg.tracking`); `closing_trackers` closes them."""
        if self.tracking:
            start_trackers(self.accelerator, cfg.tracking, cfg.tracking_project, self.run_dir.path, cfg)

    @contextmanager
    def closing_trackers(
        self, stopped: tuple[type[BaseException], ...] = (KeyboardInterrupt,)
    ) -> Iterator[None]:
        """Close the trackers when the block ends: the run finished, failed on an error, or was killed
        by one of the `stopped` exceptions (a Ctrl-C); never left open as a running run."""
        if not self.tracking:
            yield
            return
        try:
            yield
        except stopped:
            end_trackers(self.accelerator, "killed")
            raise
        except BaseException:
            end_trackers(self.accelerator, "failed")
            raise
        end_trackers(self.accelerator, "finished")

    def track(self, values: dict[str, Any], global_step: int) -> None:
        if self.tracking:
            self.accelerator.log({tracker_key(k): v for k, v in values.items()}, step=global_step)

    def step(
        self, global_step: int, task: int, step: int, lr: float, terms: dict, tokens_per_s: float
    ) -> None:
        """One optimizer step's record: its loss terms (`loss_<term>`) and throughput."""
        named = {k if k in ("loss", *STEP_STATS) else f"loss_{k}": v for k, v in terms.items()}
        record = {"global_step": global_step, "task": task, "step": step, "lr": lr, **named}
        record["tokens_per_s"] = tokens_per_s
        if self.main:
            self.run_dir.append("train_log.jsonl", record)
        self.track({f"train/{k}": v for k, v in record.items() if k != "global_step"}, global_step)

    def evaluation(
        self,
        where: tuple[int, int, int],
        scores: list[float],
        details: dict,
        shown: dict,
        trained: str | None,
        position: str,
        last_loss: float | None,
        elapsed: float,
    ) -> None:
        """One evaluation of the stream at `where` = (global step, task, step), `task` -1 for the
        initial model: scores, the details reported next to them, the first answers (`shown`)."""
        global_step, task, step = where
        at = {"global_step": global_step, "task": task, "step": step}
        if self.main:
            scored = at | {"scores": scores} | ({"details": details} if details else {})
            self.run_dir.append("evals.jsonl", scored)
            if shown:  # what was scored: the first answers of each task next to their targets
                self.run_dir.append("predictions.jsonl", at | {"trained": trained, "predictions": shown})
        self.track(
            {f"eval/{name}": score for name, score in zip(self.columns, scores, strict=True)}, global_step
        )
        if self.show and not on_terminal():  # no live bars off a terminal: a line per evaluation
            print_line(eval_line(self.name, position, last_loss, scores, elapsed))

    def sample(self, name: str, global_step: int, record: dict[str, Any]) -> None:
        """A method's record into `<name>.jsonl`, stamped with the global step it serves."""
        if self.main:
            self.run_dir.append(f"{name}.jsonl", {"global_step": global_step, **record})

    def results(self, progress: Progress, task_names: list[str], data, global_step: int) -> None:
        """The matrix, metrics and plots; their summary to the trackers."""
        if self.main:
            result = write_results(self.run_dir, progress, task_names, data)
            if self.tracking:
                metrics = {f"metrics/{k}": v for k, v in result["metrics"].items() if v is not None}
                if kept := result.get("kept"):
                    metrics |= {f"metrics/kept_{k}": kept[k] for k in ("mean_drop", "worst_drop")}
                metrics |= {f"metrics/{k}": result[k] for k in ("train_seconds", "eval_seconds")}
                self.track(metrics, global_step)
