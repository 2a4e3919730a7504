"""Results of a run: the accuracy matrix (JSON, CSV, terminal table), the five metrics, and a plot of
every task's score over training steps, with the tasks' training spans marked."""

from __future__ import annotations

import csv
import io
import math
from itertools import accumulate
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lifelong.metrics import METRIC_NAMES, kept_drops, summary
from lifelong.rundir import Progress, RunDir, atomic_write, environment, read_json, write_json

METRIC_LABEL = {
    "exact_match": "exact match",
    "answer_contains": "answer contains",
    "exact_match_strict": "exact match (strict)",
    "accuracy": "accuracy",
    "loss": "-loss (nats/token)",
    "chrf": "chrF / 100",
    "bleu": "BLEU / 100",
    "entity_f1": "entity F1",
    "tool_success": "tool success",
    "reliability": "reliability (edits)",
}
FIRST_EDITS = 100  # an edit stream's summary follows its first this many edits to the end
MAX_LABELLED_TASKS = 12  # curves.png names each task's span and line up to this many tasks
MAX_TABLE_TASKS = 16  # a run's matrix is printed as a table up to this many tasks (else: matrix.csv)


def write_results(run_dir: RunDir, progress: Progress, task_names: list[str], data) -> dict[str, Any]:
    n, kept = len(task_names), [t.name for t in data.kept]
    square = [row[:n] for row in progress.matrix]  # the stream's tasks; kept columns follow
    metrics = summary(square, progress.baseline[:n]) if progress.matrix else {}
    matrix = {
        "tasks": task_names,
        "metrics": [t.metric for t in data.tasks],
        **({"kept": kept, "kept_metrics": [t.metric for t in data.kept]} if kept else {}),
        "baseline": progress.baseline,
        "rows": progress.matrix,
        "note": "rows[k][j]: score on task j after training tasks 0..k; baseline: initial model. "
        "Higher is better (loss-scored tasks hold minus the loss)."
        + (" Columns after the tasks' are the kept sets (evaluated, never trained)." if kept else ""),
    }
    columns = [*task_names, *kept]
    if diverged := nan_scores(progress, columns):
        matrix["diverged"] = diverged
    if also := also_reported(run_dir, columns, len(progress.matrix)):
        matrix["also_reported"] = also
    write_json(run_dir.path / "matrix.json", matrix)
    atomic_write(run_dir.path / "matrix.csv", matrix_csv(matrix))
    result = {
        "metrics": metrics,
        "fwd_baseline": "initial model, before any training",
        **({"kept": kept_summary(progress, kept, data)} if kept and progress.matrix else {}),
        **({"diverged": diverged} if diverged else {}),
        "train_seconds": round(progress.train_seconds, 3),
        "trained_tokens": progress.trained_tokens,
        "eval_seconds": round(progress.eval_seconds, 3),
        "tasks_done": progress.task,
        "context_length": data.context_length,  # tokens: a preset's max_length, else the model's own
        "trainable_params": progress.trainable_params,
        "total_params": progress.total_params,
        "peak_memory_mb": round(peak_memory_mb(), 1),
        **edit_summary(progress, data, also),
        **restated_summary(also),
        **environment_record(run_dir),
    }
    write_json(run_dir.path / "summary.json", result)
    plot_curves(run_dir, task_names, run_dir.path / "curves.png", kept)
    return result


def kept_summary(progress: Progress, kept: list[str], data) -> dict[str, Any]:
    """What the stream cost the kept columns: each one's initial and final score and drop (initial -
    final, > 0 = forgotten), the worst drop along the stream, and the mean and worst of the drops."""
    n = len(progress.matrix[0]) - len(kept)
    drops = kept_drops(progress.baseline[n:], [row[n:] for row in progress.matrix])
    worst = max(range(len(kept)), key=lambda c: drops["drop"][c])
    columns = {
        name: {
            "metric": task.metric,
            "initial": progress.baseline[n + c],
            "final": progress.matrix[-1][n + c],
            "drop": drops["drop"][c],
            "max_drop": drops["max_drop"][c],
        }
        for c, (name, task) in enumerate(zip(kept, data.kept, strict=True))
    }
    return {
        "columns": columns,
        "mean_drop": drops["mean_drop"],
        "worst_drop": drops["worst_drop"],
        "worst": kept[worst],
        "note": "drop = initial score - score after the last task (higher-is-better scores: > 0 is "
        "forgotten); the mean mixes the columns' units (loss columns are in nats/token)",
    }


