"""Hub benchmarks: the standard continual text-classification benchmark and TRACE. Their data is not
installed by scripts/fetch_data.sh: it comes from the Hugging Face hub (network access; gigabytes for
Amazon) or from local copies named in the options, so `lifelong streams` lists them without building
them (StreamInfo.needs). docs/scenarios.md says how to point them at local files.

`text_cls_benchmark` (de Masson d'Autume et al. 2019, LAMOL, LFPT5, O-LoRA): the text classification
sets of Zhang et al. 2015, one task each, the class name as the target (O-LoRA's label words).

    task     default source (hub id)                  text fields -> label field    targets
    ag_news  fancyzhx/ag_news                         text -> label 0-3             World, Sports, Business,
                                                                                  Science or Technology
    yelp     Yelp/yelp_review_full                    text -> label 0-4             very negative, negative,
                                                                                  neutral, positive,
                                                                                  very positive
    amazon   yassiracharki/Amazon_Reviews_for_Sentiment_Analysis_fine_grained_5_classes
             (Zhang's amazon_review_full, as CSV)     review_title, review_text     as yelp
                                                      -> class_index 1-5
    dbpedia  fancyzhx/dbpedia_14                      title, content -> label 0-13  Company ... Written Work
    yahoo    community-datasets/yahoo_answers_topics  question_title,               Society & Culture ...
                                                      question_content,             Politics & Government
                                                      best_answer -> topic 0-9

`order` 1-3 are O-LoRA's (its scripts/order_{1,2,3}.sh): 1 dbpedia -> amazon -> yahoo -> ag_news,
2 dbpedia -> amazon -> ag_news -> yahoo, 3 yahoo -> amazon -> ag_news -> dbpedia. MbPA++ and LAMOL's
five-task orders go through `tasks`, e.g. [yelp, ag_news, dbpedia, amazon, yahoo]. A task's source
(`sources: {task: ...}`) is a hub id, a `save_to_disk` directory, a directory of `train` and `test`
files (.jsonl/.json/.csv: Zhang et al.'s header-less CSVs, O-LoRA's `{"sentence", "label"}` JSON,
`{"prompt", "answer"}` rows, the hub's columns) or one file; without a test split the task's rows
are split here. A label is a class index (from 0; from 1 in `class_index` and in Zhang's CSVs) or a
class name (ours or the hub's: "Sci/Tech", "1 star", "EducationalInstitution").

`trace` (Wang et al. 2023): eight datasets, one folder each under `root`, holding `train.json` and
`test.json` (else `eval.json`), JSON lists of `{"prompt", "answer"}`; any such folder is a task.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from lifelong.data.loaders import load_examples, open_hf, read_file
from lifelong.data.registry import StreamInfo, register_stream
from lifelong.data.scenarios.common import TASK_TRAIN, TEXT_MODEL, clip_words, labelled_task, shuffled
from lifelong.data.spec import PLAIN_ANSWER_CUE, DataSource
from lifelong.data.task import Example, MetricName, PromptFormat, Stream, Task, Template
from lifelong.errors import UserError


@dataclass(frozen=True)
class ClassificationSet:
    hub: str  # the default source
    classes: tuple[str, ...]  # the targets, in the order of the dataset's class indices
    hub_names: tuple[str, ...]  # the hub's names of the same classes, also accepted as labels
    text_fields: tuple[str, ...]  # a row's text: those it has, joined in this order
    csv_columns: tuple[str, ...]  # the columns of Zhang et al.'s header-less train.csv / test.csv
    about: str
    question: str  # the instruction's question; the options (the classes) follow it

    def template(self) -> Template:
        """O-LoRA's instruction format: the question and the label options, the text, an answer cue."""
        options = ", ".join(self.classes)
        return Template(f"{self.question} Options: {options}.", "Text: ", PLAIN_ANSWER_CUE, " ")


