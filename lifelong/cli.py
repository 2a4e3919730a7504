"""The `lifelong` command line. A user's mistake prints one line and exits with code 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from lifelong.errors import DivergenceError, UserError

if TYPE_CHECKING:
    from lifelong.config import RunConfig

app = typer.Typer(add_completion=False, no_args_is_help=False, help="Continual learning for language models.")
# Under a launcher (`accelerate launch`) every process runs this; only rank 0 prints (a user's mistake
# is the same one on every process: one line).
QUIET = os.environ.get("RANK", "0") != "0"
err_console = Console(stderr=True, quiet=QUIET)
DEFAULT_JOB = ["toy_naive", "toy_self_replay"]


def parse_set(items: list[str]) -> dict[str, object]:
    """`--set train.lr=1e-4` pairs; values are read as YAML scalars (numbers, booleans, lists)."""
    from lifelong.config import parse_yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = parse_yaml(value, f"--set {item}")
    return out


def config_to_resume(path: Path, configs: list[str], overrides: dict[str, object]) -> RunConfig | None:
    """The config a resume is asked to use (a config file, or the run's own with `--set` applied), or
    None to continue with the saved one. RunDir.open refuses a change to a field that changes numbers."""
    from lifelong.config import apply_overrides, load_config, parse_config
    from lifelong.rundir import saved_config_data

    if len(configs) > 1:
        raise UserError("--resume continues one run: give at most one config")
    if configs:
        return load_config(configs[0], overrides)
    if overrides:
        source = str(path / "config.yaml")
        return parse_config(apply_overrides(saved_config_data(path), overrides), f"{source} with --set")
    return None


@app.command("run")
def run_cmd(
    configs: Annotated[list[str] | None, typer.Argument(help="YAML files or built-in config names.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: train.lr=1e-4")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Where run directories go.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    jobs: Annotated[
        int | None,
        typer.Option(min=1, help="Runs trained at once, one process each (default: one per core on CPU)."),
    ] = None,
    stream: Annotated[
        str | None, typer.Option(help="A built-in stream (see `lifelong streams`) instead of configs.")
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(help="With --stream: a method, or methods composed with + (repeat for more runs)."),
    ] = None,
) -> None:
    """Run each config (default: the toy stream with naive and self_replay) and compare them."""
    from lifelong.config import load_config, stream_config
    from lifelong.parallel import default_jobs, run_side_by_side
    from lifelong.report import print_runs
    from lifelong.train import resume as resume_run
    from lifelong.train import run

    overrides = parse_set(set_ or [])
    if output_dir:
        overrides["output_dir"] = output_dir
    console = Console(quiet=QUIET)
    if resume is not None:
        cfg = config_to_resume(resume, configs or [], overrides)
        if resume_run(resume, cfg, show_progress=progress).already_finished:
            message = f"{resume} is finished: nothing to resume, its files are unchanged"
            console.print(message, highlight=False, markup=False, soft_wrap=True)
        print_runs([resume], console)
        return
    if stream is not None and configs:
        raise UserError("give configs or --stream, not both")
    if method and stream is None:
        raise UserError("--method goes with --stream (or set methods in a config)")
    if stream is not None:
        cfgs = [stream_config(stream, spec, overrides) for spec in method or ["naive"]]
    else:
        cfgs = [load_config(name, overrides) for name in configs or DEFAULT_JOB]
    jobs = min(len(cfgs), jobs or default_jobs(len(cfgs)))
    for cfg in cfgs:
        console.print(
            f"[bold]{cfg.name}[/bold]: {len(cfg.methods)} method(s) "
            f"{'+'.join(m.name for m in cfg.methods)} on stream {cfg.stream.builtin or cfg.stream.name}"
        )
    if jobs > 1:
        console.print(f"{len(cfgs)} runs, {jobs} at a time, one process each (--jobs 1: one after another)")
        paths = run_side_by_side(cfgs, jobs, show_progress=progress)
    else:
        paths = [run(cfg, show_progress=progress).path for cfg in cfgs]
    for path in paths:
        console.print(f"  wrote {path}")
    print_runs(paths, console)


@app.command("compare")
def compare_cmd(
    entries: Annotated[
        list[str],
        typer.Argument(help="Configs, methods on --base (e.g. ewc, self_replay+lora), or finished runs."),
    ],
    base: Annotated[str, typer.Option(help="The config method specs are applied to.")] = "toy_naive",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: train.lr=1e-4")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Where run directories go.")] = None,
    jobs: Annotated[
        int | None, typer.Option(min=1, help="Runs trained at once (default: one per core on CPU).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress.")] = True,
) -> None:
    """Run several methods on one stream; write one table (AA, AIA, FGT, BWT, FWD, time, memory,
    trainable parameters) and a plot."""
    from lifelong.compare import compare, markdown

    overrides = parse_set(set_ or [])
    if output_dir:
        overrides["output_dir"] = output_dir
    out, rows = compare(entries, base, overrides, jobs, progress)
    typer.echo(markdown(rows))
    typer.echo(f"wrote {out}/compare.md, compare.csv, compare.json, compare.png")


@app.command("sweep")
def sweep_cmd(
    config: Annotated[
        str | None, typer.Argument(help="The base config: a YAML file or a built-in name.")
    ] = None,
    grid: Annotated[
        list[str] | None, typer.Option(help="KEY=V1,V2,...: one point per value (keys crossed).")
    ] = None,
    random: Annotated[int, typer.Option(min=0, help="N random draws of the --range keys.")] = 0,
    range_: Annotated[
        list[str] | None, typer.Option("--range", help="KEY=LO:HI or KEY=LO:HI:log, drawn --random times.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the draws (default: the config's).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: train.lr=1e-4")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Where the sweep directory goes.")] = None,
    name: Annotated[
        str | None, typer.Option(help="The sweep directory's name (default: NAME-sweep).")
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the sweep in this directory.")] = None,
    jobs: Annotated[
        int | None, typer.Option(min=1, help="Points trained at once (default: one per core on CPU).")
    ] = None,
    ray: Annotated[
        str | None, typer.Option(help="Run each point as a Ray Tune trial: auto (a local Ray) or ADDRESS.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress.")] = True,
) -> None:
    """Train a config at every point of a grid and/or of random draws; tabulate the points' metrics
    and draw FGT against compute and against the new task's score (docs/sweeps.md)."""
    from lifelong.sweeps import expand, make_spec, print_table, read_sweep, run_sweep, sweep_dir_for
    from lifelong.train import Interrupted

    if resume is not None:
        if config or grid or range_ or random or set_ or seed is not None or output_dir or name:
            raise UserError(
                "--resume continues a sweep as sweep.yaml describes it: give only --jobs or --ray"
            )
        spec, points = read_sweep(resume)
        path = resume
    elif config is None:
        raise UserError("give a base config (e.g. lifelong sweep toy_naive --grid train.lr=1e-3,3e-3)")
    else:
        from lifelong.sweeps import parse_grid, parse_ranges

        overrides = parse_set(set_ or []) | ({"output_dir": output_dir} if output_dir else {})
        spec = make_spec(config, parse_grid(grid or []), parse_ranges(range_ or []), random, seed, overrides)
        points = expand(spec)
        path = sweep_dir_for(spec, name)
    console = Console(quiet=QUIET)
    try:
        result = run_sweep(spec, path, points, jobs, ray, progress, resuming=resume is not None)
    except Interrupted:
        message = f"interrupted: checkpoints saved; continue with: lifelong sweep --resume {path}"
        err_console.print(message, highlight=False, markup=False, soft_wrap=True)
        sys.exit(130)
    console.print(f"{len(points)} points, {result.ran} trained now; wrote {path}", highlight=False)
    print_table(path, result.rows, points, console)


@app.command("report")
def report_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run directories.")],
    at: Annotated[
        str | None,
        typer.Option(help="TASK=SCORE: every task's score when TASK first reaches SCORE (e.g. rv1909=-4.2)."),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(help="Also write one self-contained HTML page of the runs (figures inline) here."),
    ] = None,
) -> None:
    """Print the matrices and metrics of finished runs side by side (--html: also as a page); a sweep
    directory: its table, and frontier.png drawn again."""
    from lifelong.report import print_at_target, print_runs
    from lifelong.sweeps import is_sweep_dir, report_sweep

    for path in [p for p in runs if is_sweep_dir(p)]:
        report_sweep(path)
        typer.echo(f"wrote {path / 'frontier.png'}")
    runs = [p for p in runs if not is_sweep_dir(p)]
    if not runs:
        return

    if html is not None:
        from lifelong.html_report import write_html_report

        write_html_report(runs, html)
        typer.echo(f"wrote {html}")
    for path in runs:
        if not (path / "summary.json").is_file():
            raise UserError(f"{str(path)!r} has no results (summary.json): is the run finished?")
    if at is None:
        print_runs(runs)
        return
    task, sep, value = at.partition("=")
    try:
        target = float(value)
    except ValueError:
        raise UserError(f"--at expects TASK=SCORE, e.g. rv1909=-4.2; got {at!r}") from None
    if not sep:
        raise UserError(f"--at expects TASK=SCORE, e.g. rv1909=-4.2; got {at!r}")
    print_at_target(runs, task, target)


