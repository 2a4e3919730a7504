"""The hub benchmark streams (text_cls_benchmark, trace) on tiny local copies in the real layouts: a
`save_to_disk` DatasetDict and Dataset with the hub's columns and ClassLabels, Zhang et al.'s
header-less CSVs, O-LoRA's {sentence, label} JSON, a JSONL file and TRACE's dataset folders."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter

import datasets
import pytest

from lifelong.config import stream_config
from lifelong.data import builtin_streams
from lifelong.data.registry import BUILTIN_STREAMS, StreamInfo, describe_stream
from lifelong.data.scenarios.benchmarks import (
    CLASSIFICATION_SETS,
    ORDERS,
    text_cls_benchmark_stream,
    trace_stream,
)
from lifelong.data.task import Example, Stream
from lifelong.errors import UserError

PER_CLASS = 8  # rows of every class in each local training split (test splits: 4)


def write_json(path, rows, jsonl=False):
    text = "".join(json.dumps(r) + "\n" for r in rows) if jsonl else json.dumps(rows)
    path.write_text(text, encoding="utf-8")
    return path


def ag_news_dict(folder):
    """fancyzhx/ag_news's layout: text, label (ClassLabel World, Sports, Business, Sci/Tech)."""
    names = ["World", "Sports", "Business", "Sci/Tech"]
    label = datasets.ClassLabel(names=names)
    features = datasets.Features({"text": datasets.Value("string"), "label": label})
    splits = {}
    for split, k in (("train", PER_CLASS), ("test", 4)):
        text = [f"{split} {n} story {i}" for n in names for i in range(k)]
        if split == "train":
            text[2 * k] = "Stocks slide as oil jumps"  # the first Business row
        data = {"text": text, "label": [c for c in range(4) for _ in range(k)]}
        splits[split] = datasets.Dataset.from_dict(data, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


def yahoo_dataset(folder):
    """community-datasets/yahoo_answers_topics's columns, one split (save_to_disk of a Dataset)."""
    topics = datasets.ClassLabel(names=list(CLASSIFICATION_SETS["yahoo"].classes))
    n = 10 * PER_CLASS
    data = {
        "id": list(range(n)),
        "topic": [i % 10 for i in range(n)],
        "question_title": [f"question {i}" for i in range(n)],
        "question_content": ["" if i % 3 else f"details {i}" for i in range(n)],
        "best_answer": [f"answer {i}" for i in range(n)],
    }
    features = datasets.Features(
        {"id": datasets.Value("int32"), "topic": topics}
        | {k: datasets.Value("string") for k in ("question_title", "question_content", "best_answer")}
    )
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(folder))
    return folder


def zhang_csv(folder, per_class):
    """amazon_review_full_csv: header-less "class_index","title","text" rows, classes 1-5."""
    folder.mkdir(exist_ok=True)
    for split, k in (("train", per_class), ("test", 4)):
        with (folder / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, quoting=csv.QUOTE_ALL)
            rows = [
                [str(c), f"{split} title {c}.{i}", f"body, {c}.{i}"] for c in range(1, 6) for i in range(k)
            ]
            if split == "train":
                rows[2 * k] = ["3", "Just okay", "It works, nothing more."]  # the first row of class 3
            w.writerows(rows)
    return folder


def olora_json(folder):
    """O-LoRA's CL_Benchmark/TC/dbpedia: train.json / test.json of {"label": name, "sentence": text}."""
    folder.mkdir()
    classes = CLASSIFICATION_SETS["dbpedia"].classes
    for split, k in (("train", PER_CLASS), ("test", 4)):
        rows = [{"label": c, "sentence": f"{split} {c} page {i}"} for c in classes for i in range(k)]
        write_json(folder / f"{split}.json", rows)
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    yelp = [{"text": f"review {i}", "label": i % 5} for i in range(5 * PER_CLASS)]
    yelp[4] = {"text": "Best tacos in town!", "label": "5 stars"}  # a hub class name, for label 4
    return {
        "ag_news": str(ag_news_dict(root / "ag_news")),
        "yahoo": str(yahoo_dataset(root / "yahoo")),
        "amazon": str(zhang_csv(root / "amazon_review_full_csv", PER_CLASS)),
        "dbpedia": str(olora_json(root / "dbpedia")),
        "yelp": str(write_json(root / "yelp.jsonl", yelp, jsonl=True)),
    }


