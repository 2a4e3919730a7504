"""`lifelong sweep`: the points of a grid and of random draws, their validation before anything is
written, a sweep trained side by side, its table against each run's own matrix, resuming a broken
sweep, the one-line errors, and (slow, with Ray installed) the Ray backend's identical results."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lifelong
from lifelong.errors import UserError
from lifelong.metrics import summary
from lifelong.rundir import Progress
from lifelong.sweeps import (
    POINT_COLUMNS,
    SweepSpec,
    expand,
    make_spec,
    parse_grid,
    parse_ranges,
    point_config,
    random_draws,
)
from tests.conftest import small_config_dict
from tests.test_cli_errors import assert_one_line_error, run_cli


def text_task(name: str, words: list[str]) -> dict:
    """A text task scored by held-out loss: scores that move with every step, unlike exact match."""
    rows = [{"text": " ".join(words[(i + j) % len(words)] for j in range(4))} for i in range(12)]
    return {
        "name": name,
        "kind": "text",
        "metric": "loss",
        "train": {"examples": rows},
        "eval": {"examples": rows[:4]},
    }


def sweep_base(tmp_path: Path, write_config, **changes) -> str:
    data = small_config_dict(tmp_path, **changes)
    data["stream"] = {"tasks": [text_task("a", ["12", "34", "56"]), text_task("b", ["98", "76", "54"])]}
    data["train"]["steps_per_task"] = 4
    return str(write_config(data, "base.yaml"))


def rows_of(run: Path) -> list[list[float]]:
    return json.loads((run / "matrix.json").read_text())["rows"]


# ------------------------------------------------------------------ points
def test_grid_points_in_order_with_list_entries(tmp_path):
    data = small_config_dict(tmp_path, methods=["self_replay"])  # a bare name: becomes a mapping
    spec = SweepSpec("base", data, grid=parse_grid(["train.lr=1e-3,3.0e-3", "methods.0.coef=1,10"]))
    points = expand(spec)
    assert [p.overrides for p in points] == [
        {"train.lr": "1e-3", "methods.0.coef": 1},  # YAML 1.1 reads 1e-3 as text, as --set does
        {"train.lr": "1e-3", "methods.0.coef": 10},
        {"train.lr": 3e-3, "methods.0.coef": 1},
        {"train.lr": 3e-3, "methods.0.coef": 10},
    ]
    assert [p.id[:4] for p in points] == ["000-", "001-", "002-", "003-"]
    assert len({p.id for p in points}) == 4
    cfgs = [point_config(spec, p, tmp_path / "points") for p in points]
    assert [(c.train.lr, c.methods[0].coef, c.methods[0].name) for c in cfgs] == [
        (1e-3, 1.0, "self_replay"),
        (1e-3, 10.0, "self_replay"),
        (3e-3, 1.0, "self_replay"),
        (3e-3, 10.0, "self_replay"),
    ]
    assert [c.name for c in cfgs] == [p.id for p in points]


def test_random_draws_cross_the_grid_and_repeat_from_the_seed(tmp_path):
    data = small_config_dict(tmp_path)
    ranges = parse_ranges(["train.lr=1e-4:1e-2:log", "train.steps_per_task=2:9"])
    spec = SweepSpec("base", data, grid={"seed": [0, 1]}, ranges=ranges, random=3, seed=5)
    points = expand(spec)
    assert len(points) == 6 and [p.overrides["seed"] for p in points] == [0, 1] * 3
    assert [p.overrides for p in points] == [p.overrides for p in expand(spec)]
    assert random_draws(ranges, 3, 5) != random_draws(ranges, 3, 6)
    for p in points:
        assert 1e-4 <= p.overrides["train.lr"] <= 1e-2
        assert (
            isinstance(p.overrides["train.steps_per_task"], int)
            and 2 <= p.overrides["train.steps_per_task"] <= 9
        )


def test_the_default_seed_is_the_base_configs(tmp_path, write_config):
    path = write_config(small_config_dict(tmp_path, seed=7))
    assert make_spec(str(path), {}, {"train.lr": (1e-4, 1e-2)}, 2, None, {}).seed == 7


bounds = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(low=bounds, high=bounds, log=st.booleans(), n=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_a_parsed_range_draws_within_its_bounds(low, high, log, n, seed):
    low, high = min(low, high), max(low, high)
    item = f"k={low!r}:{high!r}" + (":log" if log else "")
    (r,) = parse_ranges([item]).values()
    assert (r.low, r.high, r.log) == (low, high, log)
    draws = random_draws({"k": r}, n, seed)
    assert draws == random_draws({"k": r}, n, seed)
    assert all(low <= d["k"] <= high for d in draws)


@pytest.mark.parametrize("item", ["k=1", "k=a:b", "k=2:1", "k=0:1:log", "k=1:2:lin", "=1:2", "k=1:inf"])
def test_a_bad_range_is_one_line(item):
    with pytest.raises(UserError, match="--range"):
        parse_ranges([item])


def test_a_bad_key_or_value_is_refused_before_anything_is_written(tmp_path, write_config):
    base = sweep_base(tmp_path, write_config)
    with pytest.raises(UserError, match=r"sweep point 000-lrr0.1 \(lrr=0.1\): train.lrr: Extra inputs"):
        lifelong.sweep(base, grid={"train.lrr": [0.1]})
    with pytest.raises(UserError, match=r"sweep point 001-lr-1 \(lr=-1\): train.lr: Input should be greater"):
        lifelong.sweep(base, grid={"train.lr": [0.1, -1]})  # only the second point is bad
    with pytest.raises(UserError, match=r"sweep point 000-coef3 .*methods.1.coef: '1' is not an entry"):
        lifelong.sweep(base, grid={"methods.1.coef": [3]})
    assert not (tmp_path / "runs").exists()


def test_old_checkpoints_without_a_token_count_load():
    assert Progress(config_hash="x", task=1).trained_tokens == 0


# ------------------------------------------------------------------ running
def test_a_four_point_sweep_side_by_side(tmp_path, write_config, monkeypatch, capsys):
    base = sweep_base(tmp_path, write_config)
    args = ["sweep", base, "--grid", "train.lr=1.0e-3,3.0e-3", "--grid", "train.steps_per_task=2,4"]
    code, err = run_cli([*args, "--jobs", "2", "--no-progress"], monkeypatch, capsys)
    assert code == 0, err
    sweep_dir = tmp_path / "runs" / "small-sweep"
    runs = sorted((sweep_dir / "points").iterdir())
    assert len(runs) == 4 and all((r / "summary.json").is_file() for r in runs)
    with (sweep_dir / "sweep.csv").open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["point", "train.lr", "train.steps_per_task", *POINT_COLUMNS]
    assert [(float(r["train.lr"]), int(r["train.steps_per_task"])) for r in table] == [
        (1e-3, 2),
        (1e-3, 4),
        (3e-3, 2),
        (3e-3, 4),
    ]
    for row, run in zip(table, runs, strict=True):
        assert row["point"] == run.name
        matrix = json.loads((run / "matrix.json").read_text())
        metrics = summary(matrix["rows"], matrix["baseline"])
        for key in ("AA", "FGT", "BWT", "FWD"):
            assert float(row[key]) == pytest.approx(metrics[key], abs=1e-12)
        assert float(row["final_new_task"]) == matrix["rows"][-1][-1]
        done = json.loads((run / "summary.json").read_text())
        assert int(row["trained_tokens"]) == done["trained_tokens"] > 0
        assert float(row["train_seconds"]) == done["train_seconds"]
    tokens = [int(r["trained_tokens"]) for r in table]
    assert tokens[1] == 2 * tokens[0]  # twice the steps of the same rows
    assert (sweep_dir / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((sweep_dir / "sweep.json").read_text())[0]["point"] == table[0]["point"]

    before = {r.name: (r / "summary.json").stat().st_mtime_ns for r in runs}
    code, err = run_cli([*args, "--no-progress"], monkeypatch, capsys)  # the same command: nothing to do
    assert code == 0, err
    assert {r.name: (r / "summary.json").stat().st_mtime_ns for r in runs} == before
    (sweep_dir / "frontier.png").unlink()
    code, _ = run_cli(["report", str(sweep_dir)], monkeypatch, capsys)
    assert code == 0 and (sweep_dir / "frontier.png").is_file()


def snapshot(run: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(run)): (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()
    }


def test_a_broken_sweep_resumes_only_its_unfinished_points(tmp_path, write_config, monkeypatch, capsys):
    base = sweep_base(tmp_path, write_config)
    first = lifelong.sweep(base, grid={"train.lr": [1e-3, 2e-3, 3e-3]}, jobs=1)
    runs = [first.path / "points" / row["point"] for row in first.rows]
    expected = [rows_of(r) for r in runs]
    finished, started, unstarted = runs
    kept = snapshot(finished)
    (started / "checkpoints" / "latest").write_text("after-task-001\n")  # killed during task 2
    for name in ("matrix.json", "summary.json"):
        (started / name).unlink()
    first_task = snapshot(started / "checkpoints" / "after-task-001")
    shutil.rmtree(unstarted)

    code, err = run_cli(
        ["sweep", "--resume", str(first.path), "--jobs", "1", "--no-progress"], monkeypatch, capsys
    )
    assert code == 0, err
    assert snapshot(finished) == kept  # not run again: every file untouched
    assert snapshot(started / "checkpoints" / "after-task-001") == first_task  # resumed, not restarted
    assert [rows_of(r) for r in runs] == expected
    again = json.loads((first.path / "sweep.json").read_text())
    assert [r["trained_tokens"] for r in again] == [
        r["trained_tokens"] for r in first.rows
    ]  # kept over resume


def test_another_spec_in_the_same_directory_is_refused(tmp_path, write_config, monkeypatch, capsys):
    base = sweep_base(tmp_path, write_config)
    lifelong.sweep(base, grid={"train.lr": [1e-3]}, jobs=1)
    code, err = run_cli(["sweep", base, "--grid", "train.lr=2.0e-3"], monkeypatch, capsys)
    assert_one_line_error(code, err, "holds another sweep (its grid differs)", "--resume")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--grid", "train.lr"], ["--grid expects KEY=V1,V2"]),
        (["--range", "train.lr=1:2"], ["--random N and --range"]),
        ([], ["a sweep needs --grid"]),
        (["--grid", "train.lr=1,2", "--grid", "train.lr=3"], ["given twice"]),
        (["--grid", "train.nope=1"], ["sweep point 000-nope1", "train.nope"]),
    ],
)
def test_command_line_mistakes_are_one_line(tmp_path, write_config, monkeypatch, capsys, args, words):
    base = sweep_base(tmp_path, write_config)
    code, err = run_cli(["sweep", base, *args], monkeypatch, capsys)
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "runs").exists()


def test_resuming_what_is_not_a_sweep_is_one_line(tmp_path, monkeypatch, capsys):
    code, err = run_cli(["sweep", "--resume", str(tmp_path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "is not a sweep directory")
    code, err = run_cli(["sweep", "--resume", str(tmp_path), "--grid", "a=1"], monkeypatch, capsys)
    assert_one_line_error(code, err, "--resume continues a sweep")


# ------------------------------------------------------------------ Ray
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (lifelong[ray])")
def test_ray_trials_give_the_local_backends_numbers(tmp_path, write_config, monkeypatch, capsys):
    base = sweep_base(tmp_path, write_config)
    grid = ["--grid", "train.lr=1.0e-3,3.0e-3", "--grid", "train.steps_per_task=2,4"]
    for name, backend in (("local", ["--jobs", "2"]), ("ray", ["--ray", "auto"])):
        code, err = run_cli(
            ["sweep", base, *grid, "--name", name, *backend, "--no-progress"], monkeypatch, capsys
        )
        assert code == 0, err
    local, ray = (sorted((tmp_path / "runs" / n / "points").iterdir()) for n in ("local", "ray"))
    assert [r.name for r in local] == [r.name for r in ray] and len(ray) == 4
    assert [rows_of(r) for r in ray] == [rows_of(r) for r in local]
    assert (tmp_path / "runs" / "ray" / "ray").is_dir()  # Ray's records stay inside the sweep
    assert not any(math.isnan(v) for r in ray for row in rows_of(r) for v in row)


def test_lifelong_sweep_is_the_function():
    from lifelong.sweeps import sweep

    assert lifelong.sweep is sweep and "sweep" in lifelong.__all__
