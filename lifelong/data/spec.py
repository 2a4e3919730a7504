"""The schemas of a stream in a run config: where each task's examples come from (`DataSource`), a task
(`TaskSpec`) and the stream (`StreamConfig`). A leaf: it imports no lifelong module but `errors` and
`data.task`, so the data package reads these without importing `lifelong.config` (which re-exports them).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lifelong.data.task import MetricName


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataSource(_Strict):
    """Where a split's examples come from: exactly one of `file`, `hf` or `examples`."""

    file: str | None = None  # .jsonl, .json or .csv
    hf: str | None = None  # a `datasets` hub id, or a local directory written by save_to_disk
    hf_config: str | None = None
    split: str = "train"
    examples: list[dict[str, Any]] | None = None  # inline rows
    prompt_field: str = "prompt"
    target_field: str = "target"
    text_field: str = "text"
    limit: int | None = Field(default=None, ge=1)  # keep the first `limit` rows

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        given = [k for k in ("file", "hf", "examples") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'file', 'hf' or 'examples'")
        return self


class TaskSpec(_Strict):
    name: str
    kind: Literal["text", "prompt_target"] = "prompt_target"
    metric: MetricName | None = None  # default by kind
    token: str | None = None  # the token that starts every sequence; default "<name>"
    train: DataSource
    eval: DataSource | None = None
    eval_fraction: float = Field(default=0.1, gt=0, lt=1)  # held out from train if `eval` is absent

    @model_validator(mode="after")
    def _defaults(self) -> TaskSpec:
        if self.metric is None:
            self.metric = "loss" if self.kind == "text" else "exact_match"
        if self.token is None:
            self.token = f"<{self.name}>"
        if self.kind == "text" and self.metric != "loss":
            raise ValueError(f"task {self.name!r}: text tasks are scored by 'loss'")
        return self


class StreamConfig(_Strict):
    """A built-in stream (`builtin` + `options`) or a list of tasks."""

    builtin: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None
    tasks: list[TaskSpec] | None = None
    # Suites evaluated after every task but never trained (built-in streams, e.g. `general`): a
    # name, a list of names, or a mapping name -> that stream's options, e.g. {general: {n_eval: 20}}.
    keep: str | list[str] | dict[str, dict[str, Any]] | None = None

    @property
    def kept_suites(self) -> dict[str, dict[str, Any]]:
        """`keep` as a mapping: suite name -> its options."""
        if self.keep is None:
            return {}
        if isinstance(self.keep, str):
            return {self.keep: {}}
        if isinstance(self.keep, list):
            return {name: {} for name in self.keep}
        return {name: dict(options or {}) for name, options in self.keep.items()}

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"builtin": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_kind(self) -> StreamConfig:
        if (self.builtin is None) == (self.tasks is None):
            raise ValueError("give either 'builtin' or 'tasks'")
        if self.tasks is not None:
            if not self.tasks:
                raise ValueError("'tasks' is empty")
            names = [t.name for t in self.tasks]
            if len(set(names)) != len(names):
                raise ValueError("task names must be unique")
        return self
