"""`lifelong report --html OUT.html RUN_DIRS...`: one self-contained HTML page of finished runs. For
each run its accuracy matrix as a heatmap and every task's score over training steps; across runs the
metric table and the compute-forgetting frontier (train seconds against FGT); each run's config.
Images are inline base64 PNG (matplotlib), styles inline, no script: the page opens offline.

    from lifelong.html_report import write_html_report
    write_html_report([Path("runs/toy-naive"), Path("runs/toy-self_replay")], Path("report.html"))
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifelong.errors import UserError, read_text
from lifelong.metrics import METRIC_NAMES
from lifelong.report import MAX_TABLE_TASKS, METRIC_LABEL, curves_figure, figure_png, load_run, run_labels
from lifelong.rundir import RunDir, atomic_write

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       background: #fff; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.1em; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.figures figure { margin: 0; flex: 1 1 420px; }
figcaption, .note { color: #555; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


@dataclass
class ReportRun:
    label: str
    path: Path
    matrix: dict[str, Any]  # matrix.json
    summary: dict[str, Any]  # summary.json
    evals: list[dict[str, Any]]  # evals.jsonl
    config: str  # config.yaml as written


def load_report_runs(paths: list[Path]) -> list[ReportRun]:
    """The finished runs in `paths`; a directory that is not a run, or one not finished, is a UserError."""
    for path in paths:
        if not (path / "config.yaml").is_file():
            raise UserError(f"{str(path)!r} is not a run directory (it has no config.yaml)")
        if not RunDir(path).finished:
            raise UserError(f"{str(path)!r} has no results (summary.json): is the run finished?")
    runs = []
    for label, path in zip(run_labels(paths), paths, strict=True):
        matrix, summary = load_run(path)
        evals = RunDir(path).read_log("evals.jsonl")
        config = read_text(path / "config.yaml", "run config")
        runs.append(ReportRun(label, path, matrix, summary, evals, config))
    return runs


def png_img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def heatmap_png(matrix: dict[str, Any]) -> bytes:
    """The accuracy matrix (the initial model's row, then one row per task trained) × the tasks scored,
    values written in; coloured over 0..1, a loss-scored column over its own range (its unit differs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = matrix["tasks"]
    n = len(tasks)
    values = np.array([matrix["baseline"][:n], *(row[:n] for row in matrix["rows"])], dtype=float)  # (K+1, n)
    # fractions (accuracy, exact match, chrF / 100...) over 0..1; a loss column over its own range
    own = np.array([m == "loss" for m in matrix["metrics"]])  # (n,)
    low = np.where(own, np.nanmin(values, axis=0), 0.0)  # (n,)
    high = np.where(own, np.nanmax(values, axis=0), 1.0)  # (n,)
    shade = (values - low) / np.where(high > low, high - low, 1.0)
    rows = ["(initial)", *(f"{k + 1}. {tasks[k]}" for k in range(len(matrix["rows"])))]
    side = 0.9 if n <= MAX_TABLE_TASKS else 0.12
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 + side * n), max(2.5, 1.2 + side * 0.6 * len(rows))))
    ax.imshow(shade, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    if n <= MAX_TABLE_TASKS:  # past that the cells are too small to read: the matrix is in matrix.csv
        for (k, j), v in np.ndenumerate(values):
            ax.text(
                j,
                k,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="w" if shade[k, j] < 0.6 else "k",
            )
        metric = [f"{t}\n{METRIC_LABEL.get(m, m)}" for t, m in zip(tasks, matrix["metrics"], strict=True)]
        ax.set_xticks(range(n), metric, fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("task scored")
    ax.set_ylabel("after training")
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    fig.tight_layout()
    return figure_png(fig)


def frontier_png(runs: list[ReportRun]) -> bytes:
    """One point per run: its training seconds against its forgetting (FGT), labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for run in runs:
        fgt = run.summary["metrics"].get("FGT")
        if fgt is None:  # one task: nothing to forget
            continue
        x = run.summary["train_seconds"]
        ax.scatter([x], [fgt], s=40)
        ax.annotate(run.label, (x, fgt), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("train compute (seconds of training steps)")
    ax.set_ylabel("FGT (forgetting, lower is better)")
    ax.grid(alpha=0.3)
    ax.margins(0.2)
    fig.tight_layout()
    return figure_png(fig)


def metric_cell(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if key in ("BWT", "FWD") else f"{value:.3f}"


def metrics_table(runs: list[ReportRun]) -> str:
    """The five metrics, the train and eval seconds and the parameter counts of every run."""
    head = ["run", *METRIC_NAMES, "train s", "eval s", "trainable params", "peak MB"]
    lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for run in runs:
        s, m = run.summary, run.summary["metrics"]
        cells = [
            run.label,
            *(metric_cell(k, m.get(k)) for k in METRIC_NAMES),
            f"{s['train_seconds']:.1f}",
            f"{s['eval_seconds']:.1f}",
            f"{s.get('trainable_params', 0):,}",
            f"{s.get('peak_memory_mb', 0):.0f}",
        ]
        lines.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return "\n".join([*lines, "</table>"])


def figure(png: bytes, alt: str, caption: str) -> str:
    return f"<figure>{png_img(png, alt)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def run_section(run: ReportRun) -> str:
    """A run's heatmap and score curves side by side, then its config (folded)."""
    tasks, kept = run.matrix["tasks"], run.matrix.get("kept")
    figures = [
        figure(
            heatmap_png(run.matrix),
            f"accuracy matrix of {run.label}",
            "Accuracy matrix: row k is every task's score after training tasks 1..k "
            "(colour: 0 to 1; a loss-scored column over its own range).",
        )
    ]
    if run.evals:
        figures.append(
            figure(
                figure_png(curves_figure(run.evals, tasks, kept)),
                f"scores over training steps of {run.label}",
                "Every task's score over training steps; shaded: every other task's span.",
            )
        )
    return "\n".join(
        [
            f"<h2>{html.escape(run.label)}</h2>",
            f'<p class="note">{html.escape(str(run.path))}</p>',
            f'<div class="figures">{"".join(figures)}</div>',
            f"<details><summary>config.yaml</summary><pre>{html.escape(run.config)}</pre></details>",
        ]
    )


def environment_note(runs: list[ReportRun]) -> str:
    from lifelong.report import environment_line

    lines = [f"{run.label}: {line}" for run in runs if (line := environment_line(run.summary))]
    return "".join(f'<p class="note">{html.escape(line)}</p>' for line in lines)


def html_page(runs: list[ReportRun]) -> str:
    names = ", ".join(run.label for run in runs)
    body = [
        f"<h1>lifelong report: {html.escape(names)}</h1>",
        "<h2>Metrics</h2>",
        '<p class="note">AA, AIA, BWT, FWD: higher is better; FGT: lower is better; FWD against the '
        "initial model (docs/metrics.md).</p>",
        metrics_table(runs),
        environment_note(runs),
        "<h2>Compute and forgetting</h2>",
        png_img(frontier_png(runs), "train seconds against forgetting, one point per run"),
        *(run_section(run) for run in runs),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>lifelong report: {html.escape(names)}</title>\n<style>{STYLE}</style>\n</head>\n"
        "<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def write_html_report(paths: list[Path], out: Path) -> None:
    """The page of the finished runs in `paths`, written to `out`."""
    atomic_write(out, html_page(load_report_runs(paths)))
