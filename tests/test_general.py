"""The `general` suite and `keep:`: evaluated-never-trained columns of the accuracy matrix."""

from __future__ import annotations

import json
import math
import re
import shutil
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lifelong
from lifelong.cli import main
from lifelong.config import parse_config
from lifelong.data import build_stream
from lifelong.data.batching import encode_stream
from lifelong.data.scenarios import general
from lifelong.data.sources.wordnet import wordnet_glosses
from lifelong.data.spec import StreamConfig
from lifelong.errors import UserError
from lifelong.metrics import kept_drops, summary
from lifelong.models import build_tokenizer
from tests.conftest import small_config_dict
from tests.test_cli_errors import assert_one_line_error, run_cli

KEEP = {
    "general": {"n_eval": 6, "sets": ["capitals", "arithmetic", "definitions", "english"], "text_chars": 200}
}


# ------------------------------------------------------------------ the suite's builders
def test_known_facts_are_answered_right():
    capitals = dict(general.capital_pairs(0))
    assert capitals["What is the capital of France? Reply with the city's name only."] == "Paris"
    assert capitals["What is the capital of Japan? Reply with the city's name only."] == "Tokyo"
    currencies = dict(general.currency_pairs(0))
    assert currencies["What is the currency of Japan? Reply with the currency's name only."] == "Yen"
    assert general.FORMATS["Reply with the word in upper case: {w}"]("dog") == "DOG"


def test_arithmetic_and_format_answers_are_correct():
    pairs = general.arithmetic_pairs(0)
    assert len(pairs) == 4000 and len(set(pairs)) == 4000
    for prompt, answer in pairs:
        asked = r"What is (\d\d) ([+-]) (\d\d)\? Reply with the number only\."
        a, op, b = re.fullmatch(asked, prompt).groups()
        assert int(answer) == (int(a) + int(b) if op == "+" else int(a) - int(b)) >= 0
    for prompt, answer in general.format_pairs(0)[:200]:
        word = prompt.rsplit(": ", 1)[1]
        if "upper" in prompt:
            assert answer == word.upper() and word.islower()
        elif "lower" in prompt:
            assert answer == word.lower() and word.isupper()
        elif "twice" in prompt:
            assert answer == f"{word} {word}"
        else:
            assert answer == f'"{word}"'


def test_definitions_answer_is_the_letter_of_the_words_own_definition():
    senses: dict[str, set[str]] = {}
    for word, definition in wordnet_glosses("noun"):
        senses.setdefault(word, set()).add(definition)
    pairs = general.definition_pairs(0)
    letters = [answer for _, answer in pairs]
    assert {letters.count(x) for x in "ABCD"} == {1000}  # each letter equally often
    for prompt, answer in pairs[:300]:
        word = re.search(r'"(.+)"', prompt).group(1)
        options = dict(line.split(". ", 1) for line in prompt.splitlines()[1:-1])
        assert sorted(options) == list("ABCD") and len(set(options.values())) == 4
        assert options[answer] in senses[word]
        assert not any(options[x] in senses[word] for x in "ABCD" if x != answer)


def test_general_stream_is_deterministic_and_sized():
    a, b = general.general_stream(n_eval=20, seed=1), general.general_stream(n_eval=20, seed=1)
    assert [t.name for t in a.tasks] == list(general.DEFAULT_SETS)
    assert [(t.train, t.eval) for t in a.tasks] == [(t.train, t.eval) for t in b.tasks]
    other = general.general_stream(n_eval=20, seed=2)
    assert [t.eval for t in a.tasks] != [t.eval for t in other.tasks]
    for task in a.tasks:
        if task.kind == "text":
            assert task.metric == "loss" and sum(len(e.prompt) for e in task.eval) == 4000
            continue
        assert len(task.eval) == 20 and task.train
        assert not {e.prompt for e in task.eval} & {e.prompt for e in task.train}  # held out
    assert a.tasks[3].metric == "accuracy" and sorted(a.tasks[3].choices()) == list("ABCD")


