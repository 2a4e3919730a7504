"""The calculator tool: `+ - * / **` and parentheses on integers and decimals, computed exactly.

    <call>calculator: (23 + 48) * 2</call>  ->  142
    <call>calculator: 7 / 4 - 0.5</call>    ->  1.25

A recursive-descent parser written here evaluates as it parses (no `eval`, no `ast`), over exact
fractions, with Python's precedence (`**` binds tighter than unary minus and groups to the right):

    expr  := term (("+" | "-") term)*
    term  := unary (("*" | "/") unary)*
    unary := ("+" | "-") unary | power
    power := atom ("**" unary)?
    atom  := NUMBER | "(" expr ")"          NUMBER: digits, optionally "." and digits

Limits, each refused with its reason: an expression over MAX_CHARS characters, nesting (parentheses
and signs) deeper than MAX_DEPTH, a number (literal, intermediate or result, numerator and
denominator alike) over MAX_DIGITS digits, an exponent that is not a whole number or is over
MAX_EXPONENT, a power whose result would be over MAX_DIGITS digits (estimated before it is
computed), division by zero. The deadline is checked at every token. A result that is not whole is
written with up to MAX_DECIMALS decimals (rounded).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction

from lifelong.tools.base import Deadline, Malformed, Refused, decimal_text

MAX_CHARS = 256  # an expression's length
MAX_DEPTH = 32  # nested parentheses and signs: deep enough for any real expression, far from recursion limits
MAX_DIGITS = 100  # digits of any number met (10^100 is more than any question needs)
MAX_BITS = math.ceil(MAX_DIGITS * math.log2(10))  # the same bound, checked without printing the number
MAX_EXPONENT = 64  # |exponent| of `**`: 2**64 is fine, 2**99999999 is not
MAX_DECIMALS = 6  # decimals of a result that is not whole (1/3 -> 0.333333)
OPERATORS = ("**", "+", "-", "*", "/", "(", ")")  # longest first: "**" before "*"
NUMBER_CHARS = frozenset("0123456789.")  # ASCII only: "²".isdigit() is true, and so is "١"


def run(args: str, deadline: Deadline) -> str:
    """The value of the expression `args`, as text."""
    if len(args) > MAX_CHARS:
        raise Refused(f"an expression of over {MAX_CHARS} characters")
    return decimal_text(Parser(tokens(args), deadline).parse(), MAX_DECIMALS)


def tokens(text: str) -> list[str]:
    """The expression's numbers and operators, spaces dropped."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in NUMBER_CHARS:
            j = i
            while j < len(text) and text[j] in NUMBER_CHARS:
                j += 1
            out.append(number_token(text[i:j]))
            i = j
        else:
            op = next((op for op in OPERATORS if text.startswith(op, i)), None)
            if op is None:
                raise Malformed(f"unexpected character {ch!r} at position {i}")
            out.append(op)
            i += len(op)
    return out


def number_token(text: str) -> str:
    whole, dot, decimals = text.partition(".")
    if not whole or (dot and not decimals) or "." in decimals:
        raise Malformed(f"not a number: {text[:20]!r}")
    if len(whole) + len(decimals) > MAX_DIGITS:
        raise Refused(f"a number of over {MAX_DIGITS} digits")
    return text


class Parser:
    """Parses and evaluates one expression's tokens; `parse()` is the value."""

    def __init__(self, toks: list[str], deadline: Deadline):
        self.toks, self.pos, self.depth, self.deadline = toks, 0, 0, deadline

    def parse(self) -> Fraction:
        if not self.toks:
            raise Malformed("empty expression")
        value = self.expr()
        if self.pos < len(self.toks):
            raise Malformed(f"unexpected {self.toks[self.pos]!r} after a complete expression")
        return value

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> str:
        self.deadline.check()
        if self.pos >= len(self.toks):
            raise Malformed("the expression ends too early")
        self.pos += 1
        return self.toks[self.pos - 1]

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            value = checked(value + self.term() if op == "+" else value - self.term())
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            right = self.unary()
            if op == "/" and right == 0:
                raise Refused("division by zero")
            value = checked(value * right if op == "*" else value / right)
        return value

    def unary(self) -> Fraction:
        if self.peek() in ("+", "-"):
            op = self.take()
            with self.nested():
                value = self.unary()
            return -value if op == "-" else value
        return self.power()

    def power(self) -> Fraction:
        base = self.atom()
        if self.peek() != "**":
            return base
        self.take()
        with self.nested():
            exponent = self.unary()
        return raise_to(base, exponent)

    def atom(self) -> Fraction:
        tok = self.take()
        if tok == "(":
            with self.nested():
                value = self.expr()
            if self.take() != ")":
                raise Malformed("a parenthesis is not closed")
            return value
        if tok in OPERATORS:
            raise Malformed(f"expected a number, got {tok!r}")
        return Fraction(tok)

    @contextmanager
    def nested(self) -> Iterator[None]:
        """One more level of nesting inside the block, refused past MAX_DEPTH."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Refused(f"nested deeper than {MAX_DEPTH} levels")
        try:
            yield
        finally:
            self.depth -= 1


def raise_to(base: Fraction, exponent: Fraction) -> Fraction:
    """base ** exponent for a whole exponent within MAX_EXPONENT whose result fits MAX_DIGITS."""
    if exponent.denominator != 1:
        raise Refused("the exponent must be a whole number")
    if abs(exponent) > MAX_EXPONENT:
        raise Refused(f"exponent {exponent} is over the limit of {MAX_EXPONENT}")
    if base == 0 and exponent < 0:
        raise Refused("division by zero")
    power = abs(int(exponent))
    bits = max(abs(base.numerator), base.denominator).bit_length()
    if power * (bits - 1) > MAX_BITS:  # the result has at least this many bits: never computed
        raise Refused(f"the result would have over {MAX_DIGITS} digits")
    return checked(base ** int(exponent))  # at most MAX_BITS + MAX_EXPONENT bits: quick


def checked(value: Fraction) -> Fraction:
    if max(abs(value.numerator), value.denominator).bit_length() > MAX_BITS:
        raise Refused(f"a number of over {MAX_DIGITS} digits")
    return value
