"""`lifelong sweep`: one base config trained at many points (a grid, random draws, or both), each
point a normal run directory; the points tabulated and drawn as a forgetting frontier.

    lifelong sweep toy_naive --grid train.lr=1e-3,3e-3 --grid train.steps_per_task=20,40
    lifelong sweep toy_self_replay --random 8 --range train.lr=1e-4:1e-2:log --grid methods.0.loss=ntp,kl
    lifelong sweep --resume runs/toy-naive-sweep

Points: the cartesian product of the `--grid` values (the first key varies slowest); with `--random
N`, each of the N draws of the `--range` keys is crossed with every grid point (N x grid points).
Every point's config is validated before anything is written. The sweep directory
`<output_dir>/<name>` holds `sweep.yaml` (everything a resume needs), `points/<NNN>-<slug>/` (each
point's run directory) and, once every point is finished, `sweep.csv`, `sweep.json` and
`frontier.png`. A finished point is never run again; a started one is resumed from its newest
checkpoint.

    from lifelong import sweep
    result = sweep("toy_naive", grid={"train.lr": [1e-3, 3e-3]})
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from lifelong.config import RunConfig, config_from_data, parse_yaml, read_config_data
from lifelong.errors import UserError, read_text
from lifelong.report import POINT_COLUMNS, point_metrics
from lifelong.rundir import atomic_write, config_yaml, write_json

SWEEP_FILE = "sweep.yaml"
POINTS_DIR = "points"
HEADERS = {"final_new_task": "new\ntask", "train_seconds": "train\ns", "trained_tokens": "tokens"}
DRAWN_DIGITS = 4  # significant digits a random float draw keeps: readable, and exact in YAML
MAX_SLUG = 40  # characters of a point directory's name after its number


@dataclass(frozen=True)
class Range:
    """A random draw's interval, both ends included; integers if both ends are integers."""

    low: float
    high: float
    log: bool = False  # uniform in log space (learning rates, coefficients)

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)


@dataclass
class SweepSpec:
    """What a sweep runs: saved in sweep.yaml, so a resume needs no command line."""

    base: str  # the config's name or path, as given
    base_config: dict[str, Any]  # its YAML data
    overrides: dict[str, Any] = field(default_factory=dict)  # --set, applied to every point
    grid: dict[str, list[Any]] = field(default_factory=dict)
    ranges: dict[str, Range] = field(default_factory=dict)
    random: int = 0  # draws of the ranges
    seed: int = 0  # of the draws

    def as_data(self) -> dict[str, Any]:
        data = asdict(self)
        data["ranges"] = {k: asdict(r) for k, r in self.ranges.items()}
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> SweepSpec:
        ranges = {k: Range(**r) for k, r in (data.get("ranges") or {}).items()}
        return cls(**{**data, "ranges": ranges})


@dataclass(frozen=True)
class Point:
    id: str  # NNN-slug: the point's run name and directory
    overrides: dict[str, Any]  # the swept keys' values

    @property
    def label(self) -> str:
        return " ".join(f"{key.split('.')[-1]}={value}" for key, value in self.overrides.items())


@dataclass
class SweepResult:
    path: Path
    rows: list[dict[str, Any]]  # one per point: its values and metrics (None until it finishes)
    ran: int = 0  # points trained (started or resumed) by this call


# ------------------------------------------------------------------ parsing the command line
def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """`--grid train.lr=1e-3,3e-3` pairs: each value read as a YAML scalar, as `--set` reads it."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise UserError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        if key in grid:
            raise UserError(f"--grid {key} is given twice")
        grid[key] = [parse_yaml(v.strip(), f"--grid {item}") for v in values.split(",")]
    return grid


def parse_ranges(items: list[str]) -> dict[str, Range]:
    """`--range train.lr=1e-4:1e-2:log` pairs: LO:HI, numbers, LO <= HI (LO > 0 with `log`)."""
    ranges = {}
    for item in items:
        key, _, bounds = item.partition("=")
        parts = bounds.split(":")
        if not key.strip() or len(parts) not in (2, 3) or parts[2:] not in ([], ["log"]):
            raise UserError(f"--range expects KEY=LO:HI or KEY=LO:HI:log, got {item!r}")
        low, high = (number(p.strip(), f"--range {item}") for p in parts[:2])
        ranges[key.strip()] = checked_range(key.strip(), low, high, parts[2:] == ["log"])
    return ranges


def number(text: str, where: str) -> int | float:
    """An int, else a float: `1e-4` too, which YAML 1.1 reads as a string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    raise UserError(f"{where}: {text!r} is not a number")


