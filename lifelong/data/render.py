"""Prompt-target examples as token rows, in a task's `PromptFormat`: the template around the input,
plain text or the tokenizer's chat template, and the length limit. batching.encode_task calls
`encode_rows`; `|` below is where the target starts (what `loss_on: target` trains from):

    plain  [bos?] [task token?] instruction\\n input_prefix INPUT answer_cue | target_prefix TARGET eos
    chat   [task token?] <template start ... user turn: instruction\\n input_prefix INPUT answer_cue>
           <assistant start> | TARGET <end of turn>

A chat row ends at the template's end-of-turn token, which is then the stream's stop token (so
generation stops there). A row longer than its limit (`max_tokens`, at most the model's context) is
clipped (the input cut by tokens at a word boundary where there is one; the instruction, the cue and
the target kept), skipped, or an error, by the format's `overlong`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lifelong.data.task import Example, Task
from lifelong.errors import UserError, first_line

ROOM_FOR_INPUT = 0.5  # a template whose instruction leaves less of the limit for the input loses it
SENTINEL = "\x00lifelong-content\x00"  # stands for a message's content when the template is probed
MAX_CLIP_ROUNDS = 8  # re-renderings of a clipped row (a cut can change how the text around it tokenizes)


@dataclass
class Rows:
    """One split's rows: `fixed[i]` counts the leading tokens of row i that no example's text reaches
    (bos, task token, the chat template's start), the bound of the task's prefix."""

    rows: list[list[int]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    fixed: list[int] = field(default_factory=list)
    holes: list[tuple[int, int]] = field(default_factory=list)  # tool rows: [start, end) of the result
    clipped: int = 0
    skipped: int = 0


def model_name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or "the model"


class RowWriter:
    """Renders and tokenizes the examples of one task."""

    def __init__(self, task: Task, tokenizer, limit: int):
        self.task, self.fmt, self.tok, self.limit = task, task.format, tokenizer, limit
        self.lead = self.task_ids(tokenizer, task)
        self.heads: dict[tuple[str, ...], tuple[str, list[int]]] = {}
        self.stop_id = tokenizer.eos_token_id
        if self.fmt.chat:
            if not getattr(tokenizer, "chat_template", None):
                raise UserError(
                    f"the tokenizer of {model_name(tokenizer)} has no chat template: task {task.name!r} "
                    "needs one for format: chat (use format: plain)"
                )
            self.stop_id = self.end_of_turn()
        self.note = self.fit_instruction() if task.kind in ("prompt_target", "edit") else ""

    @staticmethod
    def task_ids(tokenizer, task: Task) -> list[int]:
        """[bos?] + [task token?] of a plain row; a chat row: the task token alone (the template has
        its own start)."""
        lead = [] if task.format.chat or tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
        if task.format.task_token:
            token_id = tokenizer.convert_tokens_to_ids(task.token)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise UserError(f"task token {task.token!r} is not in the tokenizer's vocabulary")
            lead.append(token_id)
        return lead

    def fit_instruction(self) -> str:
        """Drop the template's instruction (the whole task's: rows stay alike) if, with the longest
        target, it would leave less than ROOM_FOR_INPUT of the limit for the input."""
        template = self.fmt.template
        if template is None or not template.instruction:
            return ""
        longest = max({ex.target for ex in [*self.task.train, *self.task.eval]}, key=len)
        lead, prompt, target = self.render(Example("", longest), "")
        fixed = len(lead) + sum(map(len, self.ids([prompt, target]))) + 1
        if fixed <= ROOM_FOR_INPUT * self.limit:
            return ""
        self.fmt = dataclasses.replace(self.fmt, template=dataclasses.replace(template, instruction=""))
        return f"the instruction takes {fixed} of the {self.limit} tokens of a row: left out"

    # ------------------------------------------------------------------ text
    def messages(self, ex: Example, text: str) -> list[dict[str, str]]:
        turns = list(ex.context)
        if self.fmt.system is not None and not any(role == "system" for role, _ in turns):
            turns.insert(0, ("system", self.fmt.system))
        user = self.fmt.template.prompt(text) if self.fmt.template else text
        return [{"role": r, "content": c} for r, c in [*turns, ("user", user)]]

    def chat_text(self, messages: list[dict[str, str]]) -> str:
        try:
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as err:  # noqa: BLE001 (a jinja TemplateError: the template or the roles)
            what = f"task {self.task.name!r}: the chat template of {model_name(self.tok)}"
            raise UserError(f"{what} fails: {first_line(err)}") from None

    def end_of_turn(self) -> int:
        """The token that closes the assistant's turn: the first token the template writes after it."""
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": SENTINEL}]
        try:
            text = self.tok.apply_chat_template(probe, tokenize=False)
        except Exception as err:  # noqa: BLE001
            raise UserError(f"the chat template of {model_name(self.tok)} fails: {first_line(err)}") from None
        after = text[text.rindex(SENTINEL) + len(SENTINEL) :].strip() if SENTINEL in text else ""
        ids = self.tok(after, add_special_tokens=False)["input_ids"] if after else []
        return ids[0] if ids else self.tok.eos_token_id

    def render(self, ex: Example, text: str) -> tuple[list[int], str, str]:
        """(the row's leading tokens that no text reaches, the prompt text after them, the target text)."""
        if not self.fmt.chat:
            if ex.context:
                raise UserError(f"task {self.task.name!r}: rows given as messages need format: chat")
            template = self.fmt.template
            prompt = template.prompt(text) if template else text
            return self.lead, prompt, (template.target_prefix if template else "") + ex.target
        messages = self.messages(ex, text)
        rendered = self.chat_text(messages)
        roles = tuple(m["role"] for m in messages)  # the start depends on the turns, not their text
        if roles not in self.heads:  # the start: up to the first text of the row (the task's system is not)
            own = int(len(messages) > len(ex.context) + 1)
            probe = [*messages[:own], {**messages[own], "content": SENTINEL}, *messages[own + 1 :]]
            head = self.chat_text(probe).split(SENTINEL)[0]
            self.heads[roles] = (head, self.ids([head])[0])
        head, head_ids = self.heads[roles]
        if not rendered.startswith(head):
            raise UserError(
                f"task {self.task.name!r}: the chat template's start depends on the messages' text"
            )
        cut = len(head)
        return self.lead + head_ids, rendered[cut:], ex.target

    # ------------------------------------------------------------------ tokens
    def ids(self, texts: list[str]) -> list[list[int]]:
        return self.tok(texts, add_special_tokens=False)["input_ids"] if texts else []

    def encode(self, examples: list[Example], what: str) -> Rows:
        rendered = [self.render(ex, ex.prompt) for ex in examples]
        prompts = self.ids([r[1] for r in rendered])
        targets = self.ids([r[2] for r in rendered])
        out = Rows()
        for i, ((lead, _, _), p, t) in enumerate(zip(rendered, prompts, targets, strict=True)):
            row = [*lead, *p, *t, self.stop_id]
            if len(row) > self.limit:
                row, start = self.overlong(examples[i], len(row), f"{what} example {i}", out)
                if row is None:
                    continue
            else:
                start = len(lead) + len(p)
            out.rows.append(row)
            out.starts.append(start)
            out.fixed.append(len(lead))
        return out

    def overlong(self, ex: Example, n: int, what: str, out: Rows) -> tuple[list[int] | None, int]:
        if self.fmt.overlong == "error":
            raise UserError(
                f"task {self.task.name!r}: {what} is {n} tokens long, longer than the limit of "
                f"{self.limit} tokens (the model's context or max_tokens; overlong: clip cuts the input)"
            )
        if self.fmt.overlong == "clip":
            clipped = self.clip(ex)
            if clipped is not None:
                out.clipped += 1
                return clipped
        out.skipped += 1
        return None, 0

    def clip(self, ex: Example) -> tuple[list[int], int] | None:
        """The row with its input cut to fit the limit, or None if the rest of the row alone does not."""
        text = ex.prompt
        for _ in range(MAX_CLIP_ROUNDS):
            lead, prompt, target = self.render(ex, text)
            p, t = self.ids([prompt, target])
            row = [*lead, *p, *t, self.stop_id]
            excess = len(row) - self.limit
            if excess <= 0:
                return row, len(lead) + len(p)
            enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
            keep = len(enc["input_ids"]) - excess
            if keep < 1 or not text:
                return None
            text = cut_text(text, min(enc["offset_mapping"][keep - 1][1], len(text) - 1))
        return None


def cut_text(text: str, end: int) -> str:
    """`text[:end]`, backed off to the last space if that keeps at least half of it (no word cut)."""
    kept = text[:end]
    space = kept.rstrip().rfind(" ")
    return kept[:space].rstrip() if space >= len(kept) // 2 else kept


def common_prefix(rows: list[list[int]], bound: int) -> list[int]:
    """The tokens every row starts with, at most `bound` of them."""
    if not rows:
        return []
    first, n = rows[0], min(bound, *(len(r) for r in rows))
    for r in rows[1:]:
        while n and r[:n] != first[:n]:
            n -= 1
    return first[:n]
