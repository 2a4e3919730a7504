"""Answer-text exact match (the default) against the strict token-for-token form, and the answers
written next to their targets (predictions.jsonl)."""

from __future__ import annotations

import json

import pytest
import torch

import lifelong.evaluate as evaluate_module
from lifelong.data.batching import encode_stream
from lifelong.data.task import Example, Stream, Task
from lifelong.evaluate import evaluate_stream, normalise
from lifelong.models import build_tokenizer

CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Peru", "Lima")]


def capitals(metric: str):
    """A byte-level stream of one task: `capital of X: ` -> the capital."""
    tok = build_tokenizer(None, ["<cap>"])
    examples = [Example(f"capital of {c}: ", a) for c, a in CAPITALS]
    task = Task("cap", "prompt_target", examples, examples, metric, "<cap>")
    return tok, encode_stream(Stream("caps", [task]), tok, 64)


def answering(tok, texts: list[str]):
    """A stand-in for greedy generation that continues prompt i with texts[i] then eos (eos-filled)."""

    def generate(model, prompts, max_new_tokens, pad_id, **kwargs):
        assert len(prompts) == len(texts)
        rows = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
        out = torch.full((len(rows), max_new_tokens), tok.eos_token_id)
        for i, row in enumerate(rows):
            row = row[:max_new_tokens]
            out[i, : len(row)] = torch.tensor(row)
        return out

    return generate


MODEL = torch.nn.Linear(1, 1)  # never called: generation is replaced


@pytest.mark.parametrize(
    ("answers", "answer_score", "strict_score"),
    [
        (["Paris", "Rome", "Madrid", "Lima"], 1.0, 1.0),  # right, then stops
        (["Paris\nThe capital of France is Paris.", "Rome\n", "Madrid\n\nSpain", "Lima\nok"], 1.0, 0.0),
        ([" PARIS. ", "rome!", "Madrid ", "lima"], 1.0, 0.0),  # case, spaces and end punctuation
        (["Lyon", "Rome is big", "Madrid", "Lima, Peru"], 0.25, 0.25),  # words after the answer count
    ],
)
def test_answer_text_scoring_against_strict(monkeypatch, answers, answer_score, strict_score):
    for metric, expected in (("exact_match", answer_score), ("exact_match_strict", strict_score)):
        tok, enc = capitals(metric)
        monkeypatch.setattr(evaluate_module, "generate", answering(tok, answers))
        assert evaluate_stream(MODEL, enc) == [expected], metric


def test_answers_get_room_past_the_longest_target(monkeypatch):
    """The answer budget is a few tokens past the longest target: a right answer followed by more
    words on the next line is not cut before its newline."""
    tok, enc = capitals("exact_match")
    budgets = []
    real = answering(tok, ["Paris\nmore", "Rome", "Madrid", "Lima"])
    monkeypatch.setattr(evaluate_module, "generate", lambda *a, **k: budgets.append(a[2]) or real(*a, **k))
    assert evaluate_stream(MODEL, enc) == [1.0]
    longest = max(len(t) for t in enc.tasks[0].eval.targets())
    assert budgets == [longest + evaluate_module.ANSWER_SLACK]


def test_normalise():
    assert normalise("  The   Answer.\t") == "the answer"
    assert normalise("3.14") == "3.14" and normalise("U.S.") == "u.s"
    assert normalise("Yes!?") == "yes" and normalise("") == ""


def test_predictions_hold_the_scored_answers(monkeypatch):
    tok, enc = capitals("exact_match")
    monkeypatch.setattr(evaluate_module, "generate", answering(tok, ["Paris\nyes", "Milan", "madrid.", "x"]))
    shown: dict = {}
    assert evaluate_stream(MODEL, enc, predictions=shown, n_predictions=3) == [0.5]
    assert shown == {
        "cap": [
            {"prompt": "capital of France:", "target": "Paris", "prediction": "Paris", "correct": True},
            {"prompt": "capital of Italy:", "target": "Rome", "prediction": "Milan", "correct": False},
            {"prompt": "capital of Spain:", "target": "Madrid", "prediction": "madrid.", "correct": True},
        ]
    }
    none: dict = {}
    evaluate_stream(MODEL, enc, predictions=none, n_predictions=0)
    assert none == {}


