"""Label scoring (the accuracy metric) with each prompt read once and its KV cache shared by the
labels gives the scores of a full forward per prompt and label."""

from __future__ import annotations

import pytest
import torch

from lifelong.data.batching import encode_stream
from lifelong.data.task import Example, Stream, Task
from lifelong.evaluate import choice_logprobs, evaluate_stream, sequence_logprobs
from lifelong.methods.prefix_tuning import PrefixTuningConfig
from lifelong.methods.prompt_tuning import PromptTuningConfig
from lifelong.models import build_preset, build_tokenizer
from tests.test_methods_architecture import attach, nudge, tiny_model

LABELS = ["positive", "negative", "neutral", "no", "mixed feelings"]


def per_row(model, prompts, choices, pad_id):
    """The reference: one full forward over every prompt + label row."""
    rows = [p + c for p in prompts for c in choices]
    starts = [len(p) for p in prompts for _ in choices]
    logprob, _ = sequence_logprobs(model, rows, starts, pad_id, 7)
    return logprob.view(len(prompts), len(choices))


@pytest.fixture(scope="module")
def labelled():
    tok = build_tokenizer(None, ["<sent>"])
    eval_ = [Example(f"text {'x' * (i % 5)} number {i} says ", LABELS[(i * 3) % 5]) for i in range(11)]
    task = Task("sent", "prompt_target", eval_, eval_, "accuracy", "<sent>")
    return tok, encode_stream(Stream("s", [task]), tok, 64)


@pytest.mark.parametrize("batch_size", [1, 4, 512])
def test_shared_prompt_cache_gives_the_per_row_scores(labelled, batch_size):
    tok, enc = labelled
    task = enc.tasks[0]
    prompts = task.eval.prompts()
    for seed in range(3):
        torch.manual_seed(seed)
        model = build_preset(
            "tiny", len(tok), 64, {"hidden_size": 32, "num_layers": 2, "num_heads": 2}
        ).eval()
        nudge(model.parameters(), scale=0.05, seed=seed)
        with torch.no_grad():
            fast = choice_logprobs(model, prompts, task.choices, enc.pad_id, batch_size)
            slow = per_row(model, prompts, task.choices, enc.pad_id)
        assert fast.shape == (len(prompts), len(LABELS))
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-4)
        assert fast.argmax(-1).tolist() == slow.argmax(-1).tolist()
        targets = task.eval.targets()
        expected = sum(task.choices[int(b)] == t for b, t in zip(slow.argmax(-1), targets, strict=True))
        assert evaluate_stream(model, enc, batch_size=batch_size) == [expected / len(targets)]


@pytest.mark.parametrize("cfg", [PromptTuningConfig, PrefixTuningConfig], ids=["prompt", "prefix"])
def test_shared_prompt_cache_under_prompt_methods(cfg):
    """Prompt and prefix tuning add virtual tokens through forward hooks: the cached scoring reads
    them as the full forward does."""
    model, data = tiny_model()
    method, model = attach(cfg(progressive=True, num_virtual_tokens=3), model, data)
    nudge(method.selection.store.parameters(), scale=0.3)
    method.before_task(1, model)
    prompts = [p[: len(p) - k % 3] for k, p in enumerate(data.tasks[0].eval.prompts(6))]
    choices = [t for t in dict.fromkeys(tuple(t) for t in data.tasks[0].train.targets(20))][:4]
    choices = [list(c) for c in choices]
    with torch.no_grad():
        fast = choice_logprobs(model, prompts, choices, data.pad_id, 5)
        slow = per_row(model, prompts, choices, data.pad_id)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-4)