STARS = ("very negative", "negative", "neutral", "positive", "very positive")
STAR_NAMES = ("1 star", "2 star", "3 stars", "4 stars", "5 stars")  # the Yelp ClassLabel names on the hub
DBPEDIA = (
    "Company", "Educational Institution", "Artist", "Athlete", "Office Holder", "Mean of Transportation",
    "Building", "Natural Place", "Village", "Animal", "Plant", "Album", "Film", "Written Work",
)  # fmt: skip
YAHOO = (
    "Society & Culture", "Science & Mathematics", "Health", "Education & Reference",
    "Computers & Internet", "Sports", "Business & Finance", "Entertainment & Music",
    "Family & Relationships", "Politics & Government",
)  # fmt: skip
CLASSIFICATION_SETS = {
    "ag_news": ClassificationSet(
        "fancyzhx/ag_news",
        ("World", "Sports", "Business", "Science or Technology"),
        ("World", "Sports", "Business", "Sci/Tech"),
        ("title", "description", "text"),
        ("class_index", "title", "description"),
        "AG News: news topic (4 classes)",
        "Topic of the news?",
    ),
    "yelp": ClassificationSet(
        "Yelp/yelp_review_full",
        STARS,
        STAR_NAMES,
        ("text",),
        ("class_index", "text"),
        "Yelp reviews: stars (5 classes)",
        "Sentiment of the review?",
    ),
    "amazon": ClassificationSet(
        "yassiracharki/Amazon_Reviews_for_Sentiment_Analysis_fine_grained_5_classes",
        STARS,
        STAR_NAMES,
        ("review_title", "review_text", "title", "content", "text"),
        ("class_index", "review_title", "review_text"),
        "Amazon reviews: stars (5 classes)",
        "Sentiment of the review?",
    ),
    "dbpedia": ClassificationSet(
        "fancyzhx/dbpedia_14",
        DBPEDIA,
        tuple(c.replace(" ", "") for c in DBPEDIA),  # EducationalInstitution; compared ignoring case
        ("title", "content"),
        ("class_index", "title", "content"),
        "DBpedia: entity type (14 classes)",
        "Type of the entity?",
    ),
    "yahoo": ClassificationSet(
        "community-datasets/yahoo_answers_topics",
        YAHOO,
        YAHOO,
        ("question_title", "question_content", "best_answer"),
        ("class_index", "question_title", "question_content", "best_answer"),
        "Yahoo Answers: topic (10 classes)",
        "Topic of the question?",
    ),
}
ORDERS = {
    1: ("dbpedia", "amazon", "yahoo", "ag_news"),
    2: ("dbpedia", "amazon", "ag_news", "yahoo"),
    3: ("yahoo", "amazon", "ag_news", "dbpedia"),
}
LABEL_FIELDS = ("label", "topic", "class_index", "answer")  # a source's label: the first it has
ONE_BASED = "class_index"  # the label field whose class indices start at 1 (as in Zhang's CSVs)
GENERIC_TEXT = ("sentence", "prompt")  # O-LoRA's CL_Benchmark JSON; {prompt, answer} rows


@dataclass
class Split:
    """One split of a task's source: every row's class read up front, whole rows only when sampled."""

    labels: list[str]
    text_fields: tuple[str, ...]
    fetch: Callable[[list[int]], list[dict[str, Any]]]


def text_cls_benchmark_stream(
    order: int | None = None,
    tasks: list[str] | tuple[str, ...] | None = None,
    n_train: int = 1000,
    n_eval: int = 100,
    sources: dict[str, str] | None = None,
    max_words: int | None = None,
    metric: str = "exact_match",
    seed: int = 0,
) -> Stream:
    """Continual text classification (AG News, Yelp, Amazon, DBpedia, Yahoo), O-LoRA's order 1 by default."""
    if order is not None and tasks is not None:
        raise UserError("text_cls_benchmark: give `order` or `tasks`, not both")
    if tasks is None and (1 if order is None else order) not in ORDERS:
        raise UserError(f"text_cls_benchmark: no order {order!r} (orders: 1, 2, 3; or give `tasks`)")
    names = list(tasks) if tasks is not None else list(ORDERS[1 if order is None else order])
    sources = dict(sources or {})
    for name in [*names, *sources]:
        if name not in CLASSIFICATION_SETS:
            raise UserError(
                f"text_cls_benchmark: unknown task {name!r} (known: {', '.join(CLASSIFICATION_SETS)})"
            )
    if len(set(names)) < len(names):
        raise UserError(f"text_cls_benchmark: a task is listed twice in {names}")
    if metric not in ("exact_match", "accuracy"):
        raise UserError(f"text_cls_benchmark: metric {metric!r} is not 'exact_match' or 'accuracy'")
    if n_train < 1 or n_eval < 1:
        raise UserError("text_cls_benchmark: n_train and n_eval (examples per class) must be at least 1")
    made = []
    for name in names:
        source = str(sources.get(name, CLASSIFICATION_SETS[name].hub))
        made.append(classification_task(name, source, n_train, n_eval, max_words, metric, seed))
    return Stream(name="text_cls_benchmark", tasks=made)