@app.command("methods")
def methods_cmd() -> None:
    """List the registered methods."""
    from lifelong.methods.registry import method_summaries

    for name, summary in method_summaries().items():
        typer.echo(f"{name:14s} {summary}")


@app.command("streams")
def streams_cmd(
    names: Annotated[list[str] | None, typer.Argument(help="Streams to show with their tasks.")] = None,
) -> None:
    """List the built-in streams: source, task format and metric; with names, also their tasks and sizes
    (which builds those streams)."""
    from lifelong.data import builtin_streams
    from lifelong.data.registry import describe_stream

    streams = builtin_streams()
    for name in names or []:
        if name not in streams:
            raise UserError(f"unknown stream {name!r} (known: {', '.join(streams)})")
    for name, info in streams.items():
        if not names or name in names:
            typer.echo(describe_stream(name, info, sizes=bool(names)))
    if not names:
        typer.echo("(lifelong streams NAME... lists those streams' tasks with their sizes)")


@app.command("configs")
def configs_cmd() -> None:
    """List the built-in configs (usable by name with `lifelong run NAME`)."""
    from lifelong.config import builtin_configs

    for name in builtin_configs():
        typer.echo(name)
    from lifelong.config import builtin_pretrain_configs

    for name in builtin_pretrain_configs():
        typer.echo(f"{name:14s} (lifelong pretrain {name})")


