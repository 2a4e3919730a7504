"""Tokenized tasks, loss/attention masks, batch schedules and text windows."""

import pytest
import torch

from lifelong.data.batching import (
    Batch,
    BatchSchedule,
    EncodedSet,
    cat_sets,
    concat,
    encode_stream,
    encode_task,
    forward_groups,
    pad_rows,
    pad_width,
)
from lifelong.data.task import Example, PromptFormat, Stream, Task
from lifelong.data.toy import EQ, toy_stream
from lifelong.errors import UserError
from lifelong.models import build_tokenizer


def toy_encoded(max_length=16, **kw):
    stream = toy_stream(n_train=40, n_eval=8, seed=0, **kw)
    tok = build_tokenizer(stream.vocabulary, [t.token for t in stream.tasks])
    return stream, tok, encode_stream(stream, tok, max_length)


def byte_task(name="qa", train=None, eval_=None, kind="prompt_target", metric="exact_match"):
    train = train or [Example("a", "b"), Example("hello", "w"), Example("xy", "long answer")]
    eval_ = eval_ or [Example("q", "r")]
    return Task(name, kind, train, eval_, metric, f"<{name}>")


def row(enc: EncodedSet, i: int) -> list[int]:
    return enc.ids[i, : enc.lengths[i]].tolist()


# ------------------------------------------------------------------ encode_stream on the toy stream


def test_toy_rows_prefix_eos_and_target_start():
    stream, tok, enc = toy_encoded()
    assert enc.pad_id == tok.pad_token_id and enc.eos_id == tok.eos_token_id
    assert tok.bos_token_id is None
    assert len(enc) == len(stream.tasks) == 4
    assert enc.prefix_len == 1
    eq_id = tok.convert_tokens_to_ids(EQ)
    for task, etask in zip(stream.tasks, enc.tasks, strict=True):
        token_id = tok.convert_tokens_to_ids(task.token)
        assert etask.prefix == [token_id]
        assert etask.name == task.name and etask.metric == "exact_match"
        assert etask.choices == []
        for split in ("train", "eval"):
            examples, es = getattr(task, split), getattr(etask, split)
            assert len(es) == len(examples)
            assert es.prefix_len == 1
            for i, ex in enumerate(examples):
                r = row(es, i)
                start = int(es.target_start[i])
                prompt = tok(ex.prompt, add_special_tokens=False)["input_ids"]
                target = tok(ex.target, add_special_tokens=False)["input_ids"]
                assert r[0] == token_id
                assert r[-1] == tok.eos_token_id
                assert r == [token_id, *prompt, *target, tok.eos_token_id]
                assert start == 1 + len(prompt)
                assert r[start - 1] == eq_id
                assert r[start] == target[0]
                assert es.prompts()[i] == [token_id, *prompt]
                assert es.targets()[i] == [*target, tok.eos_token_id]
                # padding beyond the row
                assert (es.ids[i, len(r) :] == tok.pad_token_id).all()
    assert enc.max_len == max(max(t.train.ids.shape[1], t.eval.ids.shape[1]) for t in enc.tasks)
    assert enc.max_len == 11  # add: task + 2 + sep + 2 + eq + 3 + eos


# ------------------------------------------------------------------ batches and masks


@pytest.fixture(scope="module")
def byte_set():
    tok = build_tokenizer(None, ["<qa>"])
    task = byte_task()
    return tok, task, encode_task(task, tok, 64).train


def test_batch_sequence_vs_target_masks(byte_set):
    tok, task, es = byte_set
    rows = torch.tensor([2, 0, 1])
    for loss_on in ("sequence", "target"):
        b = es.batch(rows, loss_on=loss_on)
        lengths = es.lengths[rows]
        assert b.input_ids.shape == (3, int(lengths.max()))
        assert b.loss_mask.dtype == torch.bool
        assert b.attention_mask.dtype == torch.long
        assert b.attention_mask.sum(1).tolist() == lengths.tolist()
        for j, i in enumerate(rows.tolist()):
            n = int(es.lengths[i])
            assert b.input_ids[j, :n].tolist() == row(es, i)
            assert b.attention_mask[j].tolist() == [1] * n + [0] * (b.input_ids.shape[1] - n)
            start = es.prefix_len if loss_on == "sequence" else int(es.target_start[i])
            expected = [start <= t < n for t in range(b.input_ids.shape[1])]
            assert b.loss_mask[j].tolist() == expected, (loss_on, i)
            if loss_on == "target":
                # exactly the answer tokens and the eos
                target = tok(task.train[i].target, add_special_tokens=False)["input_ids"]
                assert b.input_ids[j][b.loss_mask[j]].tolist() == [*target, tok.eos_token_id]
            else:
                assert int(b.loss_mask[j].sum()) == n - es.prefix_len
    assert len(es.batch(rows)) == 3