def classification_task(
    name: str, source: str, n_train: int, n_eval: int, max_words: int | None, metric: str, seed: int
) -> Task:
    """`n_train` and `n_eval` examples of every class (as many as the rarest class allows), the eval
    examples from the source's test split when it has one, else held out here; never in both."""
    spec, what = CLASSIFICATION_SETS[name], f"text_cls_benchmark task {name!r} ({source})"
    train_split, test_split = open_splits(spec, source, what)
    if test_split is None:
        rows = sample(train_split, n_train + n_eval, max_words, seed, name)
        if not rows:
            raise UserError(f"{what}: no examples")
        task = labelled_task(name, rows, n_train, n_eval, seed, spec.about, metric)
    else:
        eval_ = balanced(sample(test_split, n_eval, max_words, seed, name, "test"), n_eval, seed, name)
        held = {ex.prompt for ex in eval_}
        rows = [r for r in sample(train_split, n_train + n_eval, max_words, seed, name) if r[0] not in held]
        train = balanced(rows, n_train, seed, name)
        task = Task(name, "prompt_target", train, eval_, metric, f"<{name}>", spec.about)
    if not task.train or not task.eval:
        raise UserError(f"{what}: too few examples to train on and to hold out")
    task.format = PromptFormat(template=spec.template())  # long texts: clipped by tokens to the context
    return task


def open_splits(spec: ClassificationSet, source: str, what: str) -> tuple[Split, Split | None]:
    """(train, test) of a source; test is None when the source has a single split."""
    path = Path(source).expanduser()
    if not path.exists() and (path.is_absolute() or source.startswith((".", "~"))):
        raise UserError(f"{what}: {source!r} not found")
    if (path / "dataset_dict.json").is_file():  # save_to_disk of a DatasetDict
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        test = hf_split(spec, str(path), "test", what) if "test" in splits else None
        return hf_split(spec, str(path), "train", what), test
    if (path / "dataset_info.json").is_file():  # save_to_disk of one Dataset
        return hf_split(spec, str(path), "train", what), None
    if path.is_dir():
        train, test = (split_file(path, split) for split in ("train", "test"))
        if train is None:
            raise UserError(f"{what}: no train.jsonl, train.json or train.csv in {source!r}")
        return file_split(spec, train, what), (file_split(spec, test, what) if test else None)
    if path.is_file() or path.suffix.lower() in (".jsonl", ".json", ".csv"):
        return file_split(spec, path, what), None
    return hf_split(spec, source, "train", what), hf_split(spec, source, "test", what)  # a hub id


def split_file(folder: Path, split: str) -> Path | None:
    found = [folder / f"{split}{ext}" for ext in (".jsonl", ".json", ".csv")]
    return next((p for p in found if p.is_file()), None)


def hf_split(spec: ClassificationSet, source: str, split: str, what: str) -> Split:
    data = open_hf(DataSource(hf=source, split=split), f"{what} {split}")
    label_field, text_fields = source_fields(spec, list(data.column_names), f"{what} {split}")
    names = getattr(data.features[label_field], "names", None)  # a ClassLabel's names, in index order
    lookup = class_lookup(spec)
    if not names or not all(n.lower() in lookup for n in names):
        names = None  # unknown names: go by the index
    values = list(data[label_field])
    by_value = {
        v: lookup[names[v].lower()] if names and 0 <= v < len(names) else class_of(v, spec, label_field, what)
        for v in set(values)
    }
    return Split([by_value[v] for v in values], text_fields, lambda idx: [dict(r) for r in data.select(idx)])


def file_split(spec: ClassificationSet, path: Path, what: str) -> Split:
    what = f"{what} {path.name}"
    columns = list(spec.csv_columns) if path.suffix.lower() == ".csv" and headerless(path) else None
    rows = read_file(path, what, columns)
    if not rows:
        raise UserError(f"{what}: no rows")
    label_field, text_fields = source_fields(spec, list(rows[0]), what)
    labels = []
    for i, row in enumerate(rows):
        if label_field not in row:
            raise UserError(f"{what} row {i}: no field {label_field!r} (fields: {', '.join(map(str, row))})")
        labels.append(class_of(row[label_field], spec, label_field, f"{what} row {i}"))
    return Split(labels, text_fields, lambda idx: [rows[i] for i in idx])


def headerless(path: Path) -> bool:
    """Whether a CSV starts with data, as Zhang et al.'s do (its first cell a class index)."""
    if not path.is_file():
        return False
    with path.open(encoding="utf-8-sig", newline="") as f:
        first = next(csv.reader(f), [])
    return bool(first) and first[0].strip().isdigit()


