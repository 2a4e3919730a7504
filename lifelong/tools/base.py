"""What the tools share: the two ways a call fails (`Malformed`: not in the tool's syntax; `Refused`:
well formed, but the tool will not or cannot run it), the per-call `Deadline`, and `function_call`,
the parser of the `name(arg, arg)` form that the dates and countries tools take, and `decimal_text`,
how the calculator and the units tool write a number.

A tool is a function `run(args: str, deadline: Deadline) -> str`: the text after `tool:` in a call,
parsed by the tool's own hand-written parser (nothing is ever passed to `eval` or `exec`), and the
result as text. It raises `Malformed` or `Refused` with a one-line reason; the executor
(lifelong/tools/executor.py) turns both into a `ToolResult`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from fractions import Fraction

FUNCTION = re.compile(r"([a-z_]+)\((.*)\)", re.DOTALL)  # name(inside): the inside split by the caller


class Refused(Exception):
    """A well-formed call that the tool will not run (a limit, a division by zero, an unknown name);
    the message is the reason, in one line."""


class Malformed(Refused):
    """A call that is not in the tool's syntax: the executor counts it as a malformed call."""


@dataclass(frozen=True)
class Deadline:
    """The time a call may take, checked between steps of the work (cooperative: no thread or signal
    interrupts a step, but the size limits keep every step short, so the checks bound the call)."""

    at: float  # a `time.monotonic()` reading
    seconds: float  # the limit it was made with, for the reason given

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise Refused(f"timed out (limit {self.seconds:g} s)")


def function_call(args: str, arities: dict[str, int]) -> tuple[str, list[str]]:
    """`name(a, b)` -> ("name", ["a", "b"]), each argument stripped, for a `name` of `arities` (name ->
    its number of arguments). A one-argument function takes everything inside its parentheses, commas
    included ("Congo, The Democratic Republic of the")."""
    match = FUNCTION.fullmatch(args.strip())
    if match is None:
        raise Malformed(f"expected name(arguments), one of: {', '.join(arities)}")
    name, inside = match.groups()
    if name not in arities:
        raise Malformed(f"unknown function {name!r} (known: {', '.join(arities)})")
    parts = [inside] if arities[name] == 1 else inside.split(",")
    if len(parts) != arities[name]:
        raise Malformed(f"{name} takes {arities[name]} arguments, got {len(parts)}")
    return name, [p.strip() for p in parts]


def decimal_text(value: Fraction, decimals: int) -> str:
    """`value` rounded to `decimals` decimals (half to even), trailing zeros dropped: 142, 41.01, -0.5."""
    scaled = round(value * 10**decimals)  # an int
    whole, part = divmod(abs(scaled), 10**decimals)
    text = f"{whole}.{part:0{decimals}d}".rstrip("0").rstrip(".")
    return f"-{text}" if scaled < 0 and text != "0" else text
