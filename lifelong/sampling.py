"""Batched generation with a KV cache, shared by evaluation (greedy) and self-replay (sampling).

Prompts are left-padded so every row's next token sits in the last column; position ids are counted
from each row's first real token, so padding changes nothing. Sampling draws from a caller-owned
`torch.Generator`, so a run's samples depend only on its seed (and survive a resume).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import DynamicCache

from lifelong.data.batching import pad_rows

# transformers 5.24 renamed the KV-cache keyword of `forward` from `past_key_values` to `cache`.
CACHE_KEYWORDS = ("cache", "past_key_values")


def cache_keyword(model: torch.nn.Module) -> str:
    """The keyword this model's `forward` takes its KV cache by."""
    params = inspect.signature(model.forward).parameters
    return next((k for k in CACHE_KEYWORDS if k in params), "past_key_values")


def cache_in(kwargs: dict[str, Any]) -> tuple[str, Any]:
    """In a forward pre-hook's kwargs: the cache keyword used and the cache (None if absent)."""
    key = next((k for k in CACHE_KEYWORDS if kwargs.get(k) is not None), None)
    if key is None:
        key = next((k for k in CACHE_KEYWORDS if k in kwargs), "past_key_values")
    return key, kwargs.get(key)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompts: list[list[int]],
    max_new_tokens: int,
    pad_id: int,
    *,
    greedy: bool = True,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    stop_id: int | None = None,
    batch_size: int = 512,
    return_logits: bool = False,
    drop_finished: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Continue each prompt by `max_new_tokens` tokens: (N, max_new_tokens).

    Greedy decoding takes the argmax; otherwise plain ancestral sampling at `temperature` (no top-k,
    no top-p). With `stop_id`, decoding ends early once every row has produced it (rows are filled
    with `stop_id` after that); without it, every row is generated to full length. With
    `return_logits`, also the model's logits (before temperature) that predicted each new token:
    (N, max_new_tokens, V), what a teacher forward over the finished rows would give, for free.
    With `drop_finished` (and `stop_id`), a row that has produced `stop_id` leaves the batch (and the KV
    cache) instead of being decoded on: the same tokens, less work; a sampled batch draws fewer random
    numbers, so its later rows differ from those of a run without it. Its logits after the stop are 0.
    """
    was_training = model.training
    model.eval()
    try:
        chunks = [
            _generate_batch(
                model,
                prompts[i : i + batch_size],
                max_new_tokens,
                pad_id,
                greedy,
                temperature,
                generator,
                stop_id,
                return_logits,
                drop_finished and stop_id is not None,
            )
            for i in range(0, len(prompts), batch_size)
        ]
    finally:
        model.train(was_training)
    tokens = torch.cat([c[0] for c in chunks])
    return (tokens, torch.cat([c[1] for c in chunks])) if return_logits else tokens


def _generate_batch(
    model, prompts, max_new_tokens, pad_id, greedy, temperature, generator, stop_id, keep_logits, drop
):
    device = next(model.parameters()).device
    ids, mask = (x.to(device) for x in pad_rows(prompts, pad_id, side="left"))  # (B, P) each
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, P)
    cache, cache_key = DynamicCache(), cache_keyword(model)
    n = len(prompts)
    out_tokens = torch.full(
        (n, max_new_tokens), stop_id if stop_id is not None else pad_id, dtype=torch.long, device=device
    )
    live = torch.arange(n, device=device)  # the rows still decoded (all of them unless `drop`)
    done = torch.zeros(n, dtype=torch.bool, device=device)  # of the live rows
    step_ids, step_pos = ids, positions
    all_logits = []
    for t in range(max_new_tokens):
        logits = (
            model(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=step_pos,
                use_cache=True,
                **{cache_key: cache},
            )
            .logits[:, -1]
            .float()
        )  # (live, V)
        if keep_logits:
            all_logits.append(
                logits if len(live) == n else logits.new_zeros(n, logits.shape[1]).index_copy(0, live, logits)
            )
        if greedy:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        if stop_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, stop_id), nxt)
            done |= nxt == stop_id
        out_tokens[live, t] = nxt
        if stop_id is not None and bool(done.all()):
            break
        step_ids = nxt.unsqueeze(1)  # (live, 1)
        step_pos = step_pos[:, -1:] + 1  # (live, 1)
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        if drop and bool(done.any()):  # finished rows hold stop_id from here on: stop computing them
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            live, done, step_ids, step_pos, mask = (
                live[keep],
                done[keep],
                step_ids[keep],
                step_pos[keep],
                mask[keep],
            )
    if not keep_logits:
        return out_tokens, None
    logits = torch.stack(all_logits, 1)  # (B, steps, V); fewer steps than asked after an early stop
    return out_tokens, torch.nn.functional.pad(logits, (0, 0, 0, max_new_tokens - logits.shape[1]))