def cls_stream(sources, seed=0, **options):
    return text_cls_benchmark_stream(
        **{"n_train": 4, "n_eval": 2, "sources": sources, "seed": seed, **options}
    )


def test_orders_and_explicit_tasks(sources):
    assert [t.name for t in cls_stream(sources).tasks] == list(ORDERS[1])
    for order, names in ORDERS.items():
        assert [t.name for t in cls_stream(sources, order=order).tasks] == list(names)
    assert ORDERS[3] == ("yahoo", "amazon", "ag_news", "dbpedia")
    mbpa = ["yelp", "ag_news", "dbpedia", "amazon", "yahoo"]
    stream = cls_stream(sources, tasks=mbpa)
    assert [t.token for t in stream.tasks] == [f"<{n}>" for n in mbpa]
    assert all(t.metric == "exact_match" and t.kind == "prompt_target" for t in stream.tasks)
    assert {t.metric for t in cls_stream(sources, tasks=["yelp"], metric="accuracy").tasks} == {"accuracy"}


def test_labels_are_class_names_checked_by_hand(sources):
    stream = cls_stream(sources, tasks=list(CLASSIFICATION_SETS), n_train=PER_CLASS + 1, n_eval=4)
    tasks = {t.name: t for t in stream.tasks}
    target = {n: {e.prompt: e.target for e in [*t.train, *t.eval]} for n, t in tasks.items()}
    assert target["ag_news"]["Stocks slide as oil jumps"] == "Business"  # ClassLabel 2
    assert target["ag_news"]["train Sci/Tech story 0"] == "Science or Technology"
    assert target["amazon"]["Just okay It works, nothing more."] == "neutral"  # class_index 3 of a CSV
    assert target["amazon"]["train title 1.0 body, 1.0"] == "very negative"
    assert target["yelp"]["Best tacos in town!"] == "very positive"
    assert target["yelp"]["review 1"] == "negative"  # label 1, counted from 0
    assert target["dbpedia"]["train Educational Institution page 0"] == "Educational Institution"
    assert target["yahoo"]["question 0 details 0 answer 0"] == "Society & Culture"  # title, content, answer
    assert target["yahoo"]["question 11 answer 11"] == "Science & Mathematics"  # empty content skipped
    for name, task in tasks.items():
        assert set(task.choices()) == set(CLASSIFICATION_SETS[name].classes)


def test_balanced_deterministic_and_disjoint(sources):
    names = list(CLASSIFICATION_SETS)
    first, again = cls_stream(sources, tasks=names), cls_stream(sources, tasks=names)
    other = cls_stream(sources, tasks=names, seed=1)
    for a, b, c in zip(first.tasks, again.tasks, other.tasks, strict=True):
        assert a.train == b.train and a.eval == b.eval
        assert (a.train, a.eval) != (c.train, c.eval)
        assert not {e.prompt for e in a.train} & {e.prompt for e in a.eval}
        n_classes = len(CLASSIFICATION_SETS[a.name].classes)
        assert Counter(e.target for e in a.train) == dict.fromkeys(CLASSIFICATION_SETS[a.name].classes, 4)
        assert Counter(e.target for e in a.eval) == dict.fromkeys(CLASSIFICATION_SETS[a.name].classes, 2)
        assert len(a.train) == 4 * n_classes
    tasks = {t.name: t for t in first.tasks}
    # a source with a test split is evaluated on it: ag_news (DatasetDict), amazon (CSVs), dbpedia (JSON)
    for name in ("ag_news", "amazon", "dbpedia"):
        assert all(e.prompt.startswith("test") for e in tasks[name].eval)
        assert all(e.prompt.startswith("train") or "okay" in e.prompt for e in tasks[name].train)


def test_max_words_clips_prompts(sources):
    (task,) = cls_stream(sources, tasks=["amazon"], max_words=2).tasks
    assert all(len(e.prompt.split()) <= 2 for e in [*task.train, *task.eval])