def test_general_rejects_an_unknown_set():
    with pytest.raises(UserError, match="unknown set 'trivia'"):
        general.general_stream(sets=["trivia"])


# ---------------------------------------------------------------- keep: as configuration
def test_keep_forms_and_kept_tasks():
    assert StreamConfig(builtin="toy", keep="general").kept_suites == {"general": {}}
    assert StreamConfig(builtin="toy", keep=["general"]).kept_suites == {"general": {}}
    stream = build_stream(StreamConfig(builtin="toy", keep=KEEP), seed=0)
    assert stream.task_names == ["add", "reverse", "sort", "modadd"]  # the trained tasks, untouched
    names = [t.name for t in stream.kept]
    assert names == ["general/capitals", "general/arithmetic", "general/definitions", "general/english"]
    assert all(not t.train and t.eval and t.token == "" for t in stream.kept)


def test_kept_sets_add_no_token_and_use_no_task_prefix():
    stream = build_stream(StreamConfig(builtin="toy", options={"n_digits": 1}, keep=KEEP), seed=0)
    plain = build_tokenizer(None, [t.token for t in stream.tasks])
    data = encode_stream(stream, plain, 256)
    without = encode_stream(build_stream(StreamConfig(builtin="toy", options={"n_digits": 1}), 0), plain, 256)
    assert len(data.kept) == 4 and data.max_len == without.max_len  # methods' widths unchanged
    assert all(k.prefix == [] and len(k.train) == 0 for k in data.kept)  # no bos in this tokenizer
    first = stream.kept[0].eval[0]
    expected = plain(first.prompt, add_special_tokens=False)["input_ids"]
    assert data.kept[0].eval.prompts(1) == [expected]  # the prompt alone: no task token before it
    assert len(plain) == len(build_tokenizer(None, [t.token for t in stream.tasks]))


# ------------------------------------------------------------- keep: in a run
def keep_config(tmp_path, name, keep=None, **changes):
    stream = {"builtin": "toy", "options": {"n_digits": 1, "tasks": ["reverse", "add"], "n_eval": 16}}
    data = small_config_dict(tmp_path, name=name, model={"max_length": 64}, stream=stream, **changes)
    if keep is not None:
        data["stream"]["keep"] = keep
    return data


