"""`lifelong compare` runs each method in its own process and writes one table and one plot."""

from __future__ import annotations

import csv
import json

from tests.conftest import small_config_dict
from tests.test_cli_errors import assert_one_line_error, run_cli


def test_compare_writes_one_row_per_method(tmp_path, write_config, monkeypatch, capsys):
    base = write_config(small_config_dict(tmp_path, name="base"), "base.yaml")
    args = ["compare", "naive", "l2+self_replay", "--base", str(base), "--no-progress"]
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    out = tmp_path / "runs" / "compare-base"
    rows = json.loads((out / "compare.json").read_text())
    assert [r["run"] for r in rows] == ["base-naive", "base-l2+self_replay"]
    for r in rows:
        assert 0 <= r["AA"] <= 1 and r["train s"] > 0 and r["peak MB"] > 0 and r["trainable params"] > 0
    with open(out / "compare.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert (out / "compare.png").stat().st_size > 0
    assert "| base-naive |" in (out / "compare.md").read_text()
    saved = (tmp_path / "runs" / "base-l2+self_replay" / "config.yaml").read_text()
    assert "name: l2" in saved and "name: self_replay" in saved

    runs = [str(tmp_path / "runs" / name) for name in ("base-naive", "base-l2+self_replay")]
    code, err = run_cli(["compare", *runs], monkeypatch, capsys)  # finished runs: tabulated, not run
    assert code == 0, err
    again = json.loads((tmp_path / "runs" / "compare-runs" / "compare.json").read_text())
    assert again == rows
    code, err = run_cli(["compare", runs[0], "naive"], monkeypatch, capsys)
    assert_one_line_error(code, err, "finished run directories")


def test_compare_unknown_method_is_one_line(tmp_path, write_config, monkeypatch, capsys):
    base = write_config(small_config_dict(tmp_path, name="base"), "base.yaml")
    code, err = run_cli(["compare", "forgetless", "--base", str(base)], monkeypatch, capsys)
    assert_one_line_error(code, err, "unknown method", "forgetless")
