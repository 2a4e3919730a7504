"""Tools a model learns to call, one per task of the `tools` stream (lifelong/data/scenarios/tools.py):
a calculator, date arithmetic, unit conversion and country facts, each with its own small parser,
run by the executor (lifelong/tools/executor.py, which also documents the call format)."""

from lifelong.tools.executor import TOOLS, ToolResult, execute

__all__ = ["TOOLS", "ToolResult", "execute"]
