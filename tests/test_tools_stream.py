"""The `tools` stream: its builder (deterministic, held-out calls never trained), tool rows (the result
a hole in the loss), `tool_success` evaluation (scored right by a stand-in model that writes known
continuations; bounded on a random model) and a short training that learns the call format."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch

from lifelong.config import parse_config, stream_config
from lifelong.data import build_task, builtin_streams
from lifelong.data.batching import EncodedStream, cat_sets, encode_stream, encode_task
from lifelong.data.scenarios.common import TEXT_MODEL
from lifelong.data.scenarios.tools import tools_stream
from lifelong.data.spec import TaskSpec
from lifelong.data.task import Example, Task
from lifelong.errors import UserError
from lifelong.evaluate import evaluate_stream
from lifelong.methods.joint import repeated
from lifelong.methods.replay import ReplayBuffer
from lifelong.models import build_preset, build_tokenizer
from lifelong.seeding import generator
from lifelong.tools import execute
from lifelong.tools.executor import split_target
from lifelong.train import run
from tests.conftest import small_config_dict

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
CONTEXT = 160  # bytes: the longest calculator and dates rows fit


def small_stream(seed: int = 0, tools=("calculator", "dates")):
    return tools_stream(tools=list(tools), n_train=40, n_eval=12, seed=seed)


def encoded(stream) -> tuple[object, EncodedStream]:
    tok = build_tokenizer(None, [t.token for t in stream.tasks])
    return tok, encode_stream(stream, tok, CONTEXT)


def calls(examples: list[Example]) -> list[str]:
    return [
        split_target(ex.target)[0].strip().removeprefix("<call>").removesuffix("</call>") for ex in examples
    ]


# ------------------------------------------------------------------ the stream
def test_stream_is_deterministic_and_held_out_calls_are_never_trained():
    stream = tools_stream(n_train=300, n_eval=50, seed=3)
    assert [t.name for t in stream.tasks] == ["calculator", "dates", "units", "countries"]
    assert tools_stream(n_train=300, n_eval=50, seed=3).tasks == stream.tasks
    other = tools_stream(n_train=300, n_eval=50, seed=4)
    for task, again in zip(stream.tasks, other.tasks, strict=True):
        assert task.kind == "tool" and task.metric == "tool_success" and task.token == f"<{task.name}>"
        assert len(task.train) == 300 and len(task.eval) == 50
        assert not set(calls(task.train)) & set(calls(task.eval))
        assert not {e.prompt for e in task.train} & {e.prompt for e in task.eval}
        assert len(set(calls(task.train))) == len(task.train)
        assert task.eval != again.eval  # another seed, other questions (or another split of them)


def test_every_target_holds_the_executors_result_and_answers_with_it():
    for task in tools_stream(n_train=200, n_eval=20).tasks:
        for ex in task.train + task.eval:
            call, result, answer = split_target(ex.target)
            text = execute(call.strip().removeprefix("<call>").removesuffix("</call>")).text
            assert result == f"\n<result>{text}</result>" and answer == f"\n{text}"


def test_the_questions_are_what_the_calls_compute():
    task = tools_stream(tools=["dates"], n_train=60, n_eval=10).tasks[0]
    for ex, call in zip(task.train, calls(task.train), strict=True):
        if "after" in ex.prompt:
            days, day = ex.prompt.removeprefix("What date is ").removesuffix("?").split(" days after ")
            assert call == f"dates: date_add({day}, {days})"
        elif "before" in ex.prompt:
            days, day = ex.prompt.removeprefix("What date is ").removesuffix("?").split(" days before ")
            assert call == f"dates: date_add({day}, -{days})"
        else:
            start, end = (
                ex.prompt.removeprefix("How many days are there from ").removesuffix("?").split(" to ")
            )
            assert call == f"dates: days_between({start}, {end})"


def test_stream_options_are_checked():
    with pytest.raises(UserError, match="unknown tool 'weather'"):
        tools_stream(tools=["weather"])
    with pytest.raises(UserError, match="too few to hold out"):
        tools_stream(tools=["countries"], n_eval=5000)
    with pytest.raises(UserError, match="must be positive"):
        tools_stream(n_eval=0)


def test_the_stream_is_registered_with_the_english_base_and_a_schedule():
    info = builtin_streams()["tools"]
    assert info.model == TEXT_MODEL
    cfg = stream_config("tools", "naive")
    assert cfg.model.base == "en-tiny" and cfg.train.steps_per_task == info.train["steps_per_task"]


# ------------------------------------------------------------------ rows
def test_the_result_is_a_hole_in_the_loss():
    tok, enc = encoded(small_stream())
    data = enc.tasks[0].train
    for loss_on in ("target", "sequence"):
        batch = data.batch(torch.arange(4), loss_on)
        for b in range(4):
            text = tok.decode(batch.input_ids[b, batch.attention_mask[b].bool()])
            trained = tok.decode(batch.input_ids[b, batch.loss_mask[b]])
            question, rest = text.removeprefix("<calculator>").split("\n", 1)
            call, result, answer = split_target("\n" + rest.removesuffix("</s>"))
            assert trained == (question if loss_on == "sequence" else "") + call + answer + "</s>"
            assert result.strip().startswith("<result>") and result.strip() not in trained


def test_holes_survive_concatenation_joint_and_the_replay_buffer():
    stream = small_stream()
    plain = Task(
        "plain", "prompt_target", [Example("a", "b")] * 3, [Example("c", "d")], "exact_match", "<plain>"
    )
    tok = build_tokenizer(None, ["<calculator>", "<plain>"])
    tool_set = encode_task(stream.tasks[0], tok, CONTEXT).train
    both = cat_sets([tool_set, encode_task(plain, tok, CONTEXT).train], tok.pad_token_id)
    assert torch.equal(both.holes[: len(tool_set)], tool_set.holes)
    assert not both.holes[len(tool_set) :].any()  # rows without a result: an empty hole
    assert torch.equal(repeated(tool_set, 50).holes[40:], tool_set.holes[:10])
    buffer = ReplayBuffer(10, generator(0, "tools"))
    buffer.add(tool_set, 0)
    kept = buffer.as_set(tool_set.prefix_len, tok.pad_token_id)
    for i, row in enumerate(buffer.rows):
        j = next(j for j in range(len(tool_set)) if tool_set.ids[j, : len(row)].equal(row))
        assert kept.holes[i].tolist() == tool_set.holes[j].tolist()
    again = ReplayBuffer(10, generator(0, "other"))
    again.load_state_dict(buffer.state_dict("b."), "b.")
    assert again.holes == buffer.holes


def test_a_declared_tool_task_defaults_to_tool_success_and_needs_tool_targets():
    row = {"prompt": "What is 6 * 7?", "target": "\n<call>calculator: 6 * 7</call>\n<result>42</result>\n42"}
    spec = TaskSpec(name="mine", kind="tool", train={"examples": [row] * 3}, eval={"examples": [row]})
    assert spec.metric == "tool_success"
    tok = build_tokenizer(None, ["<mine>"])
    assert encode_task(build_task(spec, 0), tok, CONTEXT).train.holes is not None
    with pytest.raises(ValueError, match="tool tasks, and only they"):
        TaskSpec(name="x", kind="prompt_target", metric="tool_success", train={"examples": [row]})
    bad = TaskSpec(name="bad", kind="tool", train={"examples": [{"prompt": "q", "target": "42"}] * 2})
    with pytest.raises(UserError, match="task 'bad' train example 0: not a tool target"):
        encode_task(build_task(bad, 0), build_tokenizer(None, ["<bad>"]), CONTEXT)


# ------------------------------------------------------------------ evaluation
class Scripted(torch.nn.Module):
    """A stand-in causal LM that greedily writes `write(tokens so far)`: the logits put everything on
    that one token. It follows the tokens itself (generate() feeds one new token per step)."""

    def __init__(self, vocab: int, write: Callable[[list[int]], int]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # generate() reads the device off a parameter
        self.vocab, self.write, self.seen = vocab, write, []

    def forward(
        self, input_ids, attention_mask=None, position_ids=None, use_cache=False, past_key_values=None
    ):
        if input_ids.shape[1] > 1:  # a new batch of prompts (left-padded)
            self.seen = [
                ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True)
            ]
        else:
            for seen, token in zip(self.seen, input_ids[:, 0].tolist(), strict=True):
                seen.append(token)
        logits = torch.full((len(self.seen), input_ids.shape[1], self.vocab), -1e9)
        for b, seen in enumerate(self.seen):
            logits[b, -1, self.write(seen)] = 0.0
        return SimpleNamespace(logits=logits)


def scripted(tok, enc: EncodedStream, stream, continuation: Callable[[Example], str]) -> Scripted:
    """A model that continues every eval prompt of the stream with `continuation(example)` and eos (and
    writes eos wherever its tokens so far are not a start of one of these rows)."""
    rows = []
    for task, etask in zip(stream.tasks, enc.tasks, strict=True):
        for ex, prompt in zip(task.eval, etask.eval.prompts(), strict=True):
            rows.append(prompt + tok(continuation(ex), add_special_tokens=False)["input_ids"] + [enc.eos_id])

    def write(seen: list[int]) -> int:
        return next((r[len(seen)] for r in rows if len(r) > len(seen) and r[: len(seen)] == seen), enc.eos_id)

    return Scripted(len(tok), write)


def score(model, enc) -> tuple[list[float], dict, dict]:
    details, shown = {}, {}
    scores = evaluate_stream(model, enc, 8, None, details=details, predictions=shown, n_predictions=2)
    return scores, details, shown


def test_the_right_calls_and_answers_score_one():
    stream = small_stream()
    tok, enc = encoded(stream)
    scores, details, shown = score(scripted(tok, enc, stream, lambda ex: ex.target), enc)
    assert scores == [1.0, 1.0]
    assert details == {
        name: {"tool_success": 1.0, "malformed_calls": 0.0} for name in ("calculator", "dates")
    }
    record = shown["calculator"][0]
    assert record["correct"] and record["prediction"].startswith("<call>calculator: ")
    assert "<result>" in record["prediction"] and record["prediction"].endswith(
        record["target"].split("\n")[-1]
    )


@pytest.mark.parametrize(
    ("continuation", "malformed"),
    [
        (lambda ex: split_target(ex.target)[2], 1.0),  # the right answer, but no call: a malformed call
        (lambda ex: "\n<call>calculator: 1 +</call>\n1", 1.0),  # a call out of the tool's syntax
        (lambda ex: "\n<call>calculator: 1 / 0</call>\n1", 0.0),  # well formed, refused: not malformed
        (lambda ex: "".join(split_target(ex.target)[:2]) + "\n-1", 0.0),  # the right call, a wrong answer
    ],
)
def test_wrong_calls_and_answers_score_zero(continuation, malformed):
    stream = small_stream()
    tok, enc = encoded(stream)
    scores, details, _ = score(scripted(tok, enc, stream, continuation), enc)
    assert scores == [0.0, 0.0]
    assert details["calculator"]["malformed_calls"] == malformed


def test_a_random_tiny_model_is_scored_within_bounds():
    stream = small_stream()
    tok, enc = encoded(stream)
    torch.manual_seed(0)
    model = build_preset("tiny", len(tok), CONTEXT, TINY)
    first = score(model, enc)
    assert first == score(model, enc)  # greedy: the same scores and answers again
    scores, details, shown = first
    assert all(0.0 <= s <= 1.0 for s in scores)
    for name in ("calculator", "dates"):
        assert set(details[name]) == {"tool_success", "malformed_calls"}
        assert 0.0 <= details[name]["malformed_calls"] <= 1.0 and len(shown[name]) == 2


# ------------------------------------------------------------------ training
def test_a_short_training_learns_the_call_format(tmp_path):
    """150 steps of a tiny byte-level model on the calculator: its calls go from never well formed
    (the random initial model) to mostly well formed. (Exact answers need more: ~0.8 after 800 steps
    of a width-128 model.)"""
    data = small_config_dict(
        tmp_path,
        stream={"builtin": "tools", "options": {"tools": ["calculator"], "n_train": 1000, "n_eval": 32}},
        model={
            "max_length": 112,
            "overrides": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 256},
        },
        train={
            "steps_per_task": 150,
            "batch_size": 16,
            "lr": 3e-3,
            "warmup_steps": 10,
            "schedule": "cosine",
            "eval_examples": 32,
        },
    )
    result = run(parse_config(data), show_progress=False)
    matrix = json.loads((result.path / "matrix.json").read_text())
    malformed = matrix["also_reported"]["malformed_calls"]
    assert malformed["baseline"] == [1.0] and malformed["rows"][0][0] <= 0.25
    assert 0.0 <= matrix["rows"][0][0] <= 1.0
    assert matrix["also_reported"]["tool_success"]["rows"] == matrix["rows"]