def checked_range(key: str, low: Any, high: Any, log: bool) -> Range:
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)
    ):
        raise UserError(f"--range {key}: LO and HI must be finite numbers, got {low!r} and {high!r}")
    if not low <= high:
        raise UserError(f"--range {key}: LO {low} is above HI {high}")
    if log and low <= 0:
        raise UserError(f"--range {key}: a log range needs LO > 0, got {low}")
    return Range(low, high, log)


# ------------------------------------------------------------------ points
def expand(spec: SweepSpec) -> list[Point]:
    """The sweep's points in a stable order: each random draw crossed with every grid point."""
    if bool(spec.random) != bool(spec.ranges):
        raise UserError("--random N and --range KEY=LO:HI go together")
    if not spec.grid and not spec.random:
        raise UserError("a sweep needs --grid KEY=V1,V2 or --random N with --range KEY=LO:HI")
    if both := sorted(set(spec.grid) & set(spec.ranges)):
        raise UserError(f"{both[0]} is given both as --grid and as --range")
    draws = random_draws(spec.ranges, spec.random, spec.seed) if spec.random else [{}]
    combos = [dict(zip(spec.grid, values, strict=True)) for values in itertools.product(*spec.grid.values())]
    values = [draw | combo for draw in draws for combo in combos]
    return [Point(point_id(i, v), v) for i, v in enumerate(values)]


def random_draws(ranges: dict[str, Range], n: int, seed: int) -> list[dict[str, Any]]:
    """`n` draws of every range from one generator seeded with `seed`, in the ranges' order."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [{key: draw(rng, r) for key, r in ranges.items()} for _ in range(n)]


def draw(rng, r: Range) -> int | float:
    if r.log:
        value = math.exp(rng.uniform(math.log(r.low), math.log(r.high)))
    else:
        value = rng.uniform(r.low, r.high)
    value = round(value) if r.integer else float(f"{value:.{DRAWN_DIGITS}g}")
    return min(max(value, r.low), r.high)  # rounding may step just outside


def point_id(index: int, values: dict[str, Any]) -> str:
    slug = "-".join(f"{key.split('.')[-1]}{value}" for key, value in values.items())
    return f"{index:03d}-{re.sub(r'[^A-Za-z0-9._=+-]', '_', slug)[:MAX_SLUG]}"


def point_config(spec: SweepSpec, point: Point, points_dir: Path) -> RunConfig:
    """The point's whole config, validated: a bad key or value is one line naming the point."""
    where = f"sweep point {point.id} ({point.label})"
    fixed = {"name": point.id, "output_dir": str(points_dir)}
    try:
        return config_from_data(spec.base_config, {**spec.overrides, **point.overrides, **fixed}, where)
    except UserError as err:
        message = str(err)
        raise UserError(message if message.startswith(where) else f"{where}: {message}") from None


# ------------------------------------------------------------------ the sweep directory
def sweep_dir_for(spec: SweepSpec, name: str | None) -> Path:
    base = config_from_data(spec.base_config, spec.overrides, spec.base)
    return Path(base.output_dir) / (name or f"{base.name}-sweep")


def read_sweep(path: Path) -> tuple[SweepSpec, list[Point]]:
    """The spec and points of the sweep directory `path`, or a one-line UserError."""
    file = path / SWEEP_FILE
    if not file.is_file():
        raise UserError(f"{str(path)!r} is not a sweep directory (no {SWEEP_FILE})")
    data = parse_yaml(read_text(file, "sweep file"), str(file))
    try:
        points = [Point(p["id"], p["overrides"]) for p in data.pop("points")]
        return SweepSpec.from_data(data), points
    except (AttributeError, KeyError, TypeError) as err:
        raise UserError(f"sweep file {str(file)!r} is corrupt: {type(err).__name__}: {err}") from None


def write_sweep(path: Path, spec: SweepSpec, points: list[Point]) -> None:
    data = {**spec.as_data(), "points": [{"id": p.id, "overrides": p.overrides} for p in points]}
    atomic_write(path / SWEEP_FILE, yaml.safe_dump(data, sort_keys=False))


