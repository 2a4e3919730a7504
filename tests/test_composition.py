"""Methods compose safely: every loss term is kept under its own name, the hooks run in one declared
order (architecture methods first), and a list that cannot work is refused when the config is parsed."""

from __future__ import annotations

import itertools
import json

import pytest

import lifelong
from lifelong.config import parse_config
from lifelong.errors import UserError
from lifelong.methods import method_entry, method_names
from tests.conftest import small_config_dict

# Options that keep each method's run small (the defaults are sized for real streams).
SMALL = {
    "ewc": {"fisher_rows": 4},
    "lamol": {"samples_per_task": 4},
    "replay": {"buffer_size": 8},
    "self_replay": {"refresh_every": 2},
    "retrieval": {"embedder": "words"},  # no model to load; the toy stream brings no documents
}
TRAIN = {"steps_per_task": 2, "batch_size": 4, "eval_examples": 1}


def run_log(tmp_path, methods: list, name: str = "small") -> list[dict]:
    data = small_config_dict(tmp_path, name=name, methods=methods, train=TRAIN)
    result = lifelong.run(parse_config(data), show_progress=False)
    return [json.loads(line) for line in (result.path / "train_log.jsonl").read_text().splitlines()]


def losses(record: dict) -> dict[str, float]:
    return {k: v for k, v in record.items() if k == "loss" or k.startswith("loss_")}


def test_the_same_method_twice_keeps_both_terms(tmp_path):
    """[l2 (coef 1), l2 (coef 1000)]: two penalties, numbered; the total is their sum (one was lost)."""
    log = run_log(tmp_path, [{"name": "l2", "coef": 1.0}, {"name": "l2", "coef": 1000.0}])
    second_task = [r for r in log if r["task"] == 1][-1]  # its last step: the weights have moved
    one, thousand = second_task["loss_l2_1.penalty"], second_task["loss_l2_2.penalty"]
    assert one > 0 and thousand == pytest.approx(1000 * one, rel=1e-4)
    total = second_task["loss_task"] + one + thousand
    assert second_task["loss"] == pytest.approx(total, rel=1e-6)


def test_two_replay_methods_keep_both_replay_losses(tmp_path):
    """[replay, self_replay] both replay with the next-token loss: both terms are logged and summed."""
    log = run_log(tmp_path, ["replay", {"name": "self_replay", **SMALL["self_replay"]}])
    record = next(r for r in log if r["task"] == 1)
    assert record["loss_replay.ntp"] > 0 and record["loss_self_replay.ntp"] > 0
    total = record["loss_task"] + record["loss_replay.ntp"] + record["loss_self_replay.ntp"]
    assert record["loss"] == pytest.approx(total, rel=1e-6)


def test_two_methods_that_replace_the_training_rows_are_refused():
    with pytest.raises(UserError, match="methods joint and joint both replace the training rows"):
        parse_config({"methods": ["joint", "joint"]})


def spec(name: str) -> dict:
    return {"name": name, **SMALL.get(name, {})}


def accepted(pair: tuple[str, str]) -> bool:
    try:
        parse_config({"methods": [spec(n) for n in pair]})
    except UserError:
        return False
    return True


PAIRS = [p for p in itertools.combinations([n for n in method_names() if n != "naive"], 2)]


@pytest.mark.parametrize("pair", PAIRS, ids=["+".join(p) for p in PAIRS])
def test_both_list_orders_give_the_same_loss_terms(pair, tmp_path):
    """For every pair of methods validation accepts, [a, b] and [b, a] train the same: every loss
    term at both steps of the second task is the same (a refused pair is refused in both orders)."""
    forward, backward = [spec(n) for n in pair], [spec(n) for n in reversed(pair)]
    if not accepted(pair):
        assert not accepted(tuple(reversed(pair)))
        return
    one = [losses(r) for r in run_log(tmp_path, forward, "ab") if r["task"] == 1]
    other = [losses(r) for r in run_log(tmp_path, backward, "ba") if r["task"] == 1]
    assert [sorted(r) for r in one] == [sorted(r) for r in other]
    for a, b in zip(one, other, strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)


def test_every_method_that_supplies_rows_declares_it():
    """`supplies_examples` is what validation reads: it must match whether the class writes the hook."""
    from lifelong.methods.base import Method

    for name in method_names():
        cls = method_entry(name).method_cls
        writes_hook = cls.train_examples is not Method.train_examples
        assert cls.compatibility.supplies_examples == writes_hook, name


@pytest.mark.parametrize(
    "method",
    [
        {"name": "prompt_tuning", "init": "random"},
        {"name": "prefix_tuning"},
        {"name": "lora", "alpha": 64.0},
        {"name": "expand"},
        {"name": "mole"},
    ],
    ids=lambda m: m["name"],
)
def test_the_fwd_baseline_is_the_initial_model_whatever_the_method(method, tmp_path):
    """b of forward transfer is scored before any method adds weights (random prompts or prefixes
    used to be part of it), so FWD compares across methods."""

    def text_task(name: str, words: str) -> dict:  # scored by held-out loss: any change to the model shows
        rows = [{"text": f"{words} {i}"} for i in range(12)]
        return {"name": name, "kind": "text", "train": {"examples": rows}, "eval": {"examples": rows[:4]}}

    stream = {"name": "text", "tasks": [text_task("one", "a b c"), text_task("two", "c b a")]}
    model = {"preset": "tiny", "max_length": 16, "overrides": {"hidden_size": 32, "num_layers": 2}}
    data = small_config_dict(tmp_path, stream=stream, model=model, train={**TRAIN, "steps_per_task": 1})
    naive = lifelong.run(parse_config({**data, "name": "naive"}), show_progress=False).progress.baseline
    other = lifelong.run(parse_config({**data, "name": "other", "methods": [method]}), show_progress=False)
    assert other.progress.baseline == naive and all(score < 0 for score in naive)
