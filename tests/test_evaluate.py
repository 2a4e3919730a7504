"""Evaluation: exact match, held-out loss and label accuracy, checked against hand computations."""

import pytest
import torch
import torch.nn.functional as F

from lifelong.data.batching import encode_stream
from lifelong.data.task import Example, Stream, Task
from lifelong.data.toy import toy_stream
from lifelong.evaluate import evaluate_stream, sequence_logprobs
from lifelong.models import build_preset, build_tokenizer

SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}


def tiny(vocab_size, max_length, seed=0, std=None):
    torch.manual_seed(seed)
    m = build_preset("tiny", vocab_size, max_length, overrides=SMALL)
    if std is not None:  # sharper logits, so hand computations are far from argmax ties
        with torch.no_grad():
            for p in m.parameters():
                if p.dim() > 1:
                    p.normal_(0.0, std)
    return m


def naive_greedy(model, prompt, n, stop):
    seq, out = list(prompt), []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            out.append(nxt)
            seq.append(nxt)
            if nxt == stop:
                break
    return out


def row_logprob(model, ids, start):
    """Sum of log p(ids[t] | ids[:t]) for t >= start, and the number of such t; one row, no padding."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1)
    picked = logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    return float(picked[start - 1 :].sum()), len(ids) - start


# ------------------------------------------------------------------ exact match on the toy stream


@pytest.fixture(scope="module")
def toy():
    stream = toy_stream(n_train=20, n_eval=6, seed=0)
    tok = build_tokenizer(stream.vocabulary, [t.token for t in stream.tasks])
    enc = encode_stream(stream, tok, 16)
    return stream, tok, enc


def test_exact_match_one_score_per_task_in_unit_interval(toy):
    _, tok, enc = toy
    model = tiny(len(tok), 16)
    scores = evaluate_stream(model, enc, batch_size=5)
    assert len(scores) == len(enc.tasks) == 4
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)


def test_exact_match_against_naive_greedy(toy):
    _, tok, enc = toy
    model = tiny(len(tok), 16, seed=1, std=0.3).eval()
    scores = evaluate_stream(model, enc, batch_size=7)
    for task, score in zip(enc.tasks, scores, strict=True):
        prompts, targets = task.eval.prompts(), task.eval.targets()
        hits = [
            naive_greedy(model, p, len(t), enc.eos_id) == t for p, t in zip(prompts, targets, strict=True)
        ]
        assert score == pytest.approx(sum(hits) / len(hits))


def test_exact_match_is_one_for_a_model_that_knows_the_answers():
    """A model whose output layer is a lookup table of the right next token scores 1.0,
    and 0.0 once one answer token is changed."""
    tok = build_tokenizer(None, ["<c>"])
    # every prompt ends in a distinct last character, and the answer is one token
    train = [Example("x", "a")]
    eval_ = [Example("pq", "r"), Example("st", "u")]
    task = Task("c", "prompt_target", train, eval_, "exact_match", "<c>")
    enc = encode_stream(Stream("s", [task]), tok, 16)

    class Lookup(torch.nn.Module):
        """Predicts table[last token] (eos for any other token) with certainty."""

        def __init__(self, table):
            super().__init__()
            self.next = torch.full((len(tok),), tok.eos_token_id)
            for k, v in table.items():
                self.next[k] = v
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, **kw):
            logits = 10.0 * F.one_hot(self.next[input_ids], len(tok)).float()
            return type("Out", (), {"logits": logits})()

    ids = {c: tok.convert_tokens_to_ids(c) for c in "qrtu"}
    right = Lookup({ids["q"]: ids["r"], ids["t"]: ids["u"]})
    assert evaluate_stream(right, enc) == [1.0]
    half = Lookup({ids["q"]: ids["r"], ids["t"]: ids["r"]})
    assert evaluate_stream(half, enc) == [0.5]


# ------------------------------------------------------------------ loss metric on a text task

DOCS_TRAIN = ["the cat sat on the mat", "a b c"]
DOCS_EVAL = [
    "hello world, this is a longer held-out document that spans windows",
    "tiny",
    "another piece of text!",
]


@pytest.fixture(scope="module")
def text():
    tok = build_tokenizer(None, ["<t>"])
    task = Task("t", "text", [Example(d) for d in DOCS_TRAIN], [Example(d) for d in DOCS_EVAL], "loss", "<t>")
    enc = encode_stream(Stream("text", [task]), tok, 24)
    return tok, enc


def test_loss_metric_equals_minus_mean_cross_entropy(text):
    tok, enc = text
    model = tiny(len(tok), 24)
    task = enc.tasks[0]
    es = task.eval
    assert len(es) > len(DOCS_EVAL)  # the long document was cut into windows
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(es)):
            ids = es.ids[i, : es.lengths[i]].unsqueeze(0)
            logits = model(input_ids=ids).logits[0, :-1]
            ce = F.cross_entropy(logits, ids[0, 1:], reduction="none")
            scored = ce[es.prefix_len - 1 :]  # predictions of the tokens after the prefix
            total += float(scored.sum())
            count += scored.numel()
    expected = -total / count
    for batch_size in (1, 2, 512):
        (score,) = evaluate_stream(model, enc, batch_size=batch_size)
        assert score == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # a randomly initialised model is close to uniform over the vocabulary
    assert score == pytest.approx(-torch.log(torch.tensor(float(len(tok)))).item(), rel=0.1)


def test_loss_metric_max_examples_uses_first_rows(text):
    tok, enc = text
    model = tiny(len(tok), 24)
    es = enc.tasks[0].eval
    total, count = 0.0, 0
    for i in range(2):
        lp, n = row_logprob(model, es.ids[i, : es.lengths[i]].tolist(), es.prefix_len)
        total, count = total + lp, count + n
    (score,) = evaluate_stream(model, enc, max_examples=2)
    assert score == pytest.approx(total / count, rel=1e-5)


def test_sequence_logprobs_padding_and_batching():
    tok = build_tokenizer(None, [])
    model = tiny(len(tok), 32, seed=3)
    rows = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    starts = [2, 1, 3]
    for bs in (1, 3):
        with torch.no_grad():
            sums, counts = sequence_logprobs(model, rows, starts, tok.pad_token_id, bs)
        for i, (r, s) in enumerate(zip(rows, starts, strict=True)):
            lp, n = row_logprob(model, r, s)
            assert float(sums[i]) == pytest.approx(lp, rel=1e-5)
            assert int(counts[i]) == n


# ------------------------------------------------------------------ accuracy over labels


@pytest.fixture(scope="module")
def choice():
    tok = build_tokenizer(None, ["<sent>"])
    labels = ["positive", "negative", "neutral", "no"]
    train = [Example(f"review {i}: ", labels[i % 4]) for i in range(8)]
    eval_ = [Example(f"text number {i} says ", labels[(i * 3) % 4]) for i in range(6)]
    task = Task("sent", "prompt_target", train, eval_, "accuracy", "<sent>")
    enc = encode_stream(Stream("s", [task]), tok, 48)
    return tok, labels, enc


def test_accuracy_metric_matches_hand_computation(choice):
    tok, labels, enc = choice
    task = enc.tasks[0]
    assert task.metric == "accuracy"
    label_ids = [tok(w, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for w in labels]
    assert task.choices == label_ids
    checked = 0
    for seed in range(2):
        model = tiny(len(tok), 48, seed=seed, std=0.2)
        hits = []
        for prompt, target in zip(task.eval.prompts(), task.eval.targets(), strict=True):
            scores = [row_logprob(model, prompt + c, len(prompt))[0] for c in label_ids]
            best = max(range(len(labels)), key=lambda k: scores[k])
            hits.append(label_ids[best] == target)
        expected = sum(hits) / len(hits)
        (score,) = evaluate_stream(model, enc, batch_size=6)
        assert score == pytest.approx(expected)
        checked += 0 < expected < 1
    assert checked  # at least one seed with a non-trivial score


def test_accuracy_uses_sum_not_mean_log_likelihood(choice):
    """The label with the highest total log-likelihood wins: for a near-uniform model the
    shortest label ("no") is picked for every prompt."""
    tok, labels, enc = choice
    model = tiny(len(tok), 48)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # exactly uniform next-token distributions
    (score,) = evaluate_stream(model, enc)
    targets = enc.tasks[0].eval.targets()
    no = tok("no", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert score == pytest.approx(sum(t == no for t in targets) / len(targets))


# ------------------------------------------------------------------ determinism and mode


def test_deterministic_and_mode_restored(toy, text, choice):
    _, tok, enc = toy
    model = tiny(len(tok), 16, seed=2)
    model.train()
    first = evaluate_stream(model, enc, batch_size=8)
    assert model.training
    assert all(m.training for m in model.modules())
    second = evaluate_stream(model, enc, batch_size=3)
    assert first == second
    model.eval()
    assert evaluate_stream(model, enc) == first
    assert not model.training

    ttok, tenc = text
    tmodel = tiny(len(ttok), 24).train()
    assert evaluate_stream(tmodel, tenc) == evaluate_stream(tmodel, tenc)
    assert tmodel.training

    ctok, _, cenc = choice
    cmodel = tiny(len(ctok), 48).train()
    assert evaluate_stream(cmodel, cenc) == evaluate_stream(cmodel, cenc)
    assert cmodel.training


def test_evaluation_runs_in_eval_mode(toy):
    _, tok, enc = toy
    model = tiny(len(tok), 16).train()
    seen = []
    handle = model.model.layers[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
    try:
        evaluate_stream(model, enc, max_examples=2)
    finally:
        handle.remove()
    assert seen and not any(seen)
    assert model.training


def test_max_examples_caps_rows(toy):
    _, tok, enc = toy
    model = tiny(len(tok), 16, seed=1, std=0.3)
    capped = evaluate_stream(model, enc, max_examples=3)
    for task, score in zip(enc.tasks, capped, strict=True):
        hits = [
            naive_greedy(model, p, len(t), enc.eos_id) == t
            for p, t in zip(task.eval.prompts()[:3], task.eval.targets()[:3], strict=True)
        ]
        assert score == pytest.approx(sum(hits) / 3)