def test_keep_adds_columns_and_leaves_the_stream_as_it_was(tmp_path):
    methods = [{"name": "self_replay", "replay_fraction": 0.5}]
    plain = lifelong.run(parse_config(keep_config(tmp_path, "plain", methods=methods)), show_progress=False)
    kept = lifelong.run(
        parse_config(keep_config(tmp_path, "kept", KEEP, methods=methods)), show_progress=False
    )
    n = len(plain.task_names)
    assert [row[:n] for row in kept.progress.matrix] == plain.progress.matrix  # methods never saw them
    assert kept.progress.baseline[:n] == plain.progress.baseline
    assert (kept.path / "train_log.jsonl").read_text().count("\n") == 12
    losses = lambda r: [json.loads(x)["loss"] for x in (r.path / "train_log.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(kept) == losses(plain)

    matrix = json.loads((kept.path / "matrix.json").read_text())
    assert matrix["tasks"] == ["reverse", "add"]
    assert matrix["kept"] == [f"general/{s}" for s in KEEP["general"]["sets"]]
    assert matrix["kept_metrics"] == ["answer_contains", "answer_contains", "accuracy", "loss"]
    assert len(matrix["baseline"]) == 6 and all(len(row) == 6 for row in matrix["rows"])
    assert matrix["baseline"][-1] < 0  # the initial model's held-out English loss was scored
    header = (kept.path / "matrix.csv").read_text().splitlines()[0]
    assert (
        header == "after,reverse,add,general/capitals,general/arithmetic,general/definitions,general/english"
    )

    result = json.loads((kept.path / "summary.json").read_text())
    assert result["metrics"] == json.loads((plain.path / "summary.json").read_text())["metrics"]
    english = result["kept"]["columns"]["general/english"]
    assert english["drop"] == pytest.approx(english["initial"] - english["final"])
    assert english["initial"] == matrix["baseline"][-1] and english["final"] == matrix["rows"][-1][-1]
    drops = [c["drop"] for c in result["kept"]["columns"].values()]
    assert result["kept"]["mean_drop"] == pytest.approx(sum(drops) / 4)
    assert result["kept"]["worst_drop"] == max(drops)
    assert "kept" not in json.loads((plain.path / "matrix.json").read_text())
    assert "kept" not in json.loads((plain.path / "summary.json").read_text())
    evals = [json.loads(x) for x in (kept.path / "evals.jsonl").read_text().splitlines()]
    assert evals[0]["task"] == -1 and all(len(e["scores"]) == 6 for e in evals)


def cli_output(args: list[str], monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", ["lifelong", *args])
    monkeypatch.setenv("COLUMNS", "200")
    main()
    return capsys.readouterr().out


def test_run_and_report_print_the_kept_columns_apart(tmp_path, write_config, monkeypatch, capsys):
    path = write_config(keep_config(tmp_path, "shown", KEEP))
    ran = cli_output(["run", str(path), "--no-progress"], monkeypatch, capsys)
    reported = cli_output(["report", str(tmp_path / "runs" / "shown")], monkeypatch, capsys)
    for out in (ran, reported):
        stream_table, _, rest = out.partition("kept (evaluated, never trained)")
        assert "general/" not in stream_table and "reverse" in stream_table  # the stream's tasks alone
        assert "general/english" in rest and "drop (initial - final)" in rest
        assert "kept" in rest.split("Metrics")[1]  # the mean and worst drop next to AA ... FWD


def test_report_shows_kept_table(tmp_path):
    from rich.console import Console

    from lifelong.report import print_runs

    result = lifelong.run(parse_config(keep_config(tmp_path, "table", KEEP)), show_progress=False)
    console = Console(record=True, width=200)
    print_runs([result.path], console)
    text = console.export_text()
    assert "kept (evaluated, never trained)" in text and "general/english" in text
    assert "drop (initial - final)" in text and "kept" in text.split("Metrics")[1]
    stream_table = text.split("kept (evaluated")[0]
    assert "general/" not in stream_table  # the stream's own table holds only its tasks


def test_resume_with_kept_columns_matches_an_unbroken_run(tmp_path):
    cfg = keep_config(tmp_path, "resumed", KEEP, train={"checkpoint_every": 3, "eval_every": 2})
    whole = lifelong.run(parse_config(cfg), show_progress=False)
    run_dir = whole.path
    before = (run_dir / "matrix.json").read_text()
    # as if the run died in task 2 after its mid-task checkpoint
    shutil.rmtree(run_dir / "checkpoints" / "after-task-002")
    (run_dir / "checkpoints" / "latest").write_text("task-002-step-0000003\n")
    for name in ("summary.json", "matrix.json"):
        (run_dir / name).unlink()
    resumed = lifelong.resume(run_dir, show_progress=False)
    assert not resumed.already_finished
    assert resumed.progress.matrix == whole.progress.matrix and resumed.progress.kept == whole.progress.kept
    assert resumed.progress.finished
    assert (run_dir / "matrix.json").read_text() == before


def test_a_bad_keep_name_is_one_line(tmp_path, write_config, monkeypatch, capsys):
    path = write_config(keep_config(tmp_path, "bad", "trivia"))
    code, err = run_cli(["run", str(path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "unknown kept suite 'trivia'", "general")
    path = write_config(keep_config(tmp_path, "bad", {"general": {"n_evil": 3}}))
    code, err = run_cli(["run", str(path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "kept suite 'general' has no option 'n_evil'")
    path = write_config(keep_config(tmp_path, "bad", {"general": {"sets": ["trivia"]}}))
    code, err = run_cli(["run", str(path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "unknown set 'trivia'")


def test_general_is_listed_as_a_stream(monkeypatch, capsys):
    from lifelong.data import builtin_streams

    assert "general" in builtin_streams()
    code, err = run_cli(["streams", "general"], monkeypatch, capsys)
    assert code == 0, err


# ------------------------------------------------------------ metrics of kept columns
scores = st.floats(-10, 10, allow_nan=False)


@st.composite
def kept_part(draw):
    k, r = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return draw(st.lists(scores, min_size=k, max_size=k)), draw(
        st.lists(st.lists(scores, min_size=k, max_size=k), min_size=r, max_size=r)
    )


@settings(max_examples=200, deadline=None)
@given(kept_part())
def test_kept_drop_is_initial_minus_final(part):
    baseline, rows = part
    out = kept_drops(baseline, rows)
    assert out["drop"] == pytest.approx([b - f for b, f in zip(baseline, rows[-1], strict=True)])
    assert out["mean_drop"] == pytest.approx(sum(out["drop"]) / len(baseline))
    assert out["worst_drop"] == max(out["drop"]) >= out["mean_drop"] - 1e-9
    assert all(m >= d for m, d in zip(out["max_drop"], out["drop"], strict=True))


@settings(max_examples=100, deadline=None)
@given(st.lists(scores, min_size=1, max_size=5), st.integers(1, 4))
def test_unchanged_kept_scores_drop_nothing(baseline, n_rows):
    out = kept_drops(baseline, [baseline] * n_rows)
    assert out["drop"] == [0.0] * len(baseline) and out["mean_drop"] == 0 and out["worst_drop"] == 0


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4).flatmap(lambda t: st.tuples(st.just(t), st.integers(1, 3))), st.data())
def test_kept_columns_do_not_change_the_stream_metrics(sizes, data):
    t, k = sizes
    square = data.draw(st.lists(st.lists(scores, min_size=t, max_size=t), min_size=t, max_size=t))
    extra = data.draw(st.lists(st.lists(scores, min_size=k, max_size=k), min_size=t + 1, max_size=t + 1))
    baseline = data.draw(st.lists(scores, min_size=t, max_size=t))
    wide = [row + more for row, more in zip(square, extra[1:], strict=True)]
    wide_baseline = baseline + extra[0]
    # what report.write_results does: the five metrics on the square part only
    assert summary([r[:t] for r in wide], wide_baseline[:t]) == summary(square, baseline)


def test_a_nan_kept_score_stays_nan():
    out = kept_drops([1.0, 0.5], [[0.5, math.nan]])
    assert math.isnan(out["drop"][1]) and math.isnan(out["mean_drop"]) and out["drop"][0] == 0.5
    with pytest.raises(ValueError):
        kept_drops([1.0], [[1.0, 2.0]])


def test_runs_that_kept_the_same_sets_are_compared_side_by_side():
    from rich.console import Console

    from lifelong.report import kept_comparison_table

    def matrix(final: list[float]) -> dict:
        return {
            "tasks": ["t"],
            "kept": ["general/capitals", "general/english"],
            "kept_metrics": ["answer_contains", "loss"],
            "baseline": [0.0, 0.4, -4.0],
            "rows": [[0.9, *final]],
        }

    table = kept_comparison_table([("naive", matrix([0.1, -4.5])), ("self_replay", matrix([0.3, -4.1]))])
    console = Console(record=True, width=200)
    console.print(table)
    lines = {line.split("│")[1].strip(): line for line in console.export_text().splitlines() if "│" in line}
    assert "0.400" in lines["(initial model)"]  # the mean leaves the loss column out
    assert "+0.300" in lines["naive"] and "+0.100" in lines["self_replay"]  # drops of that mean
    assert kept_comparison_table([("a", matrix([0.1, -4.5]))]) is None  # one run: nothing to compare
    other = matrix([0.1, -4.5]) | {"kept": ["general/currencies", "general/english"]}
    assert kept_comparison_table([("a", matrix([0.1, -4.5])), ("b", other)]) is None
