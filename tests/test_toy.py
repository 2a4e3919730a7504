"""The toy digit stream: determinism, disjoint splits, hand-checked answers and the prompt format."""

import pytest

from lifelong.config import StreamConfig
from lifelong.data import build_stream
from lifelong.data.toy import EQ, NULL, SEP, SMALL_SPACE, TOY_SYMBOLS, TOY_TASKS, toy_stream, toy_task
from lifelong.errors import UserError
from lifelong.models import build_tokenizer

ALL = ("add", "reverse", "sort", "modadd")
BINARY = {"add": True, "reverse": False, "sort": False, "modadd": True}


def small(seed=0, **kw):
    kw = {"n_train": 200, "n_eval": 40, **kw}
    return toy_stream(seed=seed, **kw)


def parse_prompt(prompt: str, n: int) -> tuple[int, int | None]:
    """Independent parser of `a SEP b-or-NULL EQ`, one symbol per digit."""
    toks = prompt.split(" ")
    assert len(toks) == (2 * n + 2 if toks[n + 1] != NULL else n + 3), prompt
    assert toks[n] == SEP and toks[-1] == EQ, prompt
    assert all(t.isdigit() and len(t) == 1 for t in toks[:n]), prompt
    a = int("".join(toks[:n]))
    if toks[n + 1] == NULL:
        return a, None
    assert all(t.isdigit() and len(t) == 1 for t in toks[n + 1 : 2 * n + 1]), prompt
    return a, int("".join(toks[n + 1 : 2 * n + 1]))


def reference_answer(task: str, a: int, b: int | None, n: int, modulus: int) -> str:
    """The answer, written independently of lifelong.data.toy."""
    if task == "add":
        s = f"{a + b:0{n + 1}d}"
    elif task == "reverse":
        s = f"{a:0{n}d}"[::-1]
    elif task == "sort":
        s = "".join(sorted(f"{a:0{n}d}"))
    else:
        s = f"{(a + b) % modulus:0{len(str(modulus - 1))}d}"
    return " ".join(s)


# ------------------------------------------------------------------ determinism


def test_same_seed_identical():
    s1, s2 = small(seed=3), small(seed=3)
    assert s1.task_names == s2.task_names == list(ALL)
    for t1, t2 in zip(s1.tasks, s2.tasks, strict=True):
        assert t1.train == t2.train
        assert t1.eval == t2.eval
        assert (t1.token, t1.metric, t1.kind) == (t2.token, t2.metric, t2.kind)


def test_different_seed_different():
    s1, s2 = small(seed=0), small(seed=1)
    for t1, t2 in zip(s1.tasks, s2.tasks, strict=True):
        assert t1.train != t2.train
        assert t1.eval != t2.eval


def test_task_does_not_depend_on_stream_order_or_company():
    full = small(seed=5)
    alone = small(seed=5, tasks=["sort"])
    reordered = small(seed=5, tasks=["modadd", "add"])
    assert alone.tasks[0].train == full.tasks[2].train
    assert alone.tasks[0].eval == full.tasks[2].eval
    assert reordered.tasks[0].eval == full.tasks[3].eval
    assert reordered.tasks[1].train == full.tasks[0].train


# ------------------------------------------------------------------ splits


@pytest.mark.parametrize("n_digits", [2, 3])
def test_train_eval_disjoint_for_every_task(n_digits):
    stream = small(seed=2, n_digits=n_digits)
    for task in stream.tasks:
        if (10**n_digits) ** (2 if BINARY[task.name] else 1) < SMALL_SPACE:
            continue  # checked by test_small_input_space_trains_and_scores_every_input
        train = [ex.prompt for ex in task.train]
        eval_ = [ex.prompt for ex in task.eval]
        assert train and eval_
        assert len(set(train)) == len(train), task.name  # no duplicates either
        assert len(set(eval_)) == len(eval_), task.name
        assert not set(train) & set(eval_), task.name


def test_sizes_respected():
    stream = toy_stream(n_digits=3, n_train=30, n_eval=7, seed=0)
    for task in stream.tasks:
        assert len(task.train) == 30
        assert len(task.eval) == 7


