"""Tasks declared in the config: JSONL, JSON, CSV, inline rows and local Hugging Face datasets."""

import csv
import json

import pytest

from lifelong.config import DataSource, StreamConfig, TaskSpec
from lifelong.data import build_stream, build_task, split_examples
from lifelong.data.task import Example
from lifelong.errors import UserError

ROWS = [{"question": f"q{i}", "answer": f"a{i}", "extra": i} for i in range(20)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path, rows, fields):
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def stream_of(*tasks, name=None, seed=0):
    return build_stream(StreamConfig(tasks=list(tasks), name=name), seed)


def qa_source(**kw):
    return {"prompt_field": "question", "target_field": "answer", **kw}


# ------------------------------------------------------------------ formats


def test_jsonl_csv_inline_with_custom_fields(tmp_path):
    jsonl = write_jsonl(tmp_path / "train.jsonl", ROWS[:5])
    jsonl_eval = write_jsonl(tmp_path / "eval.jsonl", ROWS[5:7])
    csv_rows = [{"x": f"in {i}", "y": f"out, {i}"} for i in range(4)]
    csv_file = write_csv(tmp_path / "t.CSV", csv_rows, ["x", "y"])
    tasks = [
        TaskSpec(
            name="j",
            train=DataSource(file=str(jsonl), **qa_source()),
            eval=DataSource(file=str(jsonl_eval), **qa_source()),
        ),
        TaskSpec(
            name="c",
            train=DataSource(file=str(csv_file), prompt_field="x", target_field="y"),
            eval=DataSource(examples=[{"x": "e", "y": "f"}], prompt_field="x", target_field="y"),
        ),
        TaskSpec(
            name="inline",
            kind="text",
            token="<INL>",
            train=DataSource(examples=[{"body": "one"}, {"body": "two"}], text_field="body"),
            eval=DataSource(examples=[{"body": "three", "other": 1}], text_field="body"),
        ),
    ]
    stream = stream_of(*tasks, name="mine")
    assert stream.name == "mine"
    assert stream.vocabulary is None
    assert stream.task_names == ["j", "c", "inline"]
    j, c, inline = stream.tasks
    assert j.train == [Example(f"q{i}", f"a{i}") for i in range(5)]
    assert j.eval == [Example("q5", "a5"), Example("q6", "a6")]
    assert (j.kind, j.metric, j.token) == ("prompt_target", "exact_match", "<j>")
    assert c.train == [Example(f"in {i}", f"out, {i}") for i in range(4)]  # quoted commas
    assert c.eval == [Example("e", "f")]
    assert inline.train == [Example("one"), Example("two")]
    assert inline.eval == [Example("three")]
    assert (inline.kind, inline.metric, inline.token) == ("text", "loss", "<INL>")


def test_json_file_and_non_string_values(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"prompt": 1, "target": 2.5}, {"prompt": "a", "target": True}]))
    spec = TaskSpec(name="n", train=DataSource(file=str(path)), eval=DataSource(file=str(path)))
    task = build_task(spec, 0)
    assert task.train == [Example("1", "2.5"), Example("a", "True")]


def test_limit_keeps_first_rows(tmp_path):
    jsonl = write_jsonl(tmp_path / "t.jsonl", ROWS)
    spec = TaskSpec(
        name="l",
        train=DataSource(file=str(jsonl), limit=6, **qa_source()),
        eval=DataSource(file=str(jsonl), limit=2, **qa_source()),
    )
    task = build_task(spec, 0)
    assert [ex.prompt for ex in task.train] == [f"q{i}" for i in range(6)]
    assert [ex.prompt for ex in task.eval] == ["q0", "q1"]


