"""The units tool: a quantity converted between units of one kind, from a fixed table, exactly.

    <call>units: 12.5 m in ft</call>   ->  41.01 ft
    <call>units: 100 C in F</call>     ->  212 F

Length (m, km, cm, mm, mi, yd, ft, in), mass (kg, g, lb, oz), volume (l, ml, gal: the US gallon, qt)
and temperature (C, F, K). The arithmetic is on exact fractions (the factors are the definitions:
1 ft = 0.3048 m), the result rounded to DECIMALS decimals and followed by its unit. The value is a
signed decimal of at most MAX_VALUE_DIGITS digits; units of different kinds, or unknown ones, are
refused.
"""

from __future__ import annotations

import re
from fractions import Fraction

from lifelong.tools.base import Deadline, Malformed, Refused, decimal_text

# unit -> (kind, its size in the kind's base unit: metres, kilograms, litres)
LINEAR = {
    "m": ("length", "1"),
    "km": ("length", "1000"),
    "cm": ("length", "0.01"),
    "mm": ("length", "0.001"),
    "mi": ("length", "1609.344"),
    "yd": ("length", "0.9144"),
    "ft": ("length", "0.3048"),
    "in": ("length", "0.0254"),
    "kg": ("mass", "1"),
    "g": ("mass", "0.001"),
    "lb": ("mass", "0.45359237"),
    "oz": ("mass", "0.028349523125"),
    "l": ("volume", "1"),
    "ml": ("volume", "0.001"),
    "gal": ("volume", "3.785411784"),
    "qt": ("volume", "0.946352946"),
}
# temperature unit -> (scale, offset): kelvin = (value + offset) * scale
TEMPERATURE = {"K": ("1", "0"), "C": ("1", "273.15"), "F": ("5/9", "459.67")}
UNITS = (*LINEAR, *TEMPERATURE)
QUERY = re.compile(r"([+-]?[0-9]+(?:\.[0-9]+)?) +([A-Za-z]+) +in +([A-Za-z]+)")  # ASCII digits only
MAX_VALUE_DIGITS = 15  # digits of the value: a light year in millimetres still fits
DECIMALS = 2


def run(args: str, deadline: Deadline) -> str:
    """`VALUE FROM in TO` converted: the value in TO, rounded, and TO."""
    match = QUERY.fullmatch(args.strip())
    if match is None:
        raise Malformed("expected VALUE UNIT in UNIT, e.g. 12.5 m in ft")
    value, source, target = match.groups()
    if sum(ch.isdigit() for ch in value) > MAX_VALUE_DIGITS:
        raise Refused(f"a value of over {MAX_VALUE_DIGITS} digits")
    return f"{decimal_text(convert(Fraction(value), source, target), DECIMALS)} {target}"


def kind(unit: str) -> str:
    if unit in TEMPERATURE:
        return "temperature"
    if unit not in LINEAR:
        raise Refused(f"unknown unit {unit!r} (known: {', '.join(UNITS)})")
    return LINEAR[unit][0]


def convert(value: Fraction, source: str, target: str) -> Fraction:
    if kind(source) != kind(target):
        raise Refused(f"cannot convert {kind(source)} ({source}) to {kind(target)} ({target})")
    if source in TEMPERATURE:
        (scale_a, offset_a), (scale_b, offset_b) = TEMPERATURE[source], TEMPERATURE[target]
        kelvin = (value + Fraction(offset_a)) * Fraction(scale_a)
        return kelvin / Fraction(scale_b) - Fraction(offset_b)
    return value * Fraction(LINEAR[source][1]) / Fraction(LINEAR[target][1])