def test_small_input_space_trains_and_scores_every_input():
    # Below SMALL_SPACE inputs nothing unseen is left to hold out: train on all, score on them.
    stream = toy_stream(n_digits=1, n_train=1000, n_eval=1000, seed=0)
    for task in stream.tasks:
        space = 100 if BINARY[task.name] else 10
        train = {ex.prompt for ex in task.train}
        eval_ = {ex.prompt for ex in task.eval}
        assert len(train) == len(task.train) == space, task.name
        assert eval_ <= train and len(eval_) == space, task.name
    unary = stream.tasks[1]
    assert {ex.prompt for ex in unary.train} == {f"{d} {SEP} {NULL} {EQ}" for d in range(10)}
    capped = toy_stream(n_digits=2, tasks=["sort"], n_eval=40, seed=0).tasks[0]
    assert len(capped.train) == 100 and len(capped.eval) == 40


# ------------------------------------------------------------------ answers


@pytest.mark.parametrize(
    ("task", "a", "b", "expected"),
    [
        ("add", 7, 95, "1 0 2"),
        ("add", 0, 0, "0 0 0"),
        ("add", 99, 99, "1 9 8"),
        ("add", 12, 30, "0 4 2"),
        ("reverse", 7, 0, "7 0"),
        ("reverse", 90, 0, "0 9"),
        ("reverse", 12, 0, "2 1"),
        ("sort", 92, 0, "2 9"),
        ("sort", 7, 0, "0 7"),
        ("sort", 55, 0, "5 5"),
        ("modadd", 7, 95, "0 2"),
        ("modadd", 50, 50, "0 0"),
        ("modadd", 12, 30, "4 2"),
    ],
)
def test_hand_checked_answers(task, a, b, expected):
    answer, _ = TOY_TASKS[task]
    assert answer(a, b, 2, 100) == expected


def test_modadd_with_small_modulus_uses_width_of_largest_residue():
    answer, _ = TOY_TASKS["modadd"]
    assert answer(7, 95, 2, 7) == str((7 + 95) % 7)
    assert answer(9, 9, 1, 13) == "0 5"  # 18 mod 13 = 5, two digits wide because 12 has two


@pytest.mark.parametrize("n_digits", [1, 2, 3])
def test_every_generated_example_is_correct(n_digits):
    stream = toy_stream(n_digits=n_digits, n_train=150, n_eval=30, seed=11)
    for task in stream.tasks:
        for ex in [*task.train, *task.eval]:
            a, b = parse_prompt(ex.prompt, n_digits)
            assert (b is not None) == BINARY[task.name], ex
            assert ex.target == reference_answer(task.name, a, b, n_digits, 10**n_digits), ex


def test_custom_modulus():
    stream = toy_stream(tasks=["modadd"], n_digits=2, modulus=7, n_train=100, n_eval=20, seed=0)
    for ex in [*stream.tasks[0].train, *stream.tasks[0].eval]:
        a, b = parse_prompt(ex.prompt, 2)
        assert ex.target == str((a + b) % 7)


@pytest.mark.parametrize("n_digits", [1, 2])
def test_modulus_defaults_to_power_of_ten(n_digits):
    default = toy_stream(tasks=["modadd"], n_digits=n_digits, n_train=60, n_eval=10, seed=4)
    explicit = toy_stream(
        tasks=["modadd"], n_digits=n_digits, modulus=10**n_digits, n_train=60, n_eval=10, seed=4
    )
    assert default.tasks[0].train == explicit.tasks[0].train
    assert default.tasks[0].eval == explicit.tasks[0].eval
    # with the default modulus, modadd is add without the carry digit
    for ex in default.tasks[0].train:
        a, b = parse_prompt(ex.prompt, n_digits)
        assert len(ex.target.split()) == n_digits
        assert int(ex.target.replace(" ", "")) == (a + b) % 10**n_digits


# ------------------------------------------------------------------ format


def test_prompt_format_and_task_metadata():
    stream = small(seed=0)
    assert stream.name == "toy"
    assert stream.vocabulary == TOY_SYMBOLS
    for task in stream.tasks:
        assert task.kind == "prompt_target"
        assert task.metric == "exact_match"
        assert task.token == f"<{task.name}>"
        for ex in task.train[:20]:
            toks = ex.prompt.split(" ")
            if BINARY[task.name]:
                assert len(toks) == 6 and toks[2] == SEP and toks[5] == EQ
                assert NULL not in toks
            else:
                assert toks[2:] == [SEP, NULL, EQ]
            assert all(len(t) == 1 and t.isdigit() for t in ex.target.split(" "))


