"""The toy stream of four digit tasks (addition, reversal, sort, modular addition).

Each sequence is `[task-token, a, SEP, b or NULL, EQ, answer, EOS]`, one token per digit, operands
zero-padded to `n_digits`. Train and eval inputs are disjoint, drawn with a seed, except for a task
with fewer than SMALL_SPACE possible inputs (2-digit reversal and sort have 100): there is nothing
unseen to hold out, so the model trains on every input and is scored on them (retention, not
generalisation).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from lifelong.data.task import Example, Stream, Task
from lifelong.errors import UserError
from lifelong.seeding import derive_seed

SEP, NULL, EQ = "<sep>", "<null>", "<eq>"
TOY_SYMBOLS = [str(d) for d in range(10)] + [SEP, NULL, EQ]
SMALL_SPACE = 1000


def _digits(value: int, width: int) -> str:
    return " ".join(str(value).zfill(width))


def _add(a: int, b: int, n: int, modulus: int) -> str:
    return _digits(a + b, n + 1)


def _reverse(a: int, b: int, n: int, modulus: int) -> str:
    return " ".join(reversed(str(a).zfill(n)))


def _sort(a: int, b: int, n: int, modulus: int) -> str:
    return " ".join(sorted(str(a).zfill(n)))


def _modadd(a: int, b: int, n: int, modulus: int) -> str:
    return _digits((a + b) % modulus, len(str(modulus - 1)))


# name -> (answer function, takes a second operand)
TOY_TASKS: dict[str, tuple[Callable[[int, int, int, int], str], bool]] = {
    "add": (_add, True),
    "reverse": (_reverse, False),
    "sort": (_sort, False),
    "modadd": (_modadd, True),
}


def distinct_codes(rng: random.Random, space: int, k: int) -> list[int]:
    """`k` distinct integers from range(space), in draw order (also for spaces beyond sys.maxsize)."""
    if space <= 10**9:
        return rng.sample(range(space), k)
    seen: dict[int, None] = {}
    while len(seen) < k:
        seen[rng.randrange(space)] = None
    return list(seen)


def toy_task(
    name: str, n_digits: int, modulus: int, n_train: int, n_eval: int, seed: int, round_index: int = 0
) -> Task:
    """Task `name`; a later round (`round_index` >= 1) is named `<name><round_index + 1>`, has its own
    task token and draws its examples with its own seed."""
    if name not in TOY_TASKS:
        raise UserError(f"unknown toy task {name!r} (known: {', '.join(TOY_TASKS)})")
    answer, binary = TOY_TASKS[name]
    base = 10**n_digits
    space = base * base if binary else base
    parts = (name, n_digits) if round_index == 0 else (name, n_digits, round_index)
    rng = random.Random(derive_seed(seed, "toy", *parts))
    label = name if round_index == 0 else f"{name}{round_index + 1}"
    if space < SMALL_SPACE:  # nothing unseen to hold out: train on every input, score on them all
        drawn = distinct_codes(rng, space, space)
        train_codes, eval_codes = drawn, drawn[:n_eval]
    else:
        drawn = distinct_codes(rng, space, min(n_eval + n_train, space))
        train_codes, eval_codes = drawn[n_eval:], drawn[:n_eval]

    def example(code: int) -> Example:
        a, b = divmod(code, base) if binary else (code, 0)
        second = _digits(b, n_digits) if binary else NULL
        prompt = f"{_digits(a, n_digits)} {SEP} {second} {EQ}"
        return Example(prompt, answer(a, b, n_digits, modulus))

    return Task(
        name=label,
        kind="prompt_target",
        train=[example(c) for c in train_codes],
        eval=[example(c) for c in eval_codes],
        metric="exact_match",
        token=f"<{label}>",
        description=f"{n_digits}-digit {name}" + (f", round {round_index + 1}" if round_index else ""),
    )


def toy_stream(
    tasks: list[str] | tuple[str, ...] = ("add", "reverse", "sort", "modadd"),
    n_digits: int = 2,
    modulus: int | None = None,
    n_train: int = 20000,
    n_eval: int = 256,
    seed: int = 0,
    rounds: int = 1,
) -> Stream:
    """Four digit tasks: addition -> reversal -> sort -> modular addition.

    `modulus` defaults to 10**n_digits: with a larger modulus and few digits, modular addition would be
    the same task as addition. `rounds` > 1 repeats the tasks that many times, each round a new task
    (`add2`, `reverse2`, ...: its own token, examples drawn with its own seed): a long stream of
    known difficulty, e.g. to measure how a method's cost grows with the number of tasks."""
    if n_digits < 1:
        raise UserError("toy stream: n_digits must be at least 1")
    if modulus is not None and modulus < 2:
        raise UserError(f"toy stream: modulus must be at least 2, got {modulus}")
    if rounds < 1:
        raise UserError(f"toy stream: rounds must be at least 1, got {rounds}")
    if len(set(tasks)) < len(tasks):
        raise UserError("toy stream: a task is listed twice (use rounds to repeat the tasks)")
    modulus = 10**n_digits if modulus is None else modulus
    made = [
        toy_task(name, n_digits, modulus, n_train, n_eval, seed, r) for r in range(rounds) for name in tasks
    ]
    return Stream(name="toy", tasks=made, vocabulary=TOY_SYMBOLS)