def source_fields(spec: ClassificationSet, fields: list[str], what: str) -> tuple[str, tuple[str, ...]]:
    label = next((f for f in LABEL_FIELDS if f in fields), None)
    texts = tuple(f for f in (*spec.text_fields, *GENERIC_TEXT) if f in fields)
    if label is None or not texts:
        wanted = ", ".join(LABEL_FIELDS if label is None else (*spec.text_fields, *GENERIC_TEXT))
        kind = "label" if label is None else "text"
        raise UserError(f"{what}: no {kind} field (one of {wanted}; fields: {', '.join(map(str, fields))})")
    return label, texts


def class_lookup(spec: ClassificationSet) -> dict[str, str]:
    """Lower-cased class names, ours and the hub's -> our class name."""
    return {
        n.lower(): c
        for names in (spec.classes, spec.hub_names)
        for n, c in zip(names, spec.classes, strict=True)
    }


def class_of(value: Any, spec: ClassificationSet, label_field: str, what: str) -> str:
    """A label as a class name: a class index (from 1 in `class_index`, else from 0) or a name."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        index = value - (label_field == ONE_BASED)
        if 0 <= index < len(spec.classes):
            return spec.classes[index]
    elif isinstance(value, str) and value.strip().lower() in class_lookup(spec):
        return class_lookup(spec)[value.strip().lower()]
    first = 1 if label_field == ONE_BASED else 0
    raise UserError(
        f"{what}: label {value!r} is not a class (indices {first}-{first + len(spec.classes) - 1} "
        f"in {label_field!r}, or a name: {', '.join(spec.classes)})"
    )


def sample(
    split: Split, per_class: int, max_words: int | None, seed: int, *parts: object
) -> list[tuple[str, str]]:
    """(text, class) of a seeded choice of up to `per_class` rows of every class."""
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(split.labels):
        by_class.setdefault(label, []).append(i)
    picked = sorted(
        i for c in sorted(by_class) for i in shuffled(by_class[c], seed, "rows", *parts, c)[:per_class]
    )
    out = []
    for i, row in zip(picked, split.fetch(picked), strict=True):
        text = " ".join(str(row[f]) for f in split.text_fields if row.get(f) not in (None, ""))
        text = clip_words(text, max_words) if max_words else " ".join(text.split())
        if text:
            out.append((text, split.labels[i]))
    return out


def balanced(rows: list[tuple[str, str]], per_class: int, seed: int, *parts: object) -> list[Example]:
    """The same number of distinct texts of every class (up to `per_class`), in a seeded order."""
    by_class: dict[str, set[str]] = {}
    for text, label in rows:
        by_class.setdefault(label, set()).add(text)
    if not by_class:
        return []
    per = min(per_class, *(len(texts) for texts in by_class.values()))
    out = [
        Example(t, c) for c in sorted(by_class) for t in shuffled(sorted(by_class[c]), seed, *parts, c)[:per]
    ]
    return shuffled(out, seed, "order", *parts)


# ---------------------------------------------------------------------------------------------- TRACE

# dataset -> (metric, what it is). TRACE scores MeetingBank by ROUGE-L, Py150 by edit similarity,
# 20Minuten by SARI and ScienceQA by the accuracy of the answer letter parsed out of "Answer: X
# Because ..."; we have none of these, so those four are scored by chrF of the whole answer.
TRACE_TASKS: dict[str, tuple[MetricName, str]] = {
    "C-STANCE": ("exact_match", "Chinese stance detection: support / oppose / neutral"),
    "FOMC": ("exact_match", "FOMC monetary policy stance: dovish / hawkish / neutral"),
    "MeetingBank": ("chrf", "meeting transcript summarization (TRACE: ROUGE-L)"),
    "Py150": ("chrf", "Python next-line completion (TRACE: edit similarity)"),
    "ScienceQA": ("chrf", "science multiple choice with explanation (TRACE: answer accuracy)"),
    "NumGLUE-cm": ("exact_match", "arithmetic word problems (commonsense)"),
    "NumGLUE-ds": ("exact_match", "arithmetic word problems (domain-specific)"),
    "20Minuten": ("chrf", "German news simplification (TRACE: SARI)"),
}


def trace_stream(
    root: str | None = None,
    tasks: list[str] | tuple[str, ...] = tuple(TRACE_TASKS),
    n_train: int = 500,
    n_eval: int = 100,
    metrics: dict[str, str] | None = None,
    seed: int = 0,
) -> Stream:
    """TRACE (Wang et al. 2023): eight LLM tasks, C-STANCE to 20Minuten, from the folders under `root`.

    The paper's order (its scripts/train_seq_naive.sh): C-STANCE -> FOMC -> MeetingBank -> Py150 ->
    ScienceQA -> NumGLUE-cm -> NumGLUE-ds -> 20Minuten. `tasks` picks and orders folders (any folder of
    {prompt, answer} JSON is a task, scored by exact match unless `metrics: {folder: metric}` says)."""
    if root is None:
        raise UserError("trace needs the option `root`: the directory holding the TRACE dataset folders")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise UserError(f"trace: root {str(base)!r} is not a directory")
    metrics = dict(metrics or {})
    for name, metric in metrics.items():
        if metric not in get_args(MetricName) or name not in tasks:
            raise UserError(f"trace: metrics: {name!r}: {metric!r} is not a metric of a task of the stream")
    if n_train < 1 or n_eval < 1:
        raise UserError("trace: n_train and n_eval must be at least 1")
    made = []
    for name in tasks:
        folder = base / name
        if not folder.is_dir():
            found = ", ".join(sorted(p.name for p in base.iterdir() if p.is_dir())) or "none"
            raise UserError(f"trace task {name!r}: no folder {str(folder)!r} (folders in root: {found})")
        metric, about = TRACE_TASKS.get(name, ("exact_match", f"{name} (prompt -> answer)"))
        made.append(trace_task(name, folder, n_train, n_eval, metrics.get(name, metric), about, seed))
    return Stream(name="trace", tasks=made)


def trace_task(
    name: str, folder: Path, n_train: int, n_eval: int, metric: MetricName, about: str, seed: int
) -> Task:
    """A seeded `n_eval` of the test file and `n_train` of train.json whose prompts are not among them."""
    train_file = folder / "train.json"
    test_file = next((folder / f for f in ("test.json", "eval.json") if (folder / f).is_file()), None)
    if not train_file.is_file() or test_file is None:
        raise UserError(f"trace task {name!r}: {str(folder)!r} needs train.json and test.json (or eval.json)")
    eval_ = shuffled(trace_examples(name, test_file), seed, "trace-eval", name)[:n_eval]
    held = {ex.prompt for ex in eval_}
    train = [ex for ex in trace_examples(name, train_file) if ex.prompt not in held]
    train = shuffled(train, seed, "trace-train", name)[:n_train]
    if not train or not eval_:
        raise UserError(f"trace task {name!r}: no examples to train on or to evaluate in {str(folder)!r}")
    task = Task(name, "prompt_target", train, eval_, metric, f"<{name}>", about)
    task.format = PromptFormat(template=trace_template([ex.prompt for ex in [*train, *eval_]]))
    return task


def trace_template(prompts: list[str]) -> Template:
    """TRACE's prompts carry their instruction (the task, the options) and mostly their answer cue
    ("Answer:", "态度："): add the cue where a task's prompts lack one, a space where they end in one."""
    cue = "" if all(p.rstrip().endswith((":", "：")) for p in prompts) else PLAIN_ANSWER_CUE
    spaced = all(p.endswith((" ", "\n", "：")) for p in prompts) and not cue
    return Template(answer_cue=cue, target_prefix="" if spaced else " ")