def test_one_token_per_digit_with_toy_tokenizer():
    stream = small(seed=0)
    tok = build_tokenizer(stream.vocabulary, [t.token for t in stream.tasks])
    for task in stream.tasks:
        for ex in task.eval[:10]:
            ids = tok(ex.prompt, add_special_tokens=False)["input_ids"]
            target_ids = tok(ex.target, add_special_tokens=False)["input_ids"]
            assert len(ids) == len(ex.prompt.split(" "))
            assert len(target_ids) == len(ex.target.split(" "))
            assert tok.unk_token_id not in ids + target_ids
            assert tok.convert_ids_to_tokens(ids) == ex.prompt.split(" ")


# ------------------------------------------------------------------ errors and build_stream


def test_unknown_toy_task_is_user_error():
    with pytest.raises(UserError, match="unknown toy task 'mul'"):
        toy_stream(tasks=["add", "mul"], n_train=5, n_eval=2)
    with pytest.raises(UserError, match="known: add, reverse, sort, modadd"):
        toy_task("nope", 2, 100, 5, 2, 0)


def test_zero_digits_is_user_error():
    with pytest.raises(UserError, match="n_digits"):
        toy_stream(n_digits=0)


def test_build_stream_builtin_toy_with_options():
    cfg = StreamConfig(builtin="toy", options={"n_digits": 1, "n_train": 12, "n_eval": 3})
    stream = build_stream(cfg, seed=9)
    direct = toy_stream(n_digits=1, n_train=12, n_eval=3, seed=9)
    assert stream.task_names == direct.task_names
    assert [t.train for t in stream.tasks] == [t.train for t in direct.tasks]
    assert [t.eval for t in stream.tasks] == [t.eval for t in direct.tasks]
    named = build_stream(StreamConfig(builtin="toy", name="digits", options={"n_train": 5}), 0)
    assert named.name == "digits"


def test_build_stream_unknown_builtin_or_option():
    with pytest.raises(UserError, match="unknown stream 'nope'"):
        build_stream(StreamConfig(builtin="nope"), 0)
    with pytest.raises(UserError, match="no option 'digits'"):
        build_stream(StreamConfig(builtin="toy", options={"digits": 2}), 0)
    with pytest.raises(UserError, match="no option 'seed'"):
        build_stream(StreamConfig(builtin="toy", options={"seed": 2}), 0)


def test_ten_digit_addition():
    stream = toy_stream(tasks=["add"], n_digits=10, n_train=5, n_eval=2, seed=0)
    for ex in stream.tasks[0].train:
        a, b = parse_prompt(ex.prompt, 10)
        assert ex.target == reference_answer("add", a, b, 10, 10**10)


def test_negative_modulus_is_user_error():
    with pytest.raises(UserError, match="modulus"):
        toy_stream(tasks=["modadd"], modulus=-7, n_train=20, n_eval=5)


def test_rounds_repeat_the_tasks_as_new_tasks_with_their_own_examples():
    stream = toy_stream(tasks=["add", "modadd"], n_digits=2, n_train=40, n_eval=8, rounds=3, seed=0)
    assert [t.name for t in stream.tasks] == ["add", "modadd", "add2", "modadd2", "add3", "modadd3"]
    assert len({t.token for t in stream.tasks}) == 6
    first, again = stream.tasks[0], stream.tasks[2]
    assert first.train != again.train and first.eval != again.eval  # drawn with the round's own seed
    sums = [sum(parse_prompt(e.prompt, 2)) for e in again.train]
    assert [e.target for e in again.train] == [" ".join(str(s).zfill(3)) for s in sums]
    # round 1 is the stream without rounds: the same examples
    plain = toy_stream(tasks=["add", "modadd"], n_digits=2, n_train=40, n_eval=8, seed=0)
    assert plain.tasks[0].train == first.train


def test_rounds_and_repeated_names_are_checked():
    with pytest.raises(UserError, match="rounds must be at least 1"):
        toy_stream(rounds=0)
    with pytest.raises(UserError, match="listed twice"):
        toy_stream(tasks=["add", "add"])
