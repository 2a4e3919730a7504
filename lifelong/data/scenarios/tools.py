"""Tool use with tools arriving, one per task: calculator -> dates -> units -> countries.

Each task teaches one tool by examples in the fixed call format of lifelong/tools/executor.py: the
question, the model's call, the executor's result, the final answer,

    <calculator>What is (23 + 48) * 2?
    <call>calculator: (23 + 48) * 2</call>
    <result>142</result>
    142

- `calculator`: + - * / ** and parentheses on whole numbers, mostly 2 to 99 ("Calculate 7 * (12 - 5).");
- `dates`: a date some days after or before another, or the days between two dates, 2000-2030;
- `units`: a quantity converted between two units of one kind (length, mass, volume, temperature);
- `countries`: the capital, region or currency of a country (countryinfo, pycountry's names).

Questions are generated offline from the seed (the countries' are every fact the data has), each
result written by the executor itself. Examples are distinct by call, and the held-out calls are
never trained on, so scoring a held-out question asks for a call the model has not seen. Scored by
`tool_success`: the model's own call is run by the executor and its answer after the result is
compared with the expected one (`malformed_calls` is reported next to it). Training leaves the
results' tokens out of the loss (lifelong/data/batching.py): the executor writes them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, timedelta

from lifelong.data.registry import StreamInfo, register_stream
from lifelong.data.scenarios.common import TASK_TRAIN, TEXT_MODEL, split
from lifelong.data.sources.countries import countries
from lifelong.data.task import Example, Stream, Task
from lifelong.errors import UserError
from lifelong.seeding import derive_seed
from lifelong.tools.executor import execute, tool_target
from lifelong.tools.units import LINEAR, TEMPERATURE

Question = tuple[str, str]  # (question, call): the call as the model should write it
CALCULATOR_PHRASES = ("What is {}?", "Calculate {}.", "Compute {}.", "How much is {}?")
UNIT_PHRASES = ("Convert {v} {a} to {b}.", "What is {v} {a} in {b}?", "How many {b} is {v} {a}?")
FIRST_DAY, N_DAYS = date(2000, 1, 1), 11_323  # the dates asked about: 2000-01-01 to 2030-12-31
MAX_OFFSET = 400  # days added, subtracted or counted
ATTEMPTS_PER_EXAMPLE = 50  # draws allowed per distinct call wanted before giving up


def calculator_question(rng: random.Random) -> Question:
    """An expression of two or three numbers under + - *, an exact division, or a small power."""
    a, b, c = (rng.randint(2, 99) for _ in range(3))
    op, op2 = rng.choice("+-*"), rng.choice("+-*")
    shape = rng.randrange(5)
    if shape == 0:
        expression = f"{a} {op} {b}"
    elif shape == 1:
        expression = f"({a} {op} {b}) {op2} {c % 10 + 2}"
    elif shape == 2:
        expression = f"{a} {op} ({b} {op2} {c})"
    elif shape == 3:
        expression = f"{a * (c % 12 + 2)} / {c % 12 + 2}"
    else:
        expression = f"{a % 12 + 2} ** {c % 3 + 2}"
    return rng.choice(CALCULATOR_PHRASES).format(expression), f"calculator: {expression}"


def dates_question(rng: random.Random) -> Question:
    """The date some days after or before a date, or the days from one date to a later one."""
    day = FIRST_DAY + timedelta(days=rng.randrange(N_DAYS))
    days = rng.randint(1, MAX_OFFSET)
    shape = rng.randrange(3)
    if shape == 0:
        return f"What date is {days} days after {day}?", f"dates: date_add({day}, {days})"
    if shape == 1:
        return f"What date is {days} days before {day}?", f"dates: date_add({day}, -{days})"
    later = day + timedelta(days=days)
    return f"How many days are there from {day} to {later}?", f"dates: days_between({day}, {later})"


def units_question(rng: random.Random) -> Question:
    """A whole or one-decimal quantity converted to another unit of its kind."""
    kinds = sorted({kind for kind, _ in LINEAR.values()}) + ["temperature"]
    kind = rng.choice(kinds)
    units = list(TEMPERATURE) if kind == "temperature" else [u for u, (k, _) in LINEAR.items() if k == kind]
    source, target = rng.sample(units, 2)
    value = str(rng.randint(1, 500)) if rng.random() < 0.7 else f"{rng.randint(1, 99)}.{rng.randint(1, 9)}"
    question = rng.choice(UNIT_PHRASES).format(v=value, a=source, b=target)
    return question, f"units: {value} {source} in {target}"


def country_questions() -> list[Question]:
    """A question on every fact of every country the countries tool knows."""
    phrases = {
        "capital": "What is the capital of {}?",
        "region": "Which region is {} in?",
        "currency": "What is the currency of {}?",
    }
    calls = [
        (phrase.format(c.name), f"countries: {fact}({c.name})")
        for c in countries()
        for fact, phrase in phrases.items()
    ]
    return [(q, call) for q, call in calls if execute(call).ok]  # Antarctica has no capital


# tool -> (a question drawn from a seeded RNG, what it asks); countries' questions are listed instead
GENERATED: dict[str, tuple[Callable[[random.Random], Question], str]] = {
    "calculator": (calculator_question, "arithmetic expression -> calculator call"),
    "dates": (dates_question, "date arithmetic -> dates call"),
    "units": (units_question, "unit conversion -> units call"),
}
TOOL_TASKS = (*GENERATED, "countries")


def drawn_questions(name: str, n: int, seed: int) -> list[Question]:
    """`n` questions of tool `name` with distinct calls, drawn from an RNG seeded by (seed, name)."""
    make = GENERATED[name][0]
    rng = random.Random(derive_seed(seed, "tools", name))
    by_call: dict[str, str] = {}
    for _ in range(ATTEMPTS_PER_EXAMPLE * n):
        if len(by_call) == n:
            break
        question, call = make(rng)
        by_call.setdefault(call, question)
    if len(by_call) < n:
        raise UserError(f"tools: {name} has only {len(by_call)} distinct calls, asked for {n}")
    return [(q, call) for call, q in by_call.items()]


def tool_task(name: str, n_train: int, n_eval: int, seed: int) -> Task:
    if name == "countries":
        questions, about = country_questions(), "country question -> countries call (countryinfo)"
    else:
        questions, about = drawn_questions(name, n_train + n_eval, seed), GENERATED[name][1]
    train, eval_ = split(sorted(questions), n_eval, seed, "tools", name)
    return Task(
        name=name,
        kind="tool",
        train=[example(q, call) for q, call in train[:n_train]],
        eval=[example(q, call) for q, call in eval_],
        metric="tool_success",
        token=f"<{name}>",
        description=about,
    )


def example(question: str, call: str) -> Example:
    """The question and its target: the call, the executor's result, and that result as the answer."""
    result = execute(call)
    assert result.ok, f"a generated call is refused: {call} ({result.reason})"
    return Example(question, tool_target(call, result, result.text))