def test_prompt_answer_rows_and_errors_are_one_line(tmp_path, sources, monkeypatch):
    own = tmp_path / "own"
    own.mkdir()
    write_json(
        own / "train.json", [{"prompt": f"p{i}", "answer": ["World", "Sports"][i % 2]} for i in range(12)]
    )
    (task,) = cls_stream({"ag_news": str(own)}, tasks=["ag_news"]).tasks
    assert {e.target for e in task.eval} == {"World", "Sports"}
    write_json(own / "test.json", [{"prompt": "p0", "answer": "World"}, {"prompt": "q", "answer": 1}])
    (task,) = cls_stream({"ag_news": str(own)}, tasks=["ag_news"]).tasks
    assert set(task.eval) == {Example("p0", "World"), Example("q", "Sports")}
    assert "p0" not in {e.prompt for e in task.train} and len(task.train) == 8  # in both files: eval only

    def error(**options):
        with pytest.raises(UserError) as err:
            cls_stream(**{"sources": sources, **options})
        assert "\n" not in str(err.value)
        return str(err.value)

    no_label = write_json(tmp_path / "nolabel.jsonl", [{"text": "a", "stars": 1}], jsonl=True)
    assert "task 'yelp'" in (msg := error(sources={"yelp": str(no_label)}, tasks=["yelp"]))
    assert "nolabel.jsonl" in msg and "no label field" in msg
    gap = write_json(tmp_path / "gap.jsonl", [{"text": "a", "label": 0}, {"text": "b"}], jsonl=True)
    assert "gap.jsonl row 1: no field 'label'" in error(sources={"yelp": str(gap)}, tasks=["yelp"])
    no_text = write_json(tmp_path / "notext.jsonl", [{"body": "a", "label": 0}], jsonl=True)
    assert "no text field" in error(sources={"yelp": str(no_text)}, tasks=["yelp"])
    bad = write_json(tmp_path / "bad.jsonl", [{"text": "a", "label": 7}], jsonl=True)
    assert "label 7 is not a class" in error(sources={"yelp": str(bad)}, tasks=["yelp"])
    assert "not found" in error(sources={"yelp": str(tmp_path / "absent")}, tasks=["yelp"])
    assert "not both" in error(order=2, tasks=["yelp"])
    assert "no order 4" in error(order=4)
    assert "unknown task 'sst2'" in error(tasks=["sst2"])

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'fancyzhx/ag_news' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    msg = error(sources={}, tasks=["ag_news"])
    assert "task 'ag_news'" in msg and "'fancyzhx/ag_news'" in msg and "Couldn't reach" in msg


# ---------------------------------------------------------------------------------------------- TRACE


@pytest.fixture
def trace_root(tmp_path):
    """TRACE's layout: one folder per dataset with train.json, eval.json, test.json of {prompt, answer}."""
    fomc = tmp_path / "FOMC"
    fomc.mkdir()
    stance = ["dovish", "hawkish", "neutral"]
    write_json(
        fomc / "train.json", [{"prompt": f"Stance of text {i}?", "answer": stance[i % 3]} for i in range(30)]
    )
    write_json(fomc / "eval.json", [{"prompt": "eval only", "answer": "neutral"}])
    test = [{"prompt": f"Stance of test {i}?", "answer": stance[i % 3]} for i in range(9)]
    write_json(fomc / "test.json", [*test, {"prompt": "Stance of text 0?", "answer": "dovish"}])
    sqa = tmp_path / "ScienceQA"
    sqa.mkdir()
    rows = [
        {"prompt": f"Question {i}\nChoices: A. x B. y", "answer": f"Answer: A\nBecause {i}"}
        for i in range(12)
    ]
    write_json(sqa / "train.json", rows[:8])
    write_json(sqa / "eval.json", rows[8:])  # no test.json: eval.json is the held-out set
    return tmp_path


