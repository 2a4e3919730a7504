"""The next-token loss, in one place: training, EWC's Fisher, evaluation and pretraining all read it."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def next_token_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position cross-entropy of the next token, masked, and the mask that counts: both (B, T-1).

    Token t is predicted at position t-1, so `loss_mask` (B, T) is read from its second column on;
    without a mask every position counts. The loss is computed in float32 whatever the logits' dtype.
    """
    logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
    ce = F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")  # (B, T-1)
    mask = torch.ones_like(ce) if loss_mask is None else loss_mask[:, 1:].to(ce.dtype)  # (B, T-1)
    return ce * mask, mask


def mean_token_loss(token_loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean over the counted positions (divided by counted tokens, never by padding)."""
    return token_loss.sum() / mask.sum().clamp(min=1.0)


def sequence_loss(token_loss: torch.Tensor) -> torch.Tensor:
    """Each row's summed loss, (B,): minus its log-likelihood over the counted positions."""
    return token_loss.sum(dim=1)
