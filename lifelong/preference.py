"""Direct preference optimisation (DPO, Rafailov et al. 2023) for preference tasks, and the reference
log-probs it reads.

    loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))

where pi_c, pi_r are the policy's summed log-probs of the chosen and rejected answers (given the
prompt) and ref_c, ref_r the same under a frozen reference. The reference here is the model at the
task's start: its log-probs of every training pair are computed once, in one no-grad pass
(`reference_logprobs`), kept on the task's training set and saved in checkpoints, so no second model
is held in memory. The inner quantity beta * (...) is the implicit reward margin; evaluation scores
a pair as preferred when it is > 0, against the initial model's log-probs (lifelong/evaluate.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lifelong.data.batching import EncodedSet, EncodedStream
from lifelong.losses import next_token_loss


def pair_logprobs(token_loss: torch.Tensor) -> torch.Tensor:
    """Summed answer log-probs of a pair batch, (B, 2) [chosen, rejected], from the masked next-token
    loss (2B, T-1) of its rows: the B chosen rows first, then the B rejected rows."""
    logp = -token_loss.sum(dim=1)  # (2B,)
    assert logp.shape[0] % 2 == 0, "a pair batch has an even number of rows"
    return logp.view(2, -1).T  # (B, 2)


def reward_margins(policy: torch.Tensor, reference: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    """beta * ((pi_c - ref_c) - (pi_r - ref_r)) per pair, (B,), from (B, 2) log-probs each; `beta` a
    number or one per pair, (B,)."""
    assert policy.shape == reference.shape and policy.shape[-1] == 2, (policy.shape, reference.shape)
    ratios = policy - reference.to(policy.device, policy.dtype)  # (B, 2)
    return beta * (ratios[:, 0] - ratios[:, 1])


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean DPO loss of a batch of pairs and each pair's implicit reward margin (detached), from
    the policy's and the reference's (B, 2) summed log-probs."""
    margins = reward_margins(policy, reference, beta)  # (B,)
    return -F.logsigmoid(margins).mean(), margins.detach()


@torch.no_grad()
def reference_logprobs(
    model: torch.nn.Module, data: EncodedSet, batch_size: int, limit: int | None = None
) -> torch.Tensor:
    """Summed answer log-probs (N, 2) [chosen, rejected] of the first `limit` pairs of `data` (all if
    None) under `model`, in eval mode (restored afterwards), on the CPU in float32."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n = len(data) if limit is None else min(limit, len(data))
    out = []
    try:
        for start in range(0, n, batch_size):
            units = torch.arange(start, min(start + batch_size, n))
            batch = data.batch(units).to(device)  # (2B, T): chosen rows, then rejected rows
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            token_loss, _ = next_token_loss(logits, batch.input_ids, batch.loss_mask)  # (2B, T-1)
            out.append(pair_logprobs(token_loss).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, 2))


def dpo_terms(
    token_loss: torch.Tensor, reference: torch.Tensor, beta: float
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """A preference batch's objective as the loop's loss terms ({"dpo": loss}) and what is logged
    next to them: the mean implicit reward margin and the fraction of pairs whose margin is > 0."""
    loss, margins = dpo_loss(pair_logprobs(token_loss), reference, beta)
    return {"dpo": loss}, {
        "reward_margin": margins.mean().item(),
        "reward_accuracy": (margins > 0).float().mean().item(),
    }


class References:
    """What a run's scores are measured against, for its checkpoints: the reference log-probs of the
    current task's training pairs (the model at the task's start) and of each preference task's eval
    pairs (the initial model), the latter kept on the stream's `EncodedSet.reference`; and each edit
    task's base answers (the initial model's answers to its neighbour prompts, `EncodedTask.
    base_answers`, JSON). Safetensors and JSON only, like every checkpoint part."""

    def __init__(self, stream: EncodedStream):
        self.stream = stream
        self.train: torch.Tensor | None = None  # (N, 2) of the task being trained

    def state_dict(self) -> dict[str, torch.Tensor | list[str]]:
        state: dict = {f"eval.{j}": t.eval.reference for j, t in enumerate(self.stream.tasks)}
        state |= {f"base_answers.{t.name}": t.base_answers for t in [*self.stream.tasks, *self.stream.kept]}
        state = {k: v for k, v in state.items() if v is not None}
        return state | ({"train": self.train} if self.train is not None else {})

    def load_state_dict(self, state: dict[str, torch.Tensor | list[str]]) -> None:
        for j, task in enumerate(self.stream.tasks):
            if f"eval.{j}" in state:
                task.eval.reference = state[f"eval.{j}"]
        for task in [*self.stream.tasks, *self.stream.kept]:
            if f"base_answers.{task.name}" in state:
                task.base_answers = list(state[f"base_answers.{task.name}"])
        self.train = state.get("train")
