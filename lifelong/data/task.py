"""Task and Stream: what a continual-learning run trains on, in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TaskKind = Literal["text", "prompt_target", "preference"]
MetricName = Literal["exact_match", "accuracy", "loss", "chrf", "bleu", "entity_f1", "preference_accuracy"]
DPO_BETA = 0.1  # DPO's beta (Rafailov et al. 2023): how far from the reference the policy may move


@dataclass(frozen=True)
class Example:
    """One example. Text tasks use `prompt` for the text and leave `target` empty; preference tasks
    hold the chosen answer in `target` and the rejected one in `rejected`."""

    prompt: str
    target: str = ""
    rejected: str = ""


@dataclass
class Task:
    """A task of the stream.

    kind "text" trains on raw text (next-token loss) and is scored by held-out loss; kind
    "prompt_target" trains on prompt -> target and is scored by exact match of the greedy
    generation or by accuracy over the task's label set; kind "preference" trains with DPO on
    (prompt, chosen, rejected) and is scored by preference accuracy. Every sequence starts with `token`.
    """

    name: str
    kind: TaskKind
    train: list[Example]
    eval: list[Example]
    metric: MetricName
    token: str
    description: str = ""
    beta: float = DPO_BETA  # preference tasks: DPO's beta, in training and in the scored margin

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

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def __len__(self) -> int:
        return len(self.tasks)