def edit_summary(progress: Progress, data, also: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An edit stream's `edits`: how many edits were made and the seconds per edit (training steps;
    and with the evaluations), the reliability, generality and locality after the last task over every
    edit made (each column weighted by its rows), and the first FIRST_EDITS edits' reliability right
    after they were made (the matrix's diagonal) and after the last task. {} for other streams."""
    k = len(progress.matrix)
    if not k or any(t.kind != "edit" for t in data.tasks):
        return {}
    tasks = data.tasks[:k]

    def mean(row: list[float], part: int, columns: range) -> float:
        weights = [tasks[j].parts[part] for j in columns]
        return sum(row[j] * w for j, w in zip(columns, weights, strict=True)) / sum(weights)

    made = sum(t.parts[0] for t in tasks)
    rows = {"reliability": progress.matrix, **{s: also[s]["rows"] for s in ("generality", "locality")}}
    after = {name: mean(r[-1], part, range(k)) for part, (name, r) in enumerate(rows.items())}
    # the columns whose edits are all among the first FIRST_EDITS (at least the first column)
    first = range(max(1, sum(n <= FIRST_EDITS for n in accumulate(t.parts[0] for t in tasks))))
    diagonal = [progress.matrix[j][j] for j in range(k)]
    return {
        "edits": {
            "made": made,
            "per_task": [t.parts[0] for t in tasks],
            "train_seconds_per_edit": round(progress.train_seconds / made, 4),
            "seconds_per_edit": round((progress.train_seconds + progress.eval_seconds) / made, 4),
            "after_last_task": after,
            f"first_{FIRST_EDITS}": {
                "edits": sum(tasks[j].parts[0] for j in first),
                "reliability_when_made": mean(diagonal, 0, first),
                "reliability_after_last_task": mean(progress.matrix[-1], 0, first),
            },
            "note": "over every edit made so far (all past columns), not only the last task's",
        }
    }


def restated_summary(also: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`restated`: after the last task, the questions whose fact a later document restated, over every
    column, and the fractions answered with the newest value and with a replaced one. {} if none."""
    if "restated" not in also or not also["restated"]["rows"]:
        return {}
    counts = also["restated"]["rows"][-1]
    total = sum(c for c in counts if c)
    if not total:
        return {}

    def share(score: str) -> float:
        row = also[score]["rows"][-1]
        return sum(c * f for c, f in zip(counts, row, strict=True) if c) / total

    return {
        "restated": {
            "questions": int(total),
            "newest_value": share("restated_newest"),
            "replaced_value": share("restated_old"),
            "note": "questions on facts a later task restated, after the last task: the answers that "
            "give the newest value, and those that give a value it replaced",
        }
    }


def nan_scores(progress: Progress, task_names: list[str]) -> list[dict[str, Any]]:
    """The cells of the matrix (row -1: the initial model) whose score is NaN or infinite: evaluations
    that diverged. They are written as "nan"/"inf" (never as null, which means "undefined")."""
    rows = [(-1, progress.baseline or []), *enumerate(progress.matrix)]
    return [
        {"after_task": k, "task": task_names[j], "score": str(v)}
        for k, row in rows
        for j, v in enumerate(row)
        if not math.isfinite(v)
    ]


def environment_record(run_dir: RunDir) -> dict[str, Any]:
    """`environment`: where the results were computed (the numbers reproduce exactly only there), and
    `environment_at_start` too if a resume moved the run to another environment."""
    now = environment()
    started = run_dir.path / "environment.json"
    at_start = read_json(started, "environment file") if started.is_file() else now
    return {"environment": now} | ({"environment_at_start": at_start} if at_start != now else {})


def environment_line(result: dict[str, Any]) -> str | None:
    env = result.get("environment")
    if not env:
        return None
    libraries = " ".join(f"{k} {env[k]}" for k in ("torch", "transformers", "peft") if env.get(k))
    return f"{env['cpu']}, {env['cores']} cores, {env['torch_threads']} threads, {env['device']}; {libraries}"


def also_reported(run_dir: RunDir, task_names: list[str], n_rows: int) -> dict[str, dict[str, Any]]:
    """Scores reported next to some tasks' own (BLEU next to chrF) as matrices of the same layout,
    {score: {"baseline": [...], "rows": [[...]]}}, None where a task has no such score. Read from the
    initial model's evaluation and each task's last (end-of-task) one."""
    last = {e["task"]: e for e in run_dir.read_log("evals.jsonl")}
    names = sorted({k for e in last.values() for scores in e.get("details", {}).values() for k in scores})

    def row(task: int, score: str) -> list[float | None]:
        details = last[task].get("details", {}) if task in last else {}
        return [details.get(name, {}).get(score) for name in task_names]

    return {
        name: {"baseline": row(-1, name), "rows": [row(k, name) for k in range(n_rows)]} for name in names
    }


def peak_memory_mb() -> float:
    """Peak memory of this process: allocated CUDA memory on a GPU, else the peak resident set (so a
    run's own figure when it has a process to itself, as `lifelong compare` gives it)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def matrix_csv(matrix: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["after", *matrix["tasks"], *matrix.get("kept", [])])
    writer.writerow(["initial", *matrix["baseline"]])
    for name, row in zip(matrix["tasks"], matrix["rows"], strict=False):
        writer.writerow([name, *row])
    return out.getvalue()


def plot_curves(run_dir: RunDir, task_names: list[str], path: Path, kept: list[str] | None = None) -> None:
    """curves.png: every task's score over training steps (see curves_figure)."""
    evals = run_dir.read_log("evals.jsonl")
    if evals:
        atomic_write(path, figure_png(curves_figure(evals, task_names, kept)))


def curves_figure(evals: list[dict[str, Any]], task_names: list[str], kept: list[str] | None = None):
    """Every task's score over training steps (kept columns dashed), the tasks' spans shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg_steps = max(1, max((e["step"] for e in evals if e["task"] >= 0), default=1))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    steps = [e["global_step"] for e in evals]
    for j, name in enumerate(task_names):
        ax.plot(steps, [e["scores"][j] for e in evals], marker=".", label=name)
    for c, name in enumerate(kept or [], start=len(task_names)):
        ax.plot(steps, [e["scores"][c] for e in evals], linestyle="--", marker=".", label=f"{name} (kept)")
    labelled = len(task_names) <= MAX_LABELLED_TASKS
    for t in range(len(task_names)):
        if t % 2 == 0:
            ax.axvspan(t * cfg_steps, (t + 1) * cfg_steps, color="0.93", zorder=0)
        if not labelled:
            continue
        ax.text(
            (t + 0.5) * cfg_steps,
            1.0,
            f"train {task_names[t]}",
            ha="center",
            va="bottom",
            transform=ax.get_xaxis_transform(),
            fontsize=8,
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("score (higher is better)")
    if labelled:
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def figure_png(fig, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def load_run(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    return read_json(path / "matrix.json", "run results"), read_json(path / "summary.json", "run results")


def matrix_table(title: str, matrix: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("after training")
    for name, metric in zip(matrix["tasks"], matrix["metrics"], strict=True):
        table.add_column(f"{name}\n{METRIC_LABEL.get(metric, metric)}", justify="right")
    n = len(matrix["tasks"])
    table.add_row("(initial model)", *(f"{v:.3f}" for v in matrix["baseline"][:n]), style="dim")
    for k, row in enumerate(matrix["rows"]):
        cells = [f"[bold]{v:.3f}[/bold]" if j == k else f"{v:.3f}" for j, v in enumerate(row[:n])]
        table.add_row(f"{k + 1}. {matrix['tasks'][k]}", *cells)
    return table


def kept_table(title: str, matrix: dict[str, Any], result: dict[str, Any]) -> Table | None:
    """The kept columns (evaluated, never trained) of a run's matrix, with each one's drop; None
    for a run without them."""
    kept = matrix.get("kept")
    if not kept:
        return None
    n = len(matrix["tasks"])
    table = Table(title=f"{title}: kept (evaluated, never trained)", title_justify="left")
    table.add_column("after training")
    for name, metric in zip(kept, matrix["kept_metrics"], strict=True):
        table.add_column(f"{name}\n{METRIC_LABEL.get(metric, metric)}", justify="right")
    table.add_row("(initial model)", *(f"{v:.3f}" for v in matrix["baseline"][n:]), style="dim")
    for k, row in enumerate(matrix["rows"]):
        table.add_row(f"{k + 1}. {matrix['tasks'][k]}", *(f"{v:.3f}" for v in row[n:]))
    if summary_kept := result.get("kept"):
        drops = [summary_kept["columns"][name]["drop"] for name in kept]
        table.add_row("drop (initial - final)", *(f"{d:+.3f}" for d in drops), style="bold")
    return table


def kept_comparison_table(runs: list[tuple[str, dict[str, Any]]]) -> Table | None:
    """Runs that kept the same sets, side by side: the initial model's row (of the first run), then
    each run's scores after its last task, and the mean of the fraction-scored sets (loss columns
    left out of it: their units differ) with its drop from the initial model. None unless at least
    two runs kept the same sets."""
    kept = [tuple(m.get("kept", ())) for _, m in runs]
    if len(runs) < 2 or not kept[0] or len(set(kept)) > 1:
        return None
    first = runs[0][1]
    n = len(first["tasks"])
    fractions = [c for c, metric in enumerate(first["kept_metrics"]) if metric != "loss"]

    def mean(row: list[float]) -> float:
        return sum(row[c] for c in fractions) / len(fractions) if fractions else float("nan")

    table = Table(title="Kept sets after the last task, run by run", title_justify="left")
    table.add_column("run", overflow="fold")
    for name, metric in zip(kept[0], first["kept_metrics"], strict=True):
        table.add_column(f"{name}\n{METRIC_LABEL.get(metric, metric)}", justify="right")
    table.add_column("mean\n(fractions)", justify="right")
    table.add_column("mean\ndrop", justify="right")
    initial = first["baseline"][n:]
    table.add_row("(initial model)", *(f"{v:.3f}" for v in initial), f"{mean(initial):.3f}", "", style="dim")
    for label, matrix in runs:
        final = matrix["rows"][-1][n:] if matrix["rows"] else matrix["baseline"][n:]
        drop = mean(matrix["baseline"][n:]) - mean(final)
        table.add_row(label, *(f"{v:.3f}" for v in final), f"{mean(final):.3f}", f"{drop:+.3f}")
    return table


def metrics_table(runs: list[tuple[str, dict[str, Any]]]) -> Table:
    table = Table(
        title="Metrics (higher is better; FGT: lower is better; FWD vs the initial model)",
        title_justify="left",
    )
    # folded, never cut: names that share a long prefix (method options, swept values) differ at the end
    table.add_column("run", overflow="fold")
    for name in METRIC_NAMES:
        table.add_column(name, justify="right")
    table.add_column("train s", justify="right")
    table.add_column("eval s", justify="right")
    with_kept = any("kept" in result for _, result in runs)
    if with_kept:
        table.add_column("kept\ndrop", justify="right")  # mean over the kept columns
        table.add_column("kept\nworst", justify="right")
    for label, result in runs:
        m = result["metrics"]
        cells = [
            "n/a" if m.get(k) is None else f"{m[k]:+.3f}" if k in ("BWT", "FWD") else f"{m[k]:.3f}"
            for k in METRIC_NAMES
        ]
        kept = result.get("kept")
        drops = [f"{kept['mean_drop']:+.3f}", f"{kept['worst_drop']:+.3f}"] if kept else ["", ""]
        times = [f"{result['train_seconds']:.1f}", f"{result['eval_seconds']:.1f}"]
        table.add_row(label, *cells, *times, *(drops if with_kept else []))
    return table


def edits_table(runs: list[tuple[str, dict[str, Any]]]) -> Table | None:
    """The runs of an edit stream: their scores over every edit made, after the last task, and the
    first edits' reliability when made and at the end (summary.json's `edits`); None if none is one."""
    edited = [(label, result["edits"]) for label, result in runs if "edits" in result]
    if not edited:
        return None
    table = Table(title="Edits: every edit made, after the last task", title_justify="left")
    first, early = f"first_{FIRST_EDITS}", f"first {FIRST_EDITS}"
    columns = [
        "run",
        "edits",
        "reliability",
        "generality",
        "locality",
        f"{early}\nwhen made",
        f"{early}\nat end",
    ]
    for column in [*columns, "s / edit"]:
        table.add_column(column, justify="left" if column == "run" else "right", overflow="fold")
    for label, e in edited:
        after, early = e["after_last_task"], e[first]
        scores = [after["reliability"], after["generality"], after["locality"]]
        early_scores = [early["reliability_when_made"], early["reliability_after_last_task"]]
        cells = [f"{v:.3f}" for v in [*scores, *early_scores]]
        table.add_row(label, str(e["made"]), *cells, f"{e['seconds_per_edit']:.3f}")
    return table


def print_runs(paths: list[Path], console: Console | None = None) -> None:
    """Each run's matrix, then one table of every run's five metrics, side by side."""
    console = console or Console()
    loaded = [(path, *load_run(path)) for path in paths]
    for path, matrix, result in loaded:
        if len(matrix["tasks"]) <= MAX_TABLE_TASKS:
            console.print(matrix_table(str(path), matrix))
        else:  # an edit stream's 100 x 100: readable as a file, not as a terminal table
            console.print(
                f"{path}: {len(matrix['tasks'])} tasks, the matrix is in matrix.csv", highlight=False
            )
        if (kept := kept_table(path.name, matrix, result)) is not None:
            console.print(kept)
    labels = run_labels([path for path, _, _ in loaded])
    console.print(
        metrics_table([(label, result) for label, (_, _, result) in zip(labels, loaded, strict=True)])
    )
    if (
        edited := edits_table([(label, r) for label, (_, _, r) in zip(labels, loaded, strict=True)])
    ) is not None:
        console.print(edited)
    matrices = [(label, matrix) for label, (_, matrix, _) in zip(labels, loaded, strict=True)]
    if (compared := kept_comparison_table(matrices)) is not None:
        console.print(compared)
    for label, (_, _, result) in zip(labels, loaded, strict=True):
        if line := environment_line(result):
            console.print(f"{label} ran on {line}", highlight=False, markup=False, soft_wrap=True)


def run_labels(paths: list[Path]) -> list[str]:
    """Each run's directory name, or as many trailing parts of its path as tell it from the others
    (`a/toy-naive`, `b/toy-naive`): two runs never share a label unless they are the same directory."""
    labels = []
    for path in paths:
        parts = path.parts
        for n in range(1, len(parts) + 1):
            tail = parts[-n:]
            if all(p == path or p.parts[-n:] != tail for p in paths):
                break
        labels.append(str(Path(*tail)))
    return labels


def scores_at_target(evals: list[dict[str, Any]], task: int, target: float) -> dict[str, Any] | None:
    """Every task's score at the moment task `task`'s score first reaches `target` while it trains
    (how the self-replay paper reads forgetting: at equal progress on the new task, not at equal
    steps). Linear interpolation between the two evaluations around the crossing; None if the
    target was never reached. Scores are higher-is-better (minus the loss for text tasks)."""
    start = [e for e in evals if e["task"] == task - 1][-1:]  # the state the task starts from
    curve = start + [e for e in evals if e["task"] == task]
    if curve and curve[0]["scores"][task] >= target:
        return {"global_step": curve[0]["global_step"], "scores": list(curve[0]["scores"])}
    for before, after in zip(curve, curve[1:], strict=False):
        lo, hi = before["scores"][task], after["scores"][task]
        if hi >= target > lo:
            w = (target - lo) / (hi - lo)
            scores = [a + w * (b - a) for a, b in zip(before["scores"], after["scores"], strict=True)]
            step = before["global_step"] + w * (after["global_step"] - before["global_step"])
            return {"global_step": step, "scores": scores}
    return None


def print_at_target(paths: list[Path], task: str, target: float, console: Console | None = None) -> None:
    """One row per run: every task's score when `task` first reached `target` (see scores_at_target)."""
    from lifelong.errors import UserError

    console = console or Console()
    names = read_json(paths[0] / "matrix.json", "run results")["tasks"]
    if task not in names:
        raise UserError(f"no task {task!r} in {str(paths[0])!r} (tasks: {', '.join(names)})")
    table = Table(
        title=f"Scores when {task} first reaches {target:g} (higher is better)", title_justify="left"
    )
    for column in ("run", "step", *names):
        table.add_column(column, justify="left" if column == "run" else "right")
    for path in paths:
        at = scores_at_target(RunDir(path).read_log("evals.jsonl"), names.index(task), target)
        if at is None:
            table.add_row(path.name, "not reached", *("" for _ in names))
        else:
            scores = at["scores"][: len(names)]  # the stream's tasks (kept columns follow them)
            table.add_row(path.name, f"{at['global_step']:.0f}", *(f"{v:.3f}" for v in scores))
    console.print(table)


# a sweep point's columns (lifelong/sweeps.py), read from its run directory
POINT_COLUMNS = ["AA", "FGT", "BWT", "FWD", "final_new_task", "train_seconds", "trained_tokens"]


def point_metrics(run: Path) -> dict[str, Any]:
    """A finished run's metrics as its summary.json holds them (the stream's tasks, not the kept
    columns), the last task's score after the last task, its training seconds and tokens; None for an
    unfinished one."""
    if not (run / "summary.json").is_file():
        return dict.fromkeys(POINT_COLUMNS)
    matrix, result = load_run(run)
    n = len(matrix["tasks"])
    return {
        **{k: result["metrics"].get(k) for k in POINT_COLUMNS[:4]},
        "final_new_task": float(matrix["rows"][-1][n - 1]),
        "train_seconds": result["train_seconds"],
        "trained_tokens": result.get("trained_tokens", 0),  # runs written before it was counted: 0
    }