def test_predictions_of_label_and_loss_tasks():
    """An accuracy task shows the label it chose; a loss task shows nothing."""
    tok = build_tokenizer(None, ["<s>", "<t>"])
    examples = [Example(f"text {i}: ", ["yes", "no"][i % 2]) for i in range(4)]
    labels = Task("s", "prompt_target", examples, examples, "accuracy", "<s>")
    text = Task("t", "text", [Example("some text")], [Example("held out text")], "loss", "<t>")
    enc = encode_stream(Stream("mixed", [labels, text]), tok, 32)
    torch.manual_seed(0)
    from lifelong.models import build_preset

    model = build_preset("tiny", len(tok), 32, {"hidden_size": 32, "num_layers": 1, "num_heads": 2})
    shown: dict = {}
    scores = evaluate_stream(model, enc, predictions=shown, n_predictions=8)
    assert set(shown) == {"s"} and len(shown["s"]) == 4
    assert all(r["prediction"] in ("yes", "no") for r in shown["s"])
    assert sum(r["correct"] for r in shown["s"]) / 4 == scores[0]
    assert [r["target"] for r in shown["s"]] == ["yes", "no", "yes", "no"]


# ------------------------------------------------------------------ in a run


def test_a_run_writes_predictions_and_truncates_them_on_resume(small_config):
    from lifelong.rundir import RunDir
    from lifelong.train import run

    cfg = small_config(train={"predictions": 2, "eval_every": 3})
    path = run(cfg, show_progress=False).path
    records = [json.loads(line) for line in (path / "predictions.jsonl").read_text().splitlines()]
    evals = [json.loads(line) for line in (path / "evals.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in records] == [e["global_step"] for e in evals] == [0, 3, 6, 9, 12]
    assert [r["trained"] for r in records] == [None, "reverse", "reverse", "add", "add"]
    for record in records:
        assert set(record["predictions"]) == {"reverse", "add"}
        for rows in record["predictions"].values():
            assert [set(r) for r in rows] == [{"prompt", "target", "prediction", "correct"}] * 2
    RunDir(path).truncate_logs(6)
    kept = [json.loads(line)["global_step"] for line in (path / "predictions.jsonl").read_text().splitlines()]
    assert kept == [0, 3, 6]

    quiet = run(small_config(name="quiet", train={"predictions": 0}), show_progress=False).path
    assert not (quiet / "predictions.jsonl").exists()
    RunDir(quiet).truncate_logs(3)
    assert not (quiet / "predictions.jsonl").exists()


def test_toy_answer_scoring_equals_strict_on_a_trained_run(small_config):
    """The toy stream's numbers do not move: on a trained toy run (word-level digits, every answer
    ended by eos or wrong), answer-text exact match gives the strict form's score on every task."""
    from lifelong.rundir import RunDir
    from lifelong.train import Trainer

    cfg = small_config(
        stream={"builtin": "toy", "options": {"n_digits": 2, "tasks": ["reverse", "add"], "n_eval": 128}},
        train={"steps_per_task": 150, "batch_size": 32, "lr": 3e-3, "eval_examples": 128},
    )
    trainer = Trainer(cfg, RunDir.create(cfg), show_progress=False)
    trainer.run()
    answer = evaluate_stream(trainer.raw, trainer.data)
    for task in trainer.data.tasks:
        task.metric = "exact_match_strict"
    strict = evaluate_stream(trainer.raw, trainer.data)
    assert answer == strict
    assert any(0.0 < s < 1.0 for s in answer), answer  # trained far enough to tell the two apart
    assert answer == trainer.progress.matrix[-1]


def test_answer_contains_finds_the_target_words_in_a_sentence():
    from lifelong.evaluate import words_within

    assert words_within("Vienna", "The capital of Austria is Vienna.")
    assert words_within("Bahraini Dinar", "It is the bahraini dinar (BHD).")
    assert words_within("123", "79 + 44 = 123")
    assert not words_within("Vienna", "The capital is Viennese.")  # whole words only
    assert not words_within("Gibraltar Pound", "Pound sterling, in Gibraltar")  # together and in order
    assert not words_within("", "anything")
