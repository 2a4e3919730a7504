"""The tools and their executor: each tool's parser and results (checked by hand), hostile calls
refused with a clear reason and never a crash, and the call format's helpers."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifelong.tools import calculator, execute
from lifelong.tools.base import Deadline, Refused
from lifelong.tools.executor import (
    MAX_CALL_CHARS,
    TOOLS,
    ToolResult,
    find_call,
    split_target,
    tool_target,
)


def result_of(call: str) -> str:
    result = execute(call)
    assert result.ok, result.reason
    return result.text


def refusal(call: str, **kwargs) -> ToolResult:
    result = execute(call, **kwargs)
    assert not result.ok and result.reason and "\n" not in result.reason, result
    return result


# ------------------------------------------------------------------ calculator
@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("(23 + 48) * 2", "142"),
        ("23 + 48 * 2", "119"),  # * before +
        ("10 - 2 - 3", "5"),  # left to right
        ("48 / 4 / 3", "4"),
        ("7 / 4 - 0.5", "1.25"),
        ("0.1 + 0.2", "0.3"),  # exact, not 0.30000000000000004
        ("1 / 3", "0.333333"),  # MAX_DECIMALS, rounded
        ("2 / 3", "0.666667"),
        ("2 ** 3 ** 2", "512"),  # right to left
        ("-2 ** 2", "-4"),  # ** binds tighter than the sign, as in Python
        ("2 ** -2", "0.25"),
        ("--3", "3"),
        ("-(1.5 * 2)", "-3"),
        ("2 ** 64", "18446744073709551616"),
        ("  ( ( 7 ) )  ", "7"),
        ("3 - 3.5", "-0.5"),
        ("0 * -1", "0"),
    ],
)
def test_calculator_computes_exactly(expression, value):
    assert result_of(f"calculator: {expression}") == value


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os')", "unexpected character '_'"),
        ("os.system('ls')", "unexpected character 'o'"),
        ("1 +", "ends too early"),
        ("(1 + 2", "ends too early"),
        ("1 + 2)", "unexpected ')'"),
        ("1 2", "unexpected '2'"),
        ("", "empty expression"),
        ("1.2.3", "not a number"),
        (".5", "not a number"),
        ("* 3", "expected a number"),
        ("²", "unexpected character"),  # "²".isdigit() is true: only ASCII digits are numbers
    ],
)
def test_calculator_malformed_expressions(expression, reason):
    result = refusal(f"calculator: {expression}")
    assert result.malformed and reason in result.reason


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("2**99999999", "exponent 99999999 is over the limit of 64"),
        ("9**9**9**9", "exponent 387420489 is over the limit"),  # 9**9 is fine, 9**387420489 is not
        ("99 ** 60", "would have over 100 digits"),  # estimated, never computed
        ("10 ** 50 * 10 ** 50 * 10", "over 100 digits"),
        ("1" * 101, "over 100 digits"),
        ("2 ** 0.5", "whole number"),
        ("1 / 0", "division by zero"),
        ("1 / (2 - 2)", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("(" * 40 + "1" + ")" * 40, "nested deeper than 32 levels"),
        ("-" * 40 + "1", "nested deeper than 32 levels"),
    ],
)
def test_calculator_refuses_past_its_limits(expression, reason):
    start = time.perf_counter()
    result = refusal(f"calculator: {expression}")
    assert reason in result.reason and not result.malformed
    assert time.perf_counter() - start < 0.1


def test_calculator_deadline_is_checked_while_it_works():
    with pytest.raises(Refused, match="timed out"):
        calculator.run(" + ".join(["1"] * 50), Deadline.after(-1.0))
    assert "timed out (limit 0 s)" in refusal("calculator: 1 + 1", timeout=0.0).reason


# ------------------------------------------------------------------ dates
@pytest.mark.parametrize(
    ("call", "value"),
    [
        ("date_add(2024-03-01, 45)", "2024-04-15"),
        ("date_add(2024-03-01, -1)", "2024-02-29"),  # a leap year
        ("date_add(2023-03-01, -1)", "2023-02-28"),
        ("date_add(2023-12-31, 1)", "2024-01-01"),
        ("date_add(2024-03-01, +0)", "2024-03-01"),
        ("days_between(2024-03-01, 2024-04-15)", "45"),
        ("days_between(2024-04-15, 2024-03-01)", "-45"),
        ("days_between(2000-01-01, 2001-01-01)", "366"),
        (" date_add( 2024-03-01 ,45 ) ", "2024-04-15"),
    ],
)
def test_dates(call, value):
    assert result_of(f"dates: {call}") == value


@pytest.mark.parametrize(
    ("call", "reason", "malformed"),
    [
        ("date_add(2024-02-30, 1)", "no such day: 2024-02-30", False),
        ("date_add(9999-12-31, 1)", "outside years 1 to 9999", False),
        ("date_add(2024-03-01, 9999999)", "over the limit of 1,000,000", False),
        ("date_add(2024-03-01, 99999999)", "not a whole number of days", True),
        ("date_add(2024-3-1, 1)", "not a date in the form YYYY-MM-DD", True),
        ("date_add(2024-03-01, 1.5)", "not a whole number of days", True),
        ("date_add(2024-03-01)", "date_add takes 2 arguments, got 1", True),
        ("date_sub(2024-03-01, 1)", "unknown function 'date_sub'", True),
        ("2024-03-01 + 45", "expected name(arguments)", True),
    ],
)
def test_dates_refusals(call, reason, malformed):
    result = refusal(f"dates: {call}")
    assert reason in result.reason and result.malformed == malformed


# ------------------------------------------------------------------ units
@pytest.mark.parametrize(
    ("call", "value"),
    [
        ("12.5 m in ft", "41.01 ft"),  # 12.5 / 0.3048 = 41.010...
        ("1 mi in km", "1.61 km"),
        ("3 in in cm", "7.62 cm"),  # the unit `in` after the value, then the word `in`
        ("1 lb in g", "453.59 g"),
        ("16 oz in lb", "1 lb"),
        ("1 gal in l", "3.79 l"),
        ("100 C in F", "212 F"),
        ("-40 F in C", "-40 C"),
        ("0 C in K", "273.15 K"),
        ("1000 ml in l", "1 l"),
    ],
)
def test_units(call, value):
    assert result_of(f"units: {call}") == value


@pytest.mark.parametrize(
    ("call", "reason", "malformed"),
    [
        ("1 kg in m", "cannot convert mass (kg) to length (m)", False),
        ("1 parsec in m", "unknown unit 'parsec'", False),
        ("1 C in kg", "cannot convert temperature (C) to mass (kg)", False),
        ("1" * 16 + " m in ft", "over 15 digits", False),
        ("12.5 m to ft", "expected VALUE UNIT in UNIT", True),
        ("m in ft", "expected VALUE UNIT in UNIT", True),
    ],
)
def test_units_refusals(call, reason, malformed):
    result = refusal(f"units: {call}")
    assert reason in result.reason and result.malformed == malformed


# ------------------------------------------------------------------ countries
@pytest.mark.parametrize(
    ("call", "value"),
    [
        ("capital(France)", "Paris"),
        ("region(Japan)", "Asia"),
        ("currency(Japan)", "Yen"),
        ("currency(Germany)", "Euro"),
        ("capital(  south   KOREA )", "Seoul"),  # case and spacing aside
        ("capital(Congo, The Democratic Republic of the)", "Kinshasa"),  # commas inside the name
    ],
)
def test_countries(call, value):
    assert result_of(f"countries: {call}") == value


@pytest.mark.parametrize(
    ("call", "reason", "malformed"),
    [
        ("capital(Atlantis)", "unknown country 'Atlantis'", False),
        ("capital(Antarctica)", "no capital known for Antarctica", False),
        ("population(France)", "unknown function 'population'", True),
        ("capital France", "expected name(arguments)", True),
    ],
)
def test_countries_refusals(call, reason, malformed):
    result = refusal(f"countries: {call}")
    assert reason in result.reason and result.malformed == malformed


# ------------------------------------------------------------------ the executor
@pytest.mark.parametrize(
    ("call", "reason"),
    [
        ("weather: Paris", "unknown tool 'weather' (known: calculator, dates, units, countries)"),
        ("calculator (1 + 2)", "unknown tool 'calculator (1 + 2)'"),  # no colon
        ("", "unknown tool ''"),
        ("calculator: " + "(" * 10_000 + "1" + ")" * 10_000, f"over {MAX_CALL_CHARS} characters"),
        ("calculator: " + "1" * 1_000_000, f"over {MAX_CALL_CHARS} characters"),  # a 1 MB input
    ],
)
def test_executor_refuses_calls_it_cannot_read(call, reason):
    start = time.perf_counter()
    result = refusal(call)
    assert result.malformed and reason in result.reason
    assert time.perf_counter() - start < 0.1


def test_executor_takes_only_text():
    assert refusal(None).malformed  # type: ignore[arg-type]


def test_a_refused_result_is_fed_back_as_an_error():
    assert execute("calculator: 1 / 0").fed_back == "error: calculator: division by zero"
    assert execute("calculator: 6 * 7").fed_back == "42"


@settings(max_examples=300, deadline=None)
@given(tool=st.sampled_from([*TOOLS, "nope"]), args=st.text(max_size=120))
def test_executor_never_raises_on_any_text(tool, args):
    result = execute(f"{tool}:{args}")
    assert result.ok or (result.reason and "internal error" not in result.reason)


@settings(max_examples=300, deadline=None)
@given(args=st.text(alphabet="0123456789+-*/(). ", max_size=60))
def test_calculator_never_fails_inside_on_expression_characters(args):
    result = execute(f"calculator: {args}")
    assert result.ok or "internal error" not in result.reason


# ------------------------------------------------------------------ the format
def test_target_round_trip():
    result = execute("calculator: (23 + 48) * 2")
    target = tool_target("calculator: (23 + 48) * 2", result, result.text)
    assert target == "\n<call>calculator: (23 + 48) * 2</call>\n<result>142</result>\n142"
    assert split_target(target) == (
        "\n<call>calculator: (23 + 48) * 2</call>",
        "\n<result>142</result>",
        "\n142",
    )
    assert split_target(" " + target.strip())[0] == " <call>calculator: (23 + 48) * 2</call>"
    for bad in ("142", "<call>x</call> 142", "<result>142</result><call>x</call>"):
        with pytest.raises(ValueError, match="not a tool target"):
            split_target(bad)


def test_find_call():
    assert (
        find_call("\n <call>dates: date_add(2024-03-01, 1)</call>\n<result>")
        == "dates: date_add(2024-03-01, 1)"
    )
    assert find_call("<call>calculator: 1 +") is None  # never closed
    assert find_call("the answer is <call>calculator: 1</call>") is None  # not where the answer starts
    assert find_call("142") is None