def test_jsonl_blank_lines_and_utf8(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text(
        '{"prompt": "caf\\u00e9", "target": "ü"}\n\n   \n{"prompt": "日本", "target": "語"}\n',
        encoding="utf-8",
    )
    spec = TaskSpec(name="u", train=DataSource(file=str(path)), eval=DataSource(file=str(path)))
    assert build_task(spec, 0).train == [Example("café", "ü"), Example("日本", "語")]


# ------------------------------------------------------------------ held-out split


def test_split_by_eval_fraction(tmp_path):
    jsonl = write_jsonl(tmp_path / "t.jsonl", ROWS)
    spec = TaskSpec(name="s", train=DataSource(file=str(jsonl), **qa_source()), eval_fraction=0.25)
    task = build_task(spec, seed=3)
    assert len(task.eval) == 5 and len(task.train) == 15
    train, eval_ = {ex.prompt for ex in task.train}, {ex.prompt for ex in task.eval}
    assert not train & eval_
    assert train | eval_ == {r["question"] for r in ROWS}
    # both splits keep the file order
    order = [r["question"] for r in ROWS]
    assert [ex.prompt for ex in task.train] == [q for q in order if q in train]
    assert [ex.prompt for ex in task.eval] == [q for q in order if q in eval_]
    # deterministic for a seed, and depends on it
    assert build_task(spec, seed=3).eval == task.eval
    others = [build_task(spec, seed=s).eval for s in range(4, 9)]
    assert any(o != task.eval for o in others)
    # and on the task name, so two tasks of one file are not split alike
    renamed = TaskSpec(name="s2", train=spec.train, eval_fraction=0.25)
    assert any(build_task(renamed, seed=s).eval != build_task(spec, seed=s).eval for s in range(5))


def test_split_examples_sizes():
    exs = [Example(str(i)) for i in range(10)]
    for fraction, n_eval in [(0.1, 1), (0.5, 5), (0.01, 1), (0.99, 10)]:
        train, eval_ = split_examples(exs, fraction, 0)
        assert len(eval_) == n_eval, fraction
        assert len(train) + len(eval_) == 10
        assert set(train).isdisjoint(eval_)
    assert split_examples([Example("x")], 0.5, 0) == ([Example("x")], [])
    assert split_examples([], 0.5, 0) == ([], [])


def test_eval_fraction_with_stream_seed():
    rows = [{"prompt": str(i), "target": "t"} for i in range(30)]
    spec = TaskSpec(name="x", train=DataSource(examples=rows))  # default fraction 0.1
    a, b = stream_of(spec, seed=1), stream_of(spec, seed=1)
    assert len(a.tasks[0].eval) == 3
    assert a.tasks[0].eval == b.tasks[0].eval and a.tasks[0].train == b.tasks[0].train


# ------------------------------------------------------------------ Hugging Face datasets


def test_hf_local_dataset_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = {"q": [f"p{i}" for i in range(8)], "a": [f"t{i}" for i in range(8)]}
    single = tmp_path / "single"
    datasets.Dataset.from_dict(data).save_to_disk(str(single))
    dd = tmp_path / "dd"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(data),
            "test": datasets.Dataset.from_dict({"q": ["z"], "a": ["w"]}),
        }
    ).save_to_disk(str(dd))

    spec = TaskSpec(
        name="hf",
        train=DataSource(hf=str(single), prompt_field="q", target_field="a"),
        eval=DataSource(hf=str(dd), split="test", prompt_field="q", target_field="a"),
    )
    task = build_task(spec, 0)
    assert task.train == [Example(f"p{i}", f"t{i}") for i in range(8)]
    assert task.eval == [Example("z", "w")]

    from_dict = TaskSpec(
        name="hf2", train=DataSource(hf=str(dd), prompt_field="q", target_field="a"), eval_fraction=0.25
    )
    task = build_task(from_dict, 0)  # the "train" split of the DatasetDict
    assert len(task.train) == 6 and len(task.eval) == 2
    assert {ex.prompt for ex in task.train + task.eval} == set(data["q"])

    missing_split = TaskSpec(
        name="hf3", train=DataSource(hf=str(dd), split="validation", prompt_field="q", target_field="a")
    )
    with pytest.raises(UserError, match="validation") as err:
        build_task(missing_split, 0)
    assert "hf3" in str(err.value) and "\n" not in str(err.value)

    wrong_field = TaskSpec(name="hf4", train=DataSource(hf=str(single)))
    with pytest.raises(UserError, match="no field 'prompt'"):
        build_task(wrong_field, 0)


# ------------------------------------------------------------------ errors


