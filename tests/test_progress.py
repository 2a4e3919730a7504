"""Off a terminal (output to a file or pipe) a run prints one plain line per evaluation; on a terminal
it shows rich's live bars instead. Either way it computes the same numbers."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from lifelong.progress import duration, eval_line, stream_position
from tests.conftest import small_config_dict

LINE = re.compile(
    r"^(\S+): (baseline|task (\d)/2 step (\d+) loss \d+\.\d{3}) scores( \d\.\d{3}){2} elapsed \dm\d\ds$"
)


def cli(*args: str, cwd) -> subprocess.CompletedProcess:
    """`lifelong ...` in a fresh interpreter with stdout to a pipe, as in a CI log."""
    code = "from lifelong.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd)


def config(tmp_path, write_config, name: str, out: str, progress: bool) -> str:
    data = small_config_dict(tmp_path, name=name, methods=[name], train={"eval_every": 3})
    data["output_dir"], data["progress"] = str(tmp_path / out), progress
    return str(write_config(data, f"{out}-{name}.yaml"))


def eval_lines(stdout: str, run: str) -> list[re.Match]:
    return [m for line in stdout.splitlines() if (m := LINE.match(line)) and m.group(1) == run]


def matrix(path) -> list[list[float]]:
    return json.loads((path / "matrix.json").read_text())["rows"]


def test_a_run_piped_prints_a_line_per_evaluation_and_computes_the_same(tmp_path, write_config):
    piped = cli("run", config(tmp_path, write_config, "naive", "piped", True), cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    lines = eval_lines(piped.stdout, "naive")
    # the baseline, then after steps 3 and 6 of each of the 2 tasks
    assert [(m.group(3), m.group(4)) for m in lines] == [
        (None, None),
        ("1", "3"),
        ("1", "6"),
        ("2", "3"),
        ("2", "6"),
    ]
    evals = (tmp_path / "piped" / "naive" / "evals.jsonl").read_text().splitlines()
    assert len(evals) == len(lines)
    quiet = cli("run", config(tmp_path, write_config, "naive", "quiet", False), cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert not eval_lines(quiet.stdout, "naive")  # progress: false prints none
    assert matrix(tmp_path / "piped" / "naive") == matrix(tmp_path / "quiet" / "naive")


def test_side_by_side_runs_piped_print_a_line_per_evaluation_of_each(tmp_path, write_config):
    configs = [config(tmp_path, write_config, name, "both", True) for name in ("naive", "ewc")]
    out = cli("run", *configs, "--jobs", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for name in ("naive", "ewc"):
        lines = eval_lines(out.stdout, name)
        assert len(lines) == 5 and lines[0].group(2) == "baseline", out.stdout
        assert [m.group(4) for m in lines[1:]] == ["3", "6", "3", "6"]


def test_eval_line_format():
    line = eval_line("toy_naive", stream_position(1, 4, 300), 0.4123, [1.0, 0.953, None, float("nan")], 65.2)
    assert line == "toy_naive: task 2/4 step 300 loss 0.412 scores 1.000 0.953 nan nan elapsed 1m05s"
    assert eval_line("en-tiny", "step 100/900", 3.5, {"kjv": 4.25}, 3725) == (
        "en-tiny: step 100/900 loss 3.500 scores kjv 4.250 elapsed 1h02m05s"
    )
    assert stream_position(-1, 4, 0) == "baseline" and duration(59.9) == "0m59s"