def trace_examples(name: str, path: Path) -> list[Example]:
    source = DataSource(file=str(path), prompt_field="prompt", target_field="answer")
    return load_examples(source, "prompt_target", f"trace task {name!r} {str(path)!r}")


HUB_IDS = ", ".join(s.hub for s in CLASSIFICATION_SETS.values())
register_stream(
    "text_cls_benchmark",
    StreamInfo(
        text_cls_benchmark_stream,
        source=f"Hugging Face hub ({HUB_IDS}) or local copies (option `sources`)",
        task_format="[task] instruction (question, options) / Text: text / Answer: -> class name",
        metric="exact_match of the generated class name (option metric: accuracy)",
        model=TEXT_MODEL,
        train=TASK_TRAIN,
        needs="the Hugging Face hub (network access) or local copies in option `sources` (docs/scenarios.md)",
    ),
)
register_stream(
    "trace",
    StreamInfo(
        trace_stream,
        source="the TRACE benchmark's dataset folders (option `root`)",
        task_format="[task] prompt (its own instruction) [+ Answer: cue] -> answer",
        metric="exact_match (C-STANCE, FOMC, NumGLUE); chrf (MeetingBank, Py150, ScienceQA, 20Minuten)",
        model=TEXT_MODEL,
        train=TASK_TRAIN,
        needs="a local copy of TRACE in option `root` (docs/scenarios.md); long prompts need a model "
        "with a long context (model.path)",
    ),
)