def check_same_sweep(path: Path, spec: SweepSpec, points: list[Point]) -> None:
    """An existing sweep directory may only be continued with the spec it was started with."""
    saved, saved_points = read_sweep(path)
    new = yaml.safe_load(yaml.safe_dump(spec.as_data()))  # as it would read back from sweep.yaml
    old = saved.as_data()
    changed = [k for k in new if new[k] != old.get(k)] or (["points"] if saved_points != points else [])
    if changed:
        raise UserError(
            f"{str(path)!r} holds another sweep (its {changed[0]} differs): "
            f"continue it with lifelong sweep --resume {path}, or give another --name"
        )


def prepare(spec: SweepSpec, path: Path, points: list[Point], resuming: bool) -> list[RunConfig]:
    """Validate every point, then create (or check) the sweep directory; return the points' configs."""
    cfgs = [point_config(spec, p, path / POINTS_DIR) for p in points]
    if (path / SWEEP_FILE).is_file():
        if not resuming:
            check_same_sweep(path, spec, points)
    elif path.exists() and any(path.iterdir()):
        raise UserError(f"{str(path)!r} exists and is not a sweep directory: give another --name")
    else:
        write_sweep(path, spec, points)
    return cfgs


def run_sweep(
    spec: SweepSpec,
    path: Path,
    points: list[Point],
    jobs: int | None = None,
    ray: str | None = None,
    show_progress: bool = True,
    resuming: bool = False,
) -> SweepResult:
    """Run every unfinished point of the sweep in `path`, then write its table and frontier. Under a
    launcher, rank 0 writes the sweep's files and every rank trains each point together."""
    from lifelong.distributed import is_main, join, on_main
    from lifelong.parallel import default_jobs
    from lifelong.rundir import RunDir

    join()
    jobs = jobs or default_jobs(len(points))
    paths = on_main(lambda: start_points(spec, path, points, resuming, jobs))
    if paths:
        train_points(paths, max(1, min(len(paths), jobs)), ray, show_progress)
    rows = table_rows(path, points)
    if is_main() and all(RunDir(run_path(path, p)).finished for p in points):
        write_table(path, rows, points)
    return SweepResult(path, rows, ran=len(paths))


def start_points(spec: SweepSpec, path: Path, points: list[Point], resuming: bool, jobs: int) -> list[Path]:
    """Validate every point, make the sweep directory and the run directories of the points never
    started (with `jobs`' share of the cores); return the run directories of the unfinished points."""
    from lifelong.parallel import threads_per_job, with_threads
    from lifelong.rundir import RunDir

    cfgs = prepare(spec, path, points, resuming)
    pending = [(p, c) for p, c in zip(points, cfgs, strict=True) if not RunDir(run_path(path, p)).finished]
    threads = threads_per_job(max(1, min(len(pending), jobs)))
    for point, cfg in pending:
        if not run_path(path, point).exists():  # a started one keeps its own config (and threads)
            RunDir.create(with_threads(cfg, cfg.train.threads or threads))
    return [run_path(path, p) for p, _ in pending]


def run_path(path: Path, point: Point) -> Path:
    return path / POINTS_DIR / point.id


def train_points(paths: list[Path], jobs: int, ray: str | None, show_progress: bool) -> None:
    """Ray Tune trials (`ray`: auto or a cluster's address), a process pool on CPU, or (on a GPU, under
    a launcher, with one job) one point after another in this process."""
    from lifelong.distributed import world
    from lifelong.parallel import continue_side_by_side
    from lifelong.train import resume

    if ray is not None:
        if world() > 1:
            raise UserError("--ray submits each point as a trial: run it without a launcher")
        from lifelong.sweep_ray import run_trials

        run_trials(paths, ray)
    elif jobs > 1:
        continue_side_by_side(paths, jobs, show_progress)
    else:
        for run in paths:
            resume(run, show_progress=show_progress)


# ------------------------------------------------------------------ the table and the frontier
def table_rows(path: Path, points: list[Point]) -> list[dict[str, Any]]:
    return [{"point": p.id, **p.overrides, **point_metrics(run_path(path, p))} for p in points]


def columns(points: list[Point]) -> list[str]:
    keys = dict.fromkeys(k for p in points for k in p.overrides)
    return ["point", *keys, *POINT_COLUMNS]


def write_table(path: Path, rows: list[dict[str, Any]], points: list[Point]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(points), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path / "sweep.csv", buf.getvalue())
    write_json(path / "sweep.json", rows)
    atomic_write(path / "frontier.png", frontier_png(rows, points))