def test_batch_default_is_sequence(byte_set):
    _, _, es = byte_set
    rows = torch.arange(len(es))
    assert torch.equal(es.batch(rows).loss_mask, es.batch(rows, loss_on="sequence").loss_mask)


def test_batch_width_is_longest_selected_row(byte_set):
    _, _, es = byte_set
    short = int(es.lengths.argmin())
    b = es.batch(torch.tensor([short]))
    assert b.input_ids.shape[1] == int(es.lengths[short])
    assert bool(b.attention_mask.all())


def test_concat_pads(byte_set):
    tok, _, es = byte_set
    b1 = es.batch(torch.tensor([0]))  # short
    b2 = es.batch(torch.tensor([2, 1]))  # longer
    assert b1.input_ids.shape[1] < b2.input_ids.shape[1]
    out = concat([b1, b2], tok.pad_token_id)
    width = b2.input_ids.shape[1]
    assert out.input_ids.shape == (3, width)
    assert out.loss_mask.dtype == torch.bool
    w1 = b1.input_ids.shape[1]
    assert torch.equal(out.input_ids[0, :w1], b1.input_ids[0])
    assert (out.input_ids[0, w1:] == tok.pad_token_id).all()
    assert (out.attention_mask[0, w1:] == 0).all()
    assert not out.loss_mask[0, w1:].any()
    assert torch.equal(out.loss_mask[0, :w1], b1.loss_mask[0])
    assert torch.equal(out.input_ids[1:], b2.input_ids)
    assert torch.equal(out.attention_mask[1:], b2.attention_mask)
    assert torch.equal(out.loss_mask[1:], b2.loss_mask)
    assert out.attention_mask.sum(1).tolist() == [*b1.attention_mask.sum(1), *b2.attention_mask.sum(1)]


def test_batch_to_and_tensors(byte_set):
    _, _, es = byte_set
    b = es.batch(torch.tensor([0, 1]))
    moved = b.to(torch.device("cpu"))
    assert isinstance(moved, Batch)
    for x, y in zip(b.tensors(), moved.tensors(), strict=True):
        assert torch.equal(x, y)


def test_trimmed_drops_columns_no_row_attends_to():
    ids = torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]])
    attention = (ids != 0).long()
    trimmed = Batch(ids, attention, attention.bool()).trimmed()
    assert trimmed.input_ids.tolist() == [[5, 6], [7, 0]]
    assert trimmed.attention_mask.tolist() == [[1, 1], [1, 0]]
    assert len(trimmed.select(slice(1, 2))) == 1


def rows_of_width(n: int, width: int) -> Batch:
    ids = torch.ones((n, width), dtype=torch.long)
    return Batch(ids, ids, ids.bool())


def test_forward_groups_share_a_pass_unless_padding_wastes_tokens():
    assert forward_groups([rows_of_width(128, 11), rows_of_width(64, 11)]) == [[0, 1]]
    assert forward_groups([rows_of_width(128, 10), rows_of_width(32, 11)]) == [[0, 1]]  # 2% padding
    assert forward_groups([rows_of_width(128, 9), rows_of_width(32, 11)]) == [[0], [1]]  # 17% padding
    assert forward_groups([rows_of_width(128, 9), rows_of_width(32, 11)], max_waste=0.2) == [[0, 1]]


