"""The metrics table never makes two runs look the same: names are folded, never cut, and runs of
the same name in different directories are told apart by their paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from lifelong.report import metrics_table, run_labels

RESULT = {
    "metrics": {"AA": 0.5, "AIA": 0.5, "FGT": 0.1, "BWT": -0.1, "FWD": 0.0},
    "train_seconds": 100.0,
    "eval_seconds": 20.0,
}


def run_column(names: list[str], width: int) -> list[str]:
    """The run names as the table shows them on a console `width` wide, each row's lines joined."""
    console = Console(width=width, record=True)
    console.print(metrics_table([(n, RESULT) for n in names]))
    shown: list[str] = []
    for line in console.export_text().splitlines():
        cells = line.split("│")
        if len(cells) < 3:
            continue  # title, borders, header
        name, first_score = cells[1].strip(), cells[2].strip()
        if first_score:
            shown.append(name)
        else:
            shown[-1] += name
    return shown


@pytest.mark.parametrize("width", [60, 80, 200])
def test_names_sharing_a_long_prefix_stay_distinct(width):
    prefix = "translation-self_replay-loss-kl-coef-10-lr-"
    names = [f"{prefix}0.001", f"{prefix}0.0003", f"{prefix}0.001-seed-1", "naive"]
    assert run_column(names, width) == names


def test_runs_of_the_same_name_are_labelled_by_their_paths():
    paths = [Path("runs/a/toy-naive"), Path("runs/b/toy-naive"), Path("runs/b/toy-ewc")]
    assert run_labels(paths) == ["a/toy-naive", "b/toy-naive", "toy-ewc"]
    assert run_labels([Path("x/run"), Path("y/x/run")]) == ["x/run", "y/x/run"]
    assert run_labels([Path("runs/one")]) == ["one"]
