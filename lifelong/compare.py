"""`lifelong compare`: several methods on one stream, one table and one plot.

Each entry is a config (a YAML file or a built-in name) or a method spec applied to a base config:
`ewc`, or a composition such as `self_replay+lora` (options: `self_replay:loss=kl`). Finished run
directories instead are tabulated without training (`lifelong compare runs/a runs/b`). Every run
gets a process of its own (so its peak memory is its own), side by side on CPU as `lifelong run`
does. The comparison goes to
`<output_dir>/compare-<base>/`: `compare.md`, `compare.csv`, `compare.json` and `compare.png`.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from lifelong.config import RunConfig, builtin_configs, load_config, method_list, run_name
from lifelong.errors import UserError
from lifelong.parallel import default_jobs, run_side_by_side
from lifelong.rundir import atomic_write, read_json, write_json

COLUMNS = ["AA", "AIA", "FGT", "BWT", "FWD", "train s", "eval s", "peak MB", "trainable params"]
# of runs with kept columns (`keep: general`): the mean and the worst drop from the initial model
KEPT_COLUMNS = ["kept drop", "kept worst"]


def is_config(entry: str) -> bool:
    return entry.endswith((".yaml", ".yml")) or entry in builtin_configs()


def build_configs(entries: list[str], base: str, overrides: dict[str, Any]) -> list[RunConfig]:
    """One config per entry: configs as given, method specs on top of `base`."""
    cfgs, base_name = [], None
    for entry in entries:
        if is_config(entry):
            cfgs.append(load_config(entry, overrides))
            continue
        base_name = base_name or load_config(base, overrides).name
        methods = method_list(entry)
        cfgs.append(load_config(base, {**overrides, "methods": methods, "name": run_name(base_name, entry)}))
    return cfgs


def row(path: Path) -> dict[str, Any]:
    result = read_json(path / "summary.json", "run results")
    m, kept = result["metrics"], result.get("kept")
    return {
        "run": path.name,
        **{k: m.get(k) for k in COLUMNS[:5]},
        "train s": result["train_seconds"],
        "eval s": result["eval_seconds"],
        "peak MB": result.get("peak_memory_mb"),
        "trainable params": result.get("trainable_params"),
        **({"kept drop": kept["mean_drop"], "kept worst": kept["worst_drop"]} if kept else {}),
    }


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """The table's columns: KEPT_COLUMNS too if some run has kept columns."""
    return COLUMNS + (KEPT_COLUMNS if any(KEPT_COLUMNS[0] in r for r in rows) else [])


def fmt(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if key in ("BWT", "FWD", *KEPT_COLUMNS):
        return f"{value:+.3f}"
    if key in ("AA", "AIA", "FGT"):
        return f"{value:.3f}"
    if key == "trainable params":
        return f"{value:,}"
    return f"{value:.1f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    cols = columns(rows)
    lines = ["| run | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += ["| " + " | ".join([r["run"], *(fmt(k, r.get(k)) for k in cols)]) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_comparison(out: Path, rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "compare.md", markdown(rows))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["run", *columns(rows)])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "compare.csv", buf.getvalue())
    write_json(out / "compare.json", rows)
    plot(rows, out / "compare.png")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Average accuracy and forgetting of each run, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["run"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.1 * len(rows) + 3), 3.8))
    for ax, key, title in (
        (axes[0], "AA", "AA (higher is better)"),
        (axes[1], "FGT", "FGT (lower is better)"),
    ):
        ax.bar(
            range(len(rows)), [r[key] or 0.0 for r in rows], color="tab:blue" if key == "AA" else "tab:red"
        )
        ax.set_xticks(range(len(rows)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def is_finished_run(entry: str) -> bool:
    return (Path(entry) / "summary.json").is_file()


def check_run_entry(entry: str) -> None:
    """An entry that is a path (not a config) must be a finished run; name it if it is not."""
    if is_config(entry) or not ("/" in entry or os.sep in entry or Path(entry).is_dir()):
        return  # a config or a method spec
    if not Path(entry).is_dir():
        raise UserError(f"run directory {entry!r} not found")
    if not is_finished_run(entry):
        raise UserError(f"{entry!r} has no results (summary.json): is the run finished?")


def compare(
    entries: list[str], base: str, overrides: dict[str, Any], jobs: int | None, show_progress: bool
) -> tuple[Path, list[dict[str, Any]]]:
    """Run the entries and tabulate them; entries that are finished run directories are tabulated
    as they are (all of them must be: `lifelong compare runs/a runs/b` trains nothing)."""
    for entry in entries:
        check_run_entry(entry)
    finished = [is_finished_run(e) for e in entries]
    if any(finished) and not all(finished):
        raise UserError("give either finished run directories or configs/methods to run, not both")
    if all(finished):
        paths = [Path(e) for e in entries]
        out_dir, stem = Path(overrides.get("output_dir") or paths[0].parent), "runs"
    else:
        cfgs = build_configs(entries, base, overrides)
        paths = run_side_by_side(cfgs, jobs or default_jobs(len(cfgs)), show_progress)
        out_dir, stem = Path(cfgs[0].output_dir), Path(base).stem
    rows = [row(path) for path in paths]
    out, n = out_dir / f"compare-{stem}", 1
    while (out / "compare.md").exists():
        n += 1
        out = out_dir / f"compare-{stem}-{n}"
    write_comparison(out, rows)
    return out, rows
