"""Generated configs (wrong types, missing and extra keys, extreme values, random YAML, nested junk)
thrown at config parsing: the only exception ever raised is a UserError of one line.

No model or stream is built: this is the validation a config passes before anything is loaded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifelong.config import load_config, parse_config, parse_yaml
from lifelong.errors import UserError
from lifelong.methods import registered
from tests.conftest import TINY_MODEL

# no example database: every run draws fresh examples (a failure prints its example)
FUZZ = settings(
    deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

VALID: dict[str, Any] = {
    "name": "fuzz",
    "seed": 0,
    "output_dir": "runs",
    "stream": {"builtin": "toy", "options": {"n_digits": 1, "tasks": ["add", "reverse"]}},
    "model": TINY_MODEL,
    "train": {"steps_per_task": 4, "batch_size": 8, "lr": 1e-3, "betas": [0.9, 0.999]},
    "methods": ["naive"],
}
FIELDS = [
    "name", "seed", "output_dir", "progress", "tracking", "methods", "stream", "model", "train",
    "stream.builtin", "stream.options", "stream.name", "stream.tasks",
    "model.preset", "model.path", "model.base", "model.dtype", "model.max_length", "model.overrides",
    "train.steps_per_task", "train.batch_size", "train.lr", "train.betas", "train.schedule",
    "train.grad_clip", "train.threads", "train.eval_every", "train.mixed_precision", "train.loss_on",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "naive", "toy", "tiny", "float16", "cosine", "~", ".", "/", "a/b", "1e-3", "-1"]),
)
junk = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(FIELDS)), children, max_size=4),
        st.dictionaries(st.integers(), children, max_size=2),  # keys YAML can give that are not text
    ),
    max_leaves=12,
)
method_names = st.sampled_from(sorted(registered()))
method_items = st.one_of(
    method_names,
    st.builds(lambda name, options: {"name": name, **options}, method_names, st.dictionaries(
        st.sampled_from(["coef", "buffer_size", "rank", "loss", "replay_fraction", "strength", "name", "x"]),
        scalars,
        max_size=3,
    )),
    junk,
)  # fmt: skip
task_specs = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=6), junk), "train": st.one_of(junk, st.just({"examples": []}))},
    optional={"kind": junk, "metric": junk, "eval": junk, "eval_fraction": scalars, "token": junk},
)
mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(FIELDS), junk),
    st.tuples(st.just("set"), st.just("methods"), st.lists(method_items, max_size=4)),
    st.tuples(st.just("set"), st.just("stream.tasks"), st.lists(task_specs, max_size=3)),
    st.tuples(st.just("delete"), st.sampled_from(FIELDS), st.none()),
    st.tuples(st.just("set"), st.text(min_size=1, max_size=10), junk),  # an extra key
)


def mutated(mutations: list[tuple[str, str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(yaml.safe_dump(VALID))  # a deep copy
    for action, dotted, value in mutations:
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if action == "delete":
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return data


def assert_one_line_or_valid(parse) -> None:
    try:
        parse()
    except UserError as err:
        message = str(err)
        assert message.strip(), "an empty error message"
        assert "\n" not in message, message


@settings(FUZZ, max_examples=600)
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutated_configs(mutations):
    data = mutated(mutations)
    assert_one_line_or_valid(lambda: parse_config(data, "fuzz.yaml"))


@settings(FUZZ, max_examples=150)
@given(junk)
def test_junk_at_the_top_level(data):
    assert_one_line_or_valid(lambda: parse_config(data, "fuzz.yaml"))


AWKWARD_YAML = [
    "a: 2021-13-01\n",  # a date that is no date: ValueError inside the YAML loader
    "[" * 2000,  # nesting deeper than the parser's recursion
    "{a: " * 300,
    "- &x [*x]\n",
    "!!python/object:os.system {}\n",
    "a: !!binary xx\n",
    "? [a]\n: b\n",  # a list as a mapping key
    "a: 1\na: 2\n",
    "\t- x",
    "%YAML 9.9\n---\n",
    "methods: [5]\n",
    "train: {betas: 3}\n",
]
yaml_text = st.one_of(
    st.text(max_size=80),
    st.builds(lambda data, cut: yaml.safe_dump(data)[:cut], junk, st.integers(0, 200)),  # cut short
    st.builds(lambda m: yaml.safe_dump(mutated(m), default_flow_style=True), st.lists(mutation, max_size=3)),
    st.sampled_from(AWKWARD_YAML),
)


@settings(FUZZ, max_examples=250)
@given(yaml_text)
def test_random_yaml_text(text):
    assert_one_line_or_valid(lambda: parse_config(parse_yaml(text, "fuzz.yaml"), "fuzz.yaml"))


@settings(FUZZ, max_examples=150)
@given(st.one_of(st.binary(max_size=64), yaml_text.map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_config_files(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(content)
        assert_one_line_or_valid(lambda: load_config(path, {"train.lr": 1e-3}))


def test_the_valid_base_parses():
    assert parse_config(mutated([]), "fuzz.yaml").name == "fuzz"