def tools_stream(
    tools: list[str] | tuple[str, ...] = TOOL_TASKS,
    n_train: int = 2000,
    n_eval: int = 100,
    seed: int = 0,
) -> Stream:
    """Tool use, a tool per task: calculator -> dates -> units -> countries."""
    unknown = [t for t in tools if t not in TOOL_TASKS]
    if unknown:
        raise UserError(f"unknown tool {unknown[0]!r} (known: {', '.join(TOOL_TASKS)})")
    if n_train < 1 or n_eval < 1:
        raise UserError("tools: n_train and n_eval must be positive")
    return Stream(
        name="tools", tasks=[tool_task(name, n_train, n_eval, seed) for name in dict.fromkeys(tools)]
    )


# The skill is copying: the call's arguments out of the question, the result into the answer. On the
# calculator (an en-tiny pretrained on 0.5 tokens a parameter): 500 steps of 16 at LR 3e-3 write the
# right calls but not yet the answers (0.02); 1000 steps of 32 at LR 1e-3 reach 0.99; 500 steps of 16
# at 1e-3 still 0. 800 steps of 16 keep a naive and a self-replay run side by side near 20 minutes on
# 2 busy cores (50 steps a task measured 0.25 s a step naive, 0.38 s self-replay).
TOOL_TRAIN = {
    **TASK_TRAIN,
    "steps_per_task": 800,
    "batch_size": 16,
    "lr": 3.0e-3,
    "warmup_steps": 50,
    "eval_every": 400,
    "checkpoint_every": 400,
    "eval_examples": 100,
}

register_stream(
    "tools",
    StreamInfo(
        tools_stream,
        source="generated arithmetic, dates and quantities; countryinfo + pycountry facts",
        task_format="[tool] question -> <call>tool: arguments</call> <result>(executor's)</result> answer",
        metric="tool_success (the executor runs the model's call; malformed_calls next to it)",
        model=TEXT_MODEL,
        train=TOOL_TRAIN,
    ),
)