def test_cat_sets(byte_set):
    tok, _, train = byte_set
    eval_ = encode_task(byte_task(), tok, 64).eval
    assert train.ids.shape[1] != eval_.ids.shape[1]
    both = cat_sets([eval_, train], tok.pad_token_id)
    assert len(both) == len(eval_) + len(train)
    assert both.ids.shape[1] == max(train.ids.shape[1], eval_.ids.shape[1])
    assert both.prefix_len == train.prefix_len
    for i in range(len(eval_)):
        assert row(both, i) == row(eval_, i)
        assert int(both.target_start[i]) == int(eval_.target_start[i])
    for i in range(len(train)):
        assert row(both, len(eval_) + i) == row(train, i)
        assert int(both.target_start[len(eval_) + i]) == int(train.target_start[i])
    for i in range(len(both)):
        assert (both.ids[i, both.lengths[i] :] == tok.pad_token_id).all()
    assert both.prompts() == eval_.prompts() + train.prompts()
    assert both.targets() == eval_.targets() + train.targets()


# ------------------------------------------------------------------ BatchSchedule


def test_schedule_is_pure_function_of_seed_task_step():
    a = BatchSchedule(37, 8, seed=3, task_index=1)
    b = BatchSchedule(37, 8, seed=3, task_index=1)
    steps = [0, 1, 2, 50, 3, 49, 4, 0, 123, 5, 123, 17]
    expected = {s: a.rows(s).tolist() for s in sorted(set(steps))}
    for s in steps:  # out of order, revisiting epochs
        assert b.rows(s).tolist() == expected[s], s
    c = BatchSchedule(37, 8, seed=3, task_index=1)
    for s in reversed(steps):
        assert c.rows(s).tolist() == expected[s], s


def test_schedule_depends_on_seed_and_task():
    base = [BatchSchedule(50, 10, 0, 0).rows(s).tolist() for s in range(5)]
    other_seed = [BatchSchedule(50, 10, 1, 0).rows(s).tolist() for s in range(5)]
    other_task = [BatchSchedule(50, 10, 0, 1).rows(s).tolist() for s in range(5)]
    assert base != other_seed
    assert base != other_task


