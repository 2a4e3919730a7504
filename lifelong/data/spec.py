"""The schemas of a stream in a run config: where each task's examples come from (`DataSource`), a task
(`TaskSpec`), the stream (`StreamConfig`) and how prompt-target rows are written (`RowFormat`: a
template, plain or chat text, the task token, a length limit), resolved into a `PromptFormat`. A
leaf: it imports no lifelong module but `errors` and `data.task`, so the data package reads these
without importing `lifelong.config` (which re-exports them).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lifelong.data.task import DPO_BETA, MetricName, PromptFormat, Template

PLAIN_ANSWER_CUE = "\nAnswer:"  # the default cue of a plain-text template: the answer starts after it


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
    messages_field: str = "messages"  # chat rows: [{role, content}, ...], the last assistant turn the target
    chosen_field: str = "chosen"  # preference tasks: the preferred answer
    rejected_field: str = "rejected"  # preference tasks: the dispreferred answer
    limit: int | None = Field(default=None, ge=1)  # keep the first `limit` rows

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        given = [k for k in ("file", "hf", "examples") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'file', 'hf' or 'examples'")
        return self


class TemplateSpec(_Strict):
    """A prompt template: `instruction` + newline + `input_prefix` + input + `answer_cue`, then the
    target after `target_prefix` (plain rows only: in a chat row the assistant turn is the target)."""

    instruction: str = ""
    input_prefix: str = ""
    answer_cue: str | None = None  # default: "\nAnswer:" in plain rows, nothing in chat rows
    target_prefix: str = " "  # a word after the cue starts with a space, as in running text

    def resolve(self, chat: bool) -> Template:
        cue = self.answer_cue if self.answer_cue is not None else ("" if chat else PLAIN_ANSWER_CUE)
        return Template(self.instruction, self.input_prefix, cue, self.target_prefix)


class RowFormat(_Strict):
    """How prompt-target rows are written, per task or per stream (a task's own fields win); None takes
    the stream's, then the default: user tasks the default template in plain text, built-in streams
    their own format (the synthetic ones: no template)."""

    template: TemplateSpec | bool | None = None  # false: the prompt as it is; true: the default template
    format: Literal["plain", "chat"] | None = None  # chat: through the tokenizer's chat template
    system: str | None = None  # chat: a system message
    task_token: bool | None = None  # false: rows start with the template's start (chat) or bos alone
    max_tokens: int | None = Field(default=None, ge=4)  # a row's limit (the model's context always is one)
    overlong: Literal["clip", "skip", "error"] | None = None  # default clip: the input cut by tokens

    def given(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in RowFormat.model_fields if getattr(self, k) is not None}


def prompt_format(layers: list[RowFormat], base: PromptFormat | None = None) -> PromptFormat:
    """The format of a task from its `layers` (the task's fields first, then the stream's) over `base`
    (a built-in task's own format; None for a user task, which gets the default template)."""
    given: dict[str, Any] = {}
    for layer in reversed(layers):
        given |= layer.given()
    start = base or PromptFormat()
    chat = given["format"] == "chat" if "format" in given else start.chat
    template = given.get("template", start.template if base is not None else True)
    if template is True:
        template = TemplateSpec()
    if isinstance(template, TemplateSpec):
        template = template.resolve(chat)
    return PromptFormat(
        template=template or None,
        chat=chat,
        system=given.get("system", start.system),
        task_token=given.get("task_token", start.task_token),
        max_tokens=given.get("max_tokens", start.max_tokens),
        overlong=given.get("overlong", start.overlong),
    )


class TaskSpec(RowFormat):
    name: str
    kind: Literal["text", "prompt_target", "preference", "tool"] = "prompt_target"
    metric: MetricName | None = None  # default by kind
    token: str | None = None  # the token that starts every sequence; default "<name>"
    train: DataSource
    eval: DataSource | None = None
    eval_fraction: float = Field(default=0.1, gt=0, lt=1)  # held out from train if `eval` is absent
    beta: float = Field(default=DPO_BETA, gt=0)  # preference tasks: DPO's beta

    @model_validator(mode="after")
    def _defaults(self) -> TaskSpec:
        if self.metric is None:
            self.metric = {"text": "loss", "preference": "preference_accuracy", "tool": "tool_success"}.get(
                self.kind, "exact_match"
            )
        if self.token is None:
            self.token = f"<{self.name}>"
        if self.kind == "text" and self.metric != "loss":
            raise ValueError(f"task {self.name!r}: text tasks are scored by 'loss'")
        if self.kind == "text" and (self.template or self.format or self.system is not None):
            raise ValueError(f"task {self.name!r}: a text task takes no template, format or system message")
        if self.metric == "reliability":
            raise ValueError(
                f"task {self.name!r}: 'reliability' scores edit tasks, which the edits stream builds "
                "(stream: edits)"
            )
        if (self.kind == "preference") != (self.metric == "preference_accuracy"):
            raise ValueError(
                f"task {self.name!r}: preference tasks, and only they, are scored by 'preference_accuracy'"
            )
        if (self.kind == "tool") != (self.metric == "tool_success"):
            raise ValueError(f"task {self.name!r}: tool tasks, and only they, are scored by 'tool_success'")
        return self


class StreamConfig(RowFormat):
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
        for task in self.tasks or [self]:
            chat = (task.format or self.format) == "chat"
            if (task.system if task.system is not None else self.system) is not None and not chat:
                raise ValueError(f"{_where(task)}: a system message needs format: chat")
        return self


def _where(layer: RowFormat) -> str:
    return f"task {layer.name!r}" if isinstance(layer, TaskSpec) else "the stream"
