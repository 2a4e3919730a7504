"""Per-task wall time and peak memory over a 20-task stream: do they grow with the number of tasks?

The toy stream's four tasks repeated five times (`options: {rounds: 5}`: `add`, ..., `modadd5`, each
round drawn with its own seed and token), trained by each method of `METHODS` from its shipped config
(`toy_<method>.yaml`) with fewer steps per task, evaluation only at each task's end (every task of
the stream, as in any run) and a checkpoint after every task. Each method runs in a fresh process
(`spawn`), so one run's heap does not weigh on the next one's memory.

Per task: the wall time of `Trainer.train_task` (steps, method hooks, the evaluation and the
checkpoint) and the peak resident memory during it (the kernel's high-water mark `VmHWM`, reset at
the task's start by writing 5 to `/proc/self/clear_refs`; Linux only). Growth = the mean over the last
round's four tasks over the mean over the second round's, minus 1: the same four kinds of task, whose
rows differ in length (the first round is left out: no replay, Fisher or earlier adapter exists
during task 1). `lora_per_task` stores an adapter per task by design.

    .venv/bin/python benchmarks/per_task_cost.py                 # the measurement and the plot
    .venv/bin/python benchmarks/per_task_cost.py --quick         # a check that the script works
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    add_threads_option,
    apply_threads,
    header,
    print_table,
    quiet,
    result_line,
    timed_trainer_run,
)

METHODS = ["naive", "self_replay", "replay", "ewc", "lora_per_task"]
ROUND = 4  # the toy stream's tasks: add, reverse, sort, modadd
PLOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "per_task_cost.png"


def reset_peak_memory() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def method_config(method: str, rounds: int, steps: int, eval_examples: int, threads: int, out: str):
    from lifelong import load_config
    from lifelong.config import parse_config

    data = load_config(f"toy_{method}").model_dump(mode="json")
    data["stream"]["options"] = {**data["stream"]["options"], "rounds": rounds}
    data["train"] |= {
        "steps_per_task": steps,
        "warmup_steps": min(data["train"]["warmup_steps"], steps // 5),
        "eval_every": None,
        "checkpoint_every": None,
        "eval_examples": eval_examples,
        "threads": threads,
    }
    return parse_config(data | {"output_dir": out, "progress": False})


def measure(args: tuple[str, int, int, int, int]) -> list[tuple[float, float]]:
    """(wall seconds, peak MB) of each task of one method's run, in a fresh process."""
    method, rounds, steps, eval_examples, threads = args
    quiet()
    peaks: list[float] = []

    def wrap(trainer) -> None:
        train_task = trainer.train_task

        def with_peak(*a, **kw):
            reset_peak_memory()
            try:
                return train_task(*a, **kw)
            finally:
                peaks.append(peak_memory_mb())

        trainer.train_task = with_peak

    with tempfile.TemporaryDirectory() as out:
        timing = timed_trainer_run(method_config(method, rounds, steps, eval_examples, threads, out), wrap)
    return [(task.wall, peak) for task, peak in zip(timing.tasks, peaks, strict=True)]


def growth(values: list[float]) -> float:
    """The mean over the last round's four tasks over the mean over the second round's, minus 1: the
    same four kinds of task (their rows differ in length, so a window of other kinds would compare
    unlike work)."""
    return mean(last_round(values)) / mean(second_round(values)) - 1


def second_round(values: list[float]) -> list[float]:
    return values[ROUND : 2 * ROUND]


def last_round(values: list[float]) -> list[float]:
    return values[-ROUND:]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def plot(results: dict[str, list[tuple[float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, tasks in results.items():
        index = range(1, len(tasks) + 1)
        left.plot(index, [wall for wall, _ in tasks], marker="o", markersize=3, label=method)
        right.plot(index, [peak for _, peak in tasks], marker="o", markersize=3, label=method)
    left.set(xlabel="task", ylabel="wall time of the task (s)", title="time per task")
    right.set(xlabel="task", ylabel="peak resident memory (MB)", title="peak memory per task")
    left.set_ylim(bottom=0)
    left.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: only checks the script runs")
    parser.add_argument("--rounds", type=int, default=5, help="repeats of the four toy tasks")
    parser.add_argument("--steps", type=int, default=100, help="steps per task")
    parser.add_argument("--eval-examples", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    if args.quick:
        args.rounds, args.steps, args.eval_examples = 3, 4, 4
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (the second round is compared with the last)")
    import torch

    header("per-task cost over a long stream")
    threads = torch.get_num_threads()
    results: dict[str, list[tuple[float, float]]] = {}
    with get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for method in args.methods:
            job = (method, args.rounds, args.steps, args.eval_examples, threads)
            results[method] = pool.apply(measure, (job,))
    rows = []
    for method, tasks in results.items():
        walls, peaks = [w for w, _ in tasks], [p for _, p in tasks]
        rows.append([method, walls[0], mean(second_round(walls)), mean(last_round(walls)), growth(walls)])
        rows[-1] += [mean(second_round(peaks)), mean(last_round(peaks)), growth(peaks)]
        result_line(
            f"per_task_cost.{method}",
            tasks=len(tasks),
            wall_task1_s=walls[0],
            wall_growth=growth(walls),
            peak_mb_second_round=mean(second_round(peaks)),
            peak_mb_last_round=mean(last_round(peaks)),
            peak_growth=growth(peaks),
            walls_s="/".join(f"{w:.2f}" for w in walls),
        )
    headers = ["method", "task 1 s", "round 2 s", "last round s", "time growth"]
    print_table([*headers, "round 2 MB", "last round MB", "memory growth"], rows)
    if not args.quick:
        plot(results, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
