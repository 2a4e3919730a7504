"""The tool-call format and the executor that runs a call: one fixed format for every tool.

A tool task's row is the question, the model's call, the tool's result and the final answer, each
segment on a line of its own:

    What is (23 + 48) * 2?                  <- the prompt
    <call>calculator: (23 + 48) * 2</call>  <- written by the model
    <result>142</result>                    <- written by the executor, never by the model
    142                                     <- the final answer, scored

A call is `<call>TOOL: ARGUMENTS</call>`; ARGUMENTS are in the tool's own syntax, read by its own
hand-written parser (lifelong/tools/calculator.py, dates.py, units.py, countries.py). The result of
a refused call is fed back as `<result>error: REASON</result>`, and the model answers all the same.

At evaluation (lifelong/evaluate.py, `tool_success`) the model generates after the question; its
generation must start with `<call>` and close it with `</call>`, or the call is malformed. The
executor runs the call, the result's tokens are appended, and the model generates on to its answer.

`execute` never raises, whatever the text: it returns a `ToolResult`, refused with a one-line reason
for an overlong call (MAX_CALL_CHARS: a 1 MB input is refused before anything reads it), an unknown
tool, arguments out of the tool's syntax (these three are `malformed`), a tool's own limit or a
call that runs past its timeout (TIMEOUT_SECONDS, checked between the tool's steps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lifelong.tools import calculator, countries, dates, units
from lifelong.tools.base import Deadline, Malformed, Refused

CALL_OPEN, CALL_CLOSE = "<call>", "</call>"
RESULT_OPEN, RESULT_CLOSE = "<result>", "</result>"
SEGMENT = "\n"  # what starts each segment after the question: the call, the result, the answer
MAX_CALL_CHARS = 512  # a call's text between the markers
MAX_RESULT_CHARS = 200  # a result longer than this is refused (it would flood a small context)
TIMEOUT_SECONDS = 0.5  # per call; the tools' limits keep real calls under a millisecond

# tool name -> run(arguments, deadline) -> result text (raises Malformed or Refused)
TOOLS: dict[str, Callable[[str, Deadline], str]] = {
    "calculator": calculator.run,
    "dates": dates.run,
    "units": units.run,
    "countries": countries.run,
}


@dataclass(frozen=True)
class ToolResult:
    """What a call gave: its result text (`ok`), or the reason it was refused. `malformed`: the
    executor could not read the call at all (too long, an unknown tool, arguments out of syntax)."""

    ok: bool
    text: str = ""
    reason: str = ""
    malformed: bool = False

    @property
    def fed_back(self) -> str:
        """The text the model reads between the result markers."""
        return self.text if self.ok else f"error: {self.reason}"


def execute(call: str, timeout: float = TIMEOUT_SECONDS) -> ToolResult:
    """Run the call `TOOL: ARGUMENTS` (the text between the call markers). Never raises."""
    if not isinstance(call, str):
        return ToolResult(False, reason="a call is text", malformed=True)
    if len(call) > MAX_CALL_CHARS:
        return ToolResult(False, reason=f"a call of over {MAX_CALL_CHARS} characters", malformed=True)
    tool, sep, args = call.partition(":")
    tool = tool.strip()
    if not sep or tool not in TOOLS:
        known = ", ".join(TOOLS)
        return ToolResult(False, reason=f"unknown tool {tool[:40]!r} (known: {known})", malformed=True)
    try:
        text = TOOLS[tool](args, Deadline.after(timeout))
    except Malformed as err:
        return ToolResult(False, reason=f"{tool}: {err}", malformed=True)
    except Refused as err:
        return ToolResult(False, reason=f"{tool}: {err}")
    except Exception as err:  # noqa: BLE001 (the contract: no input makes the executor raise)
        return ToolResult(False, reason=f"{tool}: internal error ({type(err).__name__})")
    if len(text) > MAX_RESULT_CHARS:
        return ToolResult(False, reason=f"{tool}: a result of over {MAX_RESULT_CHARS} characters")
    return ToolResult(True, text)


# ------------------------------------------------------------------ the row format
def call_segment(call: str) -> str:
    return f"{SEGMENT}{CALL_OPEN}{call}{CALL_CLOSE}"


def result_segment(result: ToolResult) -> str:
    return f"{SEGMENT}{RESULT_OPEN}{result.fed_back}{RESULT_CLOSE}"


def tool_target(call: str, result: ToolResult, answer: str) -> str:
    """A training row's target: the call, the result the executor gave, the final answer."""
    return call_segment(call) + result_segment(result) + f"{SEGMENT}{answer}"


def split_target(target: str) -> tuple[str, str, str]:
    """A target's (call, result, answer) segments, as written by `tool_target` (text before the call,
    e.g. a template's target prefix, stays with the call). ValueError if it is not in the format."""
    call_end = target.find(CALL_CLOSE)
    result_start = target.find(RESULT_OPEN, call_end)
    result_end = target.find(RESULT_CLOSE, result_start)
    if min(call_end, result_start, result_end) < 0 or CALL_OPEN not in target[:call_end]:
        raise ValueError(
            f"not a tool target ({CALL_OPEN}...{CALL_CLOSE}{RESULT_OPEN}...{RESULT_CLOSE} answer)"
        )
    call_end += len(CALL_CLOSE)
    result_end += len(RESULT_CLOSE)
    return target[:call_end], target[call_end:result_end], target[result_end:]


def find_call(generated: str) -> str | None:
    """The call a generation makes (the text between the markers), if it starts with one (after
    spaces) and closes it; None otherwise: a malformed call."""
    text = generated.lstrip()
    end = text.find(CALL_CLOSE)
    if not text.startswith(CALL_OPEN) or end < 0:
        return None
    return text[len(CALL_OPEN) : end]