def fmt(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if key in ("BWT", "FWD"):
        return f"{value:+.3f}"
    if key in ("AA", "FGT", "final_new_task"):
        return f"{value:.3f}"
    if key == "train_seconds":
        return f"{value:.1f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def print_table(
    path: Path, rows: list[dict[str, Any]], points: list[Point], console: Console | None = None
) -> None:
    """The sweep's table: a point by its number (its values are the next columns), numbers unwrapped."""
    # no rules and no title (as wide as the console, it would widen the columns): fits 80 columns
    table = Table(box=None, pad_edge=False, header_style="bold")
    cols = columns(points)[1:]
    cells = [[row["point"][:3], *(fmt(c, row.get(c)) for c in cols)] for row in rows]
    for col in ["#", *cols]:  # headers broken at underscores, numbers never: fits a pipe's 80 columns
        table.add_column(
            HEADERS.get(col, col.split(".")[-1].replace("_", "\n")), justify="right", no_wrap=True
        )
    for row in cells:
        table.add_row(*row)
    console = console or Console()
    legend = "higher is better; FGT: lower is better; FWD vs the initial model"
    console.print(f"Sweep {path} ({legend})", highlight=False, markup=False, soft_wrap=True)
    console.print(table)


def frontier_png(rows: list[dict[str, Any]], points: list[Point]) -> bytes:
    """Two panels, one dot per finished point labelled by its values: FGT against training compute
    (trained tokens; train seconds if no run counted tokens) and FGT against the final new-task score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lifelong.report import figure_png

    done = [(r, p) for r, p in zip(rows, points, strict=True) if r["FGT"] is not None]
    compute = "trained_tokens" if any(r["trained_tokens"] for r, _ in done) else "train_seconds"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = ((compute, compute.replace("_", " ")), ("final_new_task", "final score on the last task"))
    for ax, (key, xlabel) in zip(axes, panels, strict=True):
        for row, point in done:
            ax.scatter([row[key]], [row["FGT"]], s=36)
            ax.annotate(
                point.label, (row[key], row["FGT"]), textcoords="offset points", xytext=(5, 4), fontsize=7
            )
        ax.set_xlabel(xlabel)
        if key == "trained_tokens":
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
        ax.set_ylabel("FGT (forgetting, lower is better)")
        ax.grid(alpha=0.3)
        ax.margins(0.2)
    fig.tight_layout()
    return figure_png(fig)


def report_sweep(path: Path, console: Console | None = None) -> list[dict[str, Any]]:
    """`lifelong report SWEEP_DIR`: print the table and (re)draw frontier.png from the points' runs."""
    _, points = read_sweep(path)
    rows = table_rows(path, points)
    print_table(path, rows, points, console)
    atomic_write(path / "frontier.png", frontier_png(rows, points))
    return rows


def is_sweep_dir(path: Path) -> bool:
    return (path / SWEEP_FILE).is_file()


# ------------------------------------------------------------------ the Python API
def sweep(
    base: str | Path | RunConfig,
    grid: dict[str, list[Any]] | None = None,
    ranges: dict[str, tuple] | None = None,
    random: int = 0,
    seed: int | None = None,
    overrides: dict[str, Any] | None = None,
    name: str | None = None,
    jobs: int | None = None,
    ray: str | None = None,
    show_progress: bool = False,
) -> SweepResult:
    """Run (or continue) a sweep of `base` (a config, its YAML path or a built-in name): `grid` maps
    dotted keys to values, `ranges` maps keys to (low, high) or (low, high, "log") drawn `random`
    times from `seed` (default: the base config's). Returns the sweep directory and its table rows."""
    spec = make_spec(base, grid, ranges, random, seed, overrides)
    points = expand(spec)
    return run_sweep(spec, sweep_dir_for(spec, name), points, jobs, ray, show_progress)


def make_spec(
    base: str | Path | RunConfig,
    grid: dict[str, list[Any]] | None,
    ranges: dict[str, tuple | Range] | None,
    random: int,
    seed: int | None,
    overrides: dict[str, Any] | None,
) -> SweepSpec:
    if isinstance(base, RunConfig):
        name, data = base.name, yaml.safe_load(config_yaml(base))
    else:
        name, data = str(base), read_config_data(base)
    checked = {
        key: r if isinstance(r, Range) else checked_range(key, r[0], r[1], tuple(r[2:]) == ("log",))
        for key, r in (ranges or {}).items()
    }
    spec = SweepSpec(name, data, dict(overrides or {}), dict(grid or {}), checked, random)
    spec.seed = config_from_data(data, spec.overrides, name).seed if seed is None else seed
    return spec