@app.command("pretrain")
def pretrain_cmd(
    config: Annotated[str, typer.Argument(help="A YAML file or a built-in pretrain config.")] = "en-tiny",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: train.lr=1e-4")] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="The model cache (default: $LIFELONG_HOME/models or ~/.cache/lifelong/models)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a BPE tokenizer and a base model on text corpora into the model cache (resumable)."""
    import shlex

    from lifelong.pretrain import Pretrainer, PretrainInterrupted, load_pretrain_config

    trainer = Pretrainer(load_pretrain_config(config, parse_set(set_ or [])), cache_dir, progress)
    typer.echo(trainer.summary())
    try:
        path = trainer.train()
    except PretrainInterrupted as err:
        again = ["lifelong", "pretrain", config, *(a for s in set_ or [] for a in ("--set", s))]
        again += ["--cache-dir", str(cache_dir)] if cache_dir else []
        msg = f"interrupted: checkpoint saved in {err}; continue with: {shlex.join(again)}"
        err_console.print(msg, highlight=False, markup=False, soft_wrap=True)
        sys.exit(130)
    if not trainer.done:
        typer.echo(f"wrote {path}")


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (its newest checkpoint is exported).")],
    name: Annotated[str | None, typer.Option(help="Write it into the model cache under this name.")] = None,
    to: Annotated[Path | None, typer.Option(help="Write it into this new directory instead.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="The model cache.")] = None,
) -> None:
    """Write a run's trained model (adapters merged) as a plain Hugging Face model directory."""
    from lifelong.export import export_run

    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{str(run_dir)!r} is not a run directory (it has no config.yaml)")
    path = export_run(run_dir, name, to, cache_dir)
    typer.echo(f"wrote {path}" + (f" (use it as model: {{base: {name}}})" if name else ""))


models_app = typer.Typer(
    add_completion=False, invoke_without_command=True, help="The local model cache: list, import."
)
app.add_typer(models_app, name="models")


@models_app.callback()
def models_cmd(
    ctx: typer.Context, cache_dir: Annotated[Path | None, typer.Option(help="The model cache.")] = None
) -> None:
    """List the models in the local model cache (made by `lifelong pretrain` or `lifelong models import`)."""
    if ctx.invoked_subcommand is not None:
        return
    from lifelong.models import cache

    typer.echo(f"model cache: {cache.cache_dir(cache_dir)}")
    for model in cache.list_cached(cache_dir):
        typer.echo(cache.describe(model))
    for name in cache.list_unfinished(cache_dir):
        typer.echo(f"{name:16s} unfinished: the same `lifelong pretrain` command resumes it")
    missing = [n for n in cache.KNOWN_BASES if cache.cached_model_path(n, cache_dir) is None]
    for name in missing:
        typer.echo(f"{name:16s} not imported yet: lifelong models import {name}")


@models_app.command("import")
def models_import_cmd(
    name: Annotated[
        str | None, typer.Argument(help="A known packaged base (e.g. smollm2-135m-instruct), or with --gguf.")
    ] = None,
    gguf: Annotated[Path | None, typer.Option(help="Import this GGUF file (give --name).")] = None,
    name_opt: Annotated[str | None, typer.Option("--name", help="The cache name for --gguf.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="The model cache.")] = None,
) -> None:
    """De-quantise a GGUF file once into the model cache (safetensors + tokenizer + config)."""
    from lifelong.models.cache import KNOWN_BASES
    from lifelong.models.gguf_import import import_gguf, import_known

    if gguf is not None:
        if not (name_opt or name):
            raise UserError("--gguf FILE needs --name NAME: the model's name in the cache")
        path = import_gguf(gguf, name_opt or name, cache_dir)
    elif name is None:
        raise UserError(f"give a known base ({', '.join(KNOWN_BASES)}) or --gguf FILE --name NAME")
    elif name not in KNOWN_BASES:
        raise UserError(f"unknown base {name!r} (known: {', '.join(KNOWN_BASES)}); for any GGUF: --gguf FILE")
    else:
        path = import_known(name, cache_dir)
    typer.echo(f"wrote {path}")


def usage_error(err: Exception) -> str | None:
    """The one-line message of a command-line parsing error (click's, as vendored by typer), else None."""
    try:
        from typer._click.exceptions import ClickException, UsageError
    except ImportError:  # typer releases that use click itself
        from click.exceptions import ClickException, UsageError
    if not isinstance(err, ClickException):
        return None
    message = " ".join(err.format_message().split())
    if isinstance(err, UsageError) and err.ctx is not None:
        message += f" (see {err.ctx.command_path} --help)"
    return message


def main() -> None:
    try:
        app(standalone_mode=False)
    except UserError as err:
        err_console.print(f"error: {err}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except DivergenceError as err:
        err_console.print(f"diverged: {err}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted", highlight=False)
        sys.exit(130)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except Exception as err:  # noqa: BLE001
        if usage := usage_error(err):  # a bad option or argument: one line, like every user mistake
            err_console.print(f"error: {usage}", highlight=False, markup=False, soft_wrap=True)
            sys.exit(2)
        from lifelong.train import Interrupted

        if isinstance(err, Interrupted):
            err_console.print(
                f"interrupted: checkpoint saved; continue with: lifelong run --resume {err}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