def test_trace_tasks_metrics_and_splits(trace_root):
    stream = trace_stream(root=str(trace_root), tasks=["FOMC", "ScienceQA"], n_train=20, n_eval=5)
    fomc, sqa = stream.tasks
    assert [t.name for t in stream.tasks] == ["FOMC", "ScienceQA"]
    assert (fomc.metric, sqa.metric) == ("exact_match", "chrf")
    assert (fomc.token, fomc.kind) == ("<FOMC>", "prompt_target")
    assert len(fomc.train) == 20 and len(fomc.eval) == 5 and len(sqa.train) == 8 and len(sqa.eval) == 4
    assert all(e.prompt.startswith("Stance of test") or e.prompt == "Stance of text 0?" for e in fomc.eval)
    assert not {e.prompt for e in fomc.train} & {e.prompt for e in fomc.eval}
    (whole,) = trace_stream(root=str(trace_root), tasks=["FOMC"], n_train=100, n_eval=100).tasks
    assert len(whole.eval) == 10 and len(whole.train) == 29  # "text 0" is in both files: not trained on
    assert "Stance of text 0?" in {e.prompt for e in whole.eval} - {e.prompt for e in whole.train}
    assert sqa.eval[0].target.startswith("Answer: A\nBecause")
    again = trace_stream(root=str(trace_root), tasks=["FOMC", "ScienceQA"], n_train=20, n_eval=5)
    assert again.tasks[0].train == fomc.train and again.tasks[0].eval == fomc.eval
    other = trace_stream(root=str(trace_root), tasks=["FOMC"], n_train=20, n_eval=5, seed=1)
    assert other.tasks[0].eval != fomc.eval
    mine = trace_stream(root=str(trace_root), tasks=["ScienceQA"], metrics={"ScienceQA": "bleu"})
    assert mine.tasks[0].metric == "bleu"


def test_trace_errors_are_one_line(trace_root):
    def error(**options):
        with pytest.raises(UserError) as err:
            trace_stream(**options)
        assert "\n" not in str(err.value)
        return str(err.value)

    assert "needs the option `root`" in error()
    msg = error(root=str(trace_root))  # the paper's eight tasks: C-STANCE is missing
    assert "task 'C-STANCE'" in msg and "folders in root: FOMC, ScienceQA" in msg
    write_json(trace_root / "FOMC" / "test.json", [{"prompt": "p", "label": "dovish"}])
    msg = error(root=str(trace_root), tasks=["FOMC"])
    assert "task 'FOMC'" in msg and "test.json" in msg and "no field 'answer'" in msg
    (trace_root / "Py150").mkdir()
    assert "needs train.json and test.json" in error(root=str(trace_root), tasks=["Py150"])
    assert "is not a metric" in error(root=str(trace_root), tasks=["FOMC"], metrics={"FOMC": "rouge"})


def test_registered_and_listed_without_building():
    streams = builtin_streams()
    for name in ("text_cls_benchmark", "trace"):
        assert streams[name].needs
        text = describe_stream(name, streams[name])  # no hub call, no root: instant
        assert "needs:" in text and "not available" not in text
        cfg = stream_config(name, "naive")
        assert cfg.model.base == "en-tiny" and cfg.stream.builtin == name


def streams_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """`lifelong streams ARGS`: exit code, stdout, stderr."""
    from lifelong.cli import main

    monkeypatch.setattr(sys, "argv", ["lifelong", "streams", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_streams_command_lists_without_building_and_sizes_the_named(monkeypatch, capsys):
    def never_built(seed: int = 0) -> Stream:
        """A stream that `lifelong streams` must not build."""
        raise AssertionError("built")

    monkeypatch.setitem(BUILTIN_STREAMS, "unbuilt", StreamInfo(never_built, "nowhere", "none", "loss"))
    code, listed, err = streams_cli([], monkeypatch, capsys)
    assert code == 0, err
    assert (
        "unbuilt: A stream that `lifelong streams` must not build." in listed and "train / eval" not in listed
    )
    code, shown, err = streams_cli(["toy"], monkeypatch, capsys)
    assert code == 0 and "<add>            train / eval 9,744 / 256 examples" in shown, err
    assert "unbuilt" not in shown
    code, _, err = streams_cli(["nope"], monkeypatch, capsys)
    assert code == 2 and "unknown stream 'nope'" in err