def test_missing_file_names_file(tmp_path):
    path = tmp_path / "nowhere.jsonl"
    spec = TaskSpec(name="m", train=DataSource(file=str(path)))
    with pytest.raises(UserError) as err:
        build_task(spec, 0)
    assert str(path) in str(err.value) and "not found" in str(err.value)
    assert "'m'" in str(err.value)


def test_invalid_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "target": "b"}\n{"prompt": "c", target: d}\n')
    with pytest.raises(UserError, match="not valid JSON") as err:
        build_task(TaskSpec(name="b", train=DataSource(file=str(path))), 0)
    assert str(path) in str(err.value)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[{")
    with pytest.raises(UserError, match="not valid JSON"):
        build_task(TaskSpec(name="b", train=DataSource(file=str(bad_json))), 0)


def test_invalid_json_line_reports_file_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "target": "b"}\n{"prompt": "a", "target": "b"}\n{oops}\n')
    with pytest.raises(UserError) as err:
        build_task(TaskSpec(name="b", train=DataSource(file=str(path))), 0)
    assert "line 3" in str(err.value)


def test_row_without_prompt_field_names_field(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "a", "target": "b"}, {"target": "c"}])
    with pytest.raises(UserError) as err:
        build_task(TaskSpec(name="f", train=DataSource(file=str(path))), 0)
    msg = str(err.value)
    assert "'prompt'" in msg and "row 1" in msg and "'f'" in msg
    custom = write_jsonl(tmp_path / "c.jsonl", ROWS[:3])
    with pytest.raises(UserError, match="no field 'answer'"):
        src = DataSource(file=str(custom), prompt_field="question", target_field="answer")
        build_task(
            TaskSpec(name="g", train=src, eval=DataSource(examples=[{"question": "x"}], **qa_source())),
            0,
        )
    with pytest.raises(UserError, match="no field 'text'"):
        build_task(TaskSpec(name="t", kind="text", train=DataSource(examples=[{"prompt": "x"}])), 0)


def test_csv_missing_column(tmp_path):
    path = write_csv(tmp_path / "t.csv", [{"prompt": "a", "label": "b"}], ["prompt", "label"])
    with pytest.raises(UserError, match="no field 'target'"):
        build_task(TaskSpec(name="c", train=DataSource(file=str(path))), 0)


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "z", "train": {"examples": []}},
        {"name": "z", "train": {"examples": [{"prompt": "a", "target": "b"}]}},  # nothing left for eval
        {
            "name": "z",
            "train": {"examples": [{"prompt": "a", "target": "b"}]},
            "eval": {"examples": []},
        },
    ],
)
def test_task_with_zero_examples(spec):
    with pytest.raises(UserError, match="task 'z' has no (train|eval) examples"):
        build_task(TaskSpec(**spec), 0)


def test_empty_file_is_zero_examples(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(UserError, match="no train examples"):
        build_task(TaskSpec(name="e", train=DataSource(file=str(path))), 0)


def test_unsupported_suffix_and_wrong_shape(tmp_path):
    txt = tmp_path / "d.txt"
    txt.write_text("hello")
    with pytest.raises(UserError, match=r"not \.jsonl, \.json or \.csv"):
        build_task(TaskSpec(name="x", train=DataSource(file=str(txt))), 0)
    obj = tmp_path / "d.json"
    obj.write_text('{"prompt": "a", "target": "b"}')
    with pytest.raises(UserError, match="list of objects"):
        build_task(TaskSpec(name="x", train=DataSource(file=str(obj))), 0)
    scalars = tmp_path / "s.jsonl"
    scalars.write_text("1\n2\n")
    with pytest.raises(UserError, match="list of objects"):
        build_task(TaskSpec(name="x", train=DataSource(file=str(scalars))), 0)
    latin = tmp_path / "l.jsonl"
    latin.write_bytes(b'{"prompt": "caf\xe9", "target": "b"}\n')
    with pytest.raises(UserError, match="not UTF-8"):
        build_task(TaskSpec(name="x", train=DataSource(file=str(latin))), 0)


def test_csv_with_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("prompt,target\r\nhello,world\r\n".encode("utf-8-sig"))
    spec = TaskSpec(name="b", train=DataSource(file=str(path)), eval=DataSource(file=str(path)))
    assert build_task(spec, 0).train == [Example("hello", "world")]
