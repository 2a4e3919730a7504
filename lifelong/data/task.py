"""Task and Stream: what a continual-learning run trains on, in order, and how a prompt-target task's
examples become text (`Template`, `PromptFormat`; lifelong/data/render.py renders them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TaskKind = Literal["text", "prompt_target", "preference", "tool", "edit"]
MetricName = Literal[
    "exact_match",
    "exact_match_strict",
    "accuracy",
    "loss",
    "chrf",
    "bleu",
    "entity_f1",
    "preference_accuracy",
    "tool_success",
    "reliability",
]
Overlong = Literal["clip", "skip", "error"]
Turn = tuple[str, str]  # (role, content) of a chat message
DPO_BETA = 0.1  # DPO's beta (Rafailov et al. 2023): how far from the reference the policy may move
# An edit task's held-out examples, in this order: the edit prompts (scored against the new target:
# reliability), their paraphrases (the new target: generality) and neighbour prompts about facts no
# edit touches (the initial model's own answer: locality).
EDIT_PARTS = ("edit", "paraphrase", "neighbour")


@dataclass(frozen=True)
class Example:
    """One example. Text tasks use `prompt` for the text and leave `target` empty; preference tasks
    hold the chosen answer in `target` and the rejected one in `rejected`. `context` holds the chat
    turns before the final user turn (`prompt`) of a row given as `messages`."""

    prompt: str
    target: str = ""
    rejected: str = ""
    context: tuple[Turn, ...] = ()


@dataclass(frozen=True)
class Document:
    """A text a task brings to read (a retrieval method's memory stores it; fine-tuning methods train on
    the task's questions instead). `key` names what the document gives a value of ("capital of
    Zorbia"): a later document with the same key supersedes it; "" supersedes nothing."""

    text: str
    key: str = ""


@dataclass(frozen=True)
class Revision:
    """A held-out answer that changes when a later task arrives: from task `task` on (0-based, once it
    has arrived), eval example `example` of this task is right with `target` (the newest value of a
    fact that a later document restates)."""

    example: int
    task: int
    target: str


@dataclass(frozen=True)
class Template:
    """The text around a prompt-target example's input: `instruction` (a line naming the task and its
    options), `input_prefix` + the input, `answer_cue` (where the answer starts); the target follows as
    `target_prefix` + target. The loss/target boundary stays at the target."""

    instruction: str = ""
    input_prefix: str = ""
    answer_cue: str = ""
    target_prefix: str = ""

    def prompt(self, text: str) -> str:
        head = f"{self.instruction}\n" if self.instruction else ""
        return f"{head}{self.input_prefix}{text}{self.answer_cue}"


@dataclass(frozen=True)
class PromptFormat:
    """How a prompt-target task's examples become token rows. The defaults are the built-in synthetic
    streams' exact rows: `[bos?] + task token + prompt + target + eos`, no template, plain text."""

    template: Template | None = None  # None: the prompt as it is
    chat: bool = False  # render through the tokenizer's chat template (user turn -> assistant turn)
    system: str | None = None  # chat: a system message before the user turn
    task_token: bool = True  # start every row with the task's token
    max_tokens: int | None = None  # a row's length limit (the model's context is always one)
    overlong: Overlong = "clip"  # a longer row: its input clipped by tokens, skipped, or an error


@dataclass
class Task:
    """A task of the stream.

    kind "text" trains on raw text (next-token loss) and is scored by held-out loss; kind
    "prompt_target" trains on prompt -> target and is scored by exact match of the greedy
    generation or by accuracy over the task's label set; kind "preference" trains with DPO on
    (prompt, chosen, rejected) and is scored by preference accuracy; kind "tool" trains on a question
    -> a tool call, its result and the final answer (`target` in lifelong/tools/executor.py's format;
    the result's tokens are not trained) and is scored by `tool_success`, the executor running the
    model's own calls; kind "edit" trains on edit prompt -> new target and is scored by reliability,
    its held-out examples being `parts` blocks (EDIT_PARTS, lifelong/data/scenarios/edits.py). Every
    sequence starts with `token` (unless the format says `task_token: false`).
    """

    name: str
    kind: TaskKind
    train: list[Example]
    eval: list[Example]
    metric: MetricName
    token: str
    description: str = ""
    format: PromptFormat = field(default_factory=PromptFormat)
    beta: float = DPO_BETA  # preference tasks: DPO's beta, in training and in the scored margin
    parts: tuple[int, ...] = ()  # edit tasks: how many `eval` examples each of EDIT_PARTS holds, in order
    documents: list[Document] = field(default_factory=list)  # what the task brings to read (`facts`)
    revisions: list[Revision] = field(default_factory=list)  # eval answers that later tasks change

    def choices(self) -> list[str]:
        """The label set for the accuracy metric: every distinct target, in first-seen order."""
        return list(dict.fromkeys(ex.target for ex in [*self.train, *self.eval]))


@dataclass
class Stream:
    """An ordered list of tasks; row k of the accuracy matrix is measured after task k."""

    name: str
    tasks: list[Task] = field(default_factory=list)
    # Whitespace-separated symbols of a synthetic stream: a tiny preset model then gets a word-level
    # tokenizer over exactly these; None means a byte-level tokenizer.
    vocabulary: list[str] | None = None
    # Evaluated-never-trained sets (`keep: general`): extra columns of the accuracy matrix, named
    # `suite/set`, scored with the model as it is; methods see only `tasks`.
    kept: list[Task] = field(default_factory=list)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def __len__(self) -> int:
        return len(self.tasks)