@pytest.mark.parametrize(("n", "bs"), [(10, 3), (12, 4), (7, 7), (5, 2), (1, 1)])
def test_each_epoch_visits_every_row_once(n, bs):
    sched = BatchSchedule(n, bs, seed=7, task_index=2)
    epochs = 4
    steps = -(-n * epochs // bs)
    flat = torch.cat([sched.rows(s) for s in range(steps)]).tolist()
    assert all(len(sched.rows(s)) == bs for s in range(steps))
    for e in range(epochs):
        assert sorted(flat[e * n : (e + 1) * n]) == list(range(n)), e
    # consecutive epochs use different orders (when there is more than one order)
    if n > 2:
        assert flat[:n] != flat[n : 2 * n] or flat[n : 2 * n] != flat[2 * n : 3 * n]


def test_batch_larger_than_dataset():
    sched = BatchSchedule(5, 12, seed=0, task_index=0)
    r0 = sched.rows(0).tolist()
    assert len(r0) == 12
    assert sorted(r0[:5]) == list(range(5))
    assert sorted(r0[5:10]) == list(range(5))
    r1 = sched.rows(1).tolist()
    assert len(r1) == 12
    # rows 10..14 of the global order form epoch 2 together with the start of step 1
    assert sorted(r0[10:] + r1[:3]) == list(range(5))
    fresh = BatchSchedule(5, 12, seed=0, task_index=0)
    assert fresh.rows(1).tolist() == r1
    assert fresh.rows(0).tolist() == r0


def test_schedule_rows_index_an_encoded_set():
    _, _, enc = toy_encoded()
    es = enc.tasks[0].train
    sched = BatchSchedule(len(es), 16, seed=0, task_index=0)
    b = es.batch(sched.rows(3), loss_on="target")
    assert b.input_ids.shape == (16, 11)


# ------------------------------------------------------------------ errors


def test_too_long_prompt_target_names_task_with_overlong_error():
    tok = build_tokenizer(None, ["<longtask>"])
    task = byte_task("longtask", train=[Example("x" * 30, "y")], eval_=[Example("a", "b")])
    task.format = PromptFormat(overlong="error")
    with pytest.raises(UserError, match="longtask") as err:
        encode_task(task, tok, 16)
    assert "train example 0 is 33 tokens long" in str(err.value)
    assert "16" in str(err.value)
    # exactly max_length fits
    fits = encode_task(task, tok, 33)
    assert int(fits.train.lengths[0]) == 33


def test_unknown_task_token_is_user_error():
    tok = build_tokenizer(None, ["<other>"])
    with pytest.raises(UserError, match="<qa>"):
        encode_task(byte_task(), tok, 64)


def test_empty_split_is_user_error():
    tok = build_tokenizer(None, ["<qa>"])
    task = Task("qa", "prompt_target", [Example("a", "b")], [], "exact_match", "<qa>")
    with pytest.raises(UserError, match="no eval examples"):
        encode_task(task, tok, 64)


# ------------------------------------------------------------------ text windows


def test_text_task_cut_into_windows_with_prefix():
    tok = build_tokenizer(None, ["<t>"])
    docs = ["abcdefghijklmnopqrstuvwxyz0123456789", "short", "exactly9!"]
    task = Task("t", "text", [Example(d) for d in docs], [Example("hi")], "loss", "<t>")
    max_length = 10
    enc = encode_task(task, tok, max_length)
    es = enc.train
    prefix = enc.prefix
    assert prefix == [tok.convert_tokens_to_ids("<t>")]
    window = max_length - len(prefix)
    rows = [row(es, i) for i in range(len(es))]
    assert all(r[: len(prefix)] == prefix for r in rows)
    assert all(len(r) <= max_length for r in rows)
    assert es.target_start.tolist() == [len(prefix)] * len(es)
    # stitching the windows back gives every document followed by eos, in order
    stitched = [t for r in rows for t in r[len(prefix) :]]
    expected = []
    for d in docs:
        expected += tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert stitched == expected
    # number of windows per document
    n_windows = sum(-(-(len(d) + 1) // window) for d in docs)
    assert len(es) == n_windows
    # text: loss on sequence and on target coincide (everything after the prefix)
    idx = torch.arange(len(es))
    assert torch.equal(es.batch(idx, "sequence").loss_mask, es.batch(idx, "target").loss_mask)


def test_text_context_too_short():
    tok = build_tokenizer(None, ["<t>"])
    task = Task("t", "text", [Example("abc")], [Example("d")], "loss", "<t>")
    with pytest.raises(UserError, match="too short for task 't'"):
        encode_task(task, tok, 2)


def test_accuracy_task_choices():
    tok = build_tokenizer(None, ["<c>"])
    train = [Example("p1", "yes"), Example("p2", "no"), Example("p3", "yes")]
    task = Task("c", "prompt_target", train, [Example("p4", "maybe")], "accuracy", "<c>")
    enc = encode_task(task, tok, 32)
    words = ["yes", "no", "maybe"]
    assert enc.choices == [tok(w, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for w in words]


def test_encode_stream_max_len_mixed_tasks():
    tok = build_tokenizer(None, ["<a>", "<t>"])
    a = Task("a", "prompt_target", [Example("p", "q")], [Example("pp", "qqq")], "exact_match", "<a>")
    t = Task("t", "text", [Example("x" * 50)], [Example("y")], "loss", "<t>")
    enc = encode_stream(Stream("mix", [a, t]), tok, 12)
    assert enc.name == "mix"
    assert enc.max_len == 12  # the text windows fill the context
    assert [t.kind for t in enc.tasks] == ["prompt_target", "text"]


def test_pad_rows_right_left_and_to_a_width():
    rows = [[1, 2, 3], torch.tensor([4])]  # lists and 1-D tensors alike
    ids, attention = pad_rows(rows, pad_id=9)
    assert ids.tolist() == [[1, 2, 3], [4, 9, 9]] and attention.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, attention = pad_rows(rows, pad_id=9, side="left", width=4)
    assert ids.tolist() == [[9, 1, 2, 3], [9, 9, 9, 4]] and attention.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]
    assert ids.dtype == attention.dtype == torch.long
    assert pad_width(torch.ones(2, 1, dtype=torch.long), 3, 0).tolist() == [[1, 0, 0], [1, 0, 0]]
