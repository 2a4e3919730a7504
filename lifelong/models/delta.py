"""What a run changes in a pretrained base: the task tokens' embedding rows under frozen-base methods,
and the tensors a checkpoint must hold (the rest is the base, loaded again on resume).

Task tokens added to a pretrained vocabulary get new embedding rows. A method that freezes the base
(LoRA, prompts, adapters, expansion) would leave those rows as initialised, so prompting with a task
token (self-replay) would read noise. `train_new_rows` puts PEFT's stock `TrainableTokens` layer on the
input embedding (and on a tied output embedding, sharing its weights): only those rows train, as their
own small parameter, so weight decay touches nothing else.

`BaseTracker` remembers which tensors came with the base (by identity, so a method that renames or
inserts modules does not confuse it) and which of them were trainable at some task start; a
checkpoint holds every other tensor (adapters, prompts, added blocks, token rows) plus those.
"""

from __future__ import annotations

import warnings

import torch
from peft import TrainableTokensConfig, inject_adapter_in_model

TASK_TOKENS_ADAPTER = "task_tokens"  # the PEFT adapter name of the trainable task-token rows


def train_new_rows(model: torch.nn.Module, token_ids: list[int]) -> torch.nn.Module:
    """Make the input-embedding rows `token_ids` (and the tied output rows) trainable on their own;
    every other parameter keeps its `requires_grad` (PEFT's injection would freeze them)."""
    if not token_ids:
        return model
    flags = {id(p): p.requires_grad for p in model.parameters()}
    embedding = next(n for n, m in model.named_modules() if m is model.get_input_embeddings())
    cfg = TrainableTokensConfig(target_modules=[embedding.rsplit(".", 1)[-1]], token_indices=list(token_ids))
    with warnings.catch_warnings():  # next to other adapters (intended); the tied rows are handled
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        warnings.filterwarnings("ignore", message="Model has `tie_word_embeddings=True`")
        model = inject_adapter_in_model(cfg, model, adapter_name=TASK_TOKENS_ADAPTER)
    for p in model.parameters():
        p.requires_grad_(flags.get(id(p), True))  # the new rows: not in `flags`, trainable
    return model


def token_row_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable task-token rows `train_new_rows` added (empty if none)."""
    return [p for n, p in model.named_parameters() if f"trainable_tokens_delta.{TASK_TOKENS_ADAPTER}" in n]


class BaseTracker:
    """The tensors of a pretrained base in a model, and the names of those that ever trained."""

    def __init__(self, model: torch.nn.Module):
        self.base_ids = {id(t) for t in model.state_dict(keep_vars=True).values()}
        self.trained: set[str] = set()

    def note_trainable(self, model: torch.nn.Module) -> None:
        """Record the base parameters that train now (called at every task start)."""
        self.trained |= {n for n, p in model.named_parameters() if p.requires_grad and id(p) in self.base_ids}

    def changed_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The state-dict entries that can differ from the base: not the base's, or trained."""
        state = model.state_dict(keep_vars=True)
        return {k: v.detach() for k, v in state.items() if id(v) not in self.base_ids or k in self.trained}


def load_changed(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> str | None:
    """Copy `tensors` over the model's entries of the same names; the problem (an unknown name, a
    different shape) as a phrase, or None."""
    state = model.state_dict(keep_vars=True)
    for name, value in tensors.items():
        if name not in state:
            return f"holds {name!r}, which the model does not have"
        if state[name].shape != value.shape:
            return f"holds {name!r} of shape {tuple(value.shape)}, the model's is {tuple(state[name].shape)}"
    with torch.no_grad():
        for name, value in tensors.items():
            state[name].copy_(value)
    return None
