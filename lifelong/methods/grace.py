"""GRACE (Hartvigsen et al. 2023): edits kept as a codebook of keys and values at one layer, the base
frozen. For streams of edit tasks:

    lifelong run --stream edits --method grace --set stream.options.n_edits=1000

The codebook sits on the MLP of one decoder block (`layer`). An edit adds one key per token of its
new answer: the MLP's input at the position that predicts that token (the last prompt token, which is
GRACE's key, then each answer token but the last), with a deferral radius, the token that position
must produce (its label) and a value. In every forward each position's MLP input is compared with the
live keys: where the nearest one is within its radius, the MLP's output at that position is replaced
by that key's value; everywhere else the block is the base's, so prompts far from every edit are
answered as before (locality), and a paraphrase is edited only if its key falls inside a radius
(GRACE generalises little, by design).

Why a key per answer token: GRACE keys the last prompt token and was scored teacher-forced. Greedy
decoding with a KV cache runs each later answer token in a forward of its own, which never sees the
prompt's key; keying every position that predicts an answer token (the answer so far is part of its
context) makes generation meet exactly the keys that training made.

Codebook rules when a key is added (the paper's, with labels per answer token):
- the nearest live key is farther than `epsilon` + its radius: a new entry of radius `epsilon`;
- it is that close and has the same label: its radius grows to reach the new key, no new entry;
- it has another label: a new entry, and the two radii split the distance (neither over half).
Distances are root-mean-square differences per coordinate (the MLP's input is RMS-normalised, so
`epsilon` means the same at any width).

The values train in the loop, on the task's edit rows: a task's values (one per key it added) are the
run's only trainable parameters during that task. They start at the base MLP's output at their keys
and are stored divided by `lr_scale`, so the run's AdamW at `train.lr` moves them `lr_scale` times
as fast as a weight: a value is a free vector (the paper trains it at rate 1.0).

Stored: keys, radii, labels and which entries are live in `state_dict()` (safetensors); the values
are model parameters (`model.layers.<l>.mlp.grace.values.<task>` in the checkpoint's weights).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from lifelong.data.batching import EncodedSet
from lifelong.errors import UserError
from lifelong.methods.base import Compatibility, Method, MethodConfig, register


class GraceConfig(MethodConfig):
    name: Literal["grace"] = "grace"
    # The block whose MLP is wrapped; None: the middle one rounded down, (num_layers - 1) // 2 (block 0
    # of en-tiny's 2, whose keys lie further apart than block 1's: docs/methods.md, `grace`).
    layer: int | None = Field(default=None, ge=0)
    # A new key's deferral radius (RMS distance). On an en-tiny stand-in's block 0 the nearest of 1,000
    # edit keys is >= 0.05 from every neighbour prompt, 0.07-1.1 from a paraphrase: 0.02 keeps locality.
    epsilon: float = Field(default=0.02, gt=0)
    lr_scale: float = Field(default=100.0, gt=0)  # the values' learning rate over train.lr


def rms_distances(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The root-mean-square difference per coordinate between every query (Q, H) and key (K, H): (Q, K),
    in float32 (the squared form: one matmul, no (Q, K, H) tensor)."""
    q, k = queries.float(), keys.float()
    squared = (q * q).sum(-1, keepdim=True) - 2 * q @ k.T + (k * k).sum(-1)  # (Q, K)
    return squared.clamp_min(0).div(q.shape[-1]).sqrt()


def nearest(queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every query (Q, H) its nearest key (K, H): the RMS distance (Q,) and the key's index (Q,).
    The argmin is taken over |k|^2 - 2 q.k (one fused matmul; |q|^2 is added to the minimum only):
    a hundred tasks a matrix row against thousands of keys, the elementwise passes cost the most."""
    q, k = queries.float(), keys.float()
    partial = torch.addmm((k * k).sum(-1), q, k.T, alpha=-2)  # (Q, K)
    best, which = partial.min(-1)  # (Q,) each
    return (best + (q * q).sum(-1)).clamp_min(0).div(q.shape[-1]).sqrt(), which


class Codebook(torch.nn.Module):
    """The keys, radii, labels and values of every edit of the stream, one slot per key an edit can add
    (allocated at setup, so the model's structure never changes); `live` marks the entries in use.
    `hook` (a forward hook on the wrapped MLP) replaces the output where a live key is near."""

    def __init__(self, hidden: int, sizes: list[int], lr_scale: float):
        super().__init__()
        self.lr_scale = lr_scale
        self.values = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(n, hidden)) for n in sizes)
        self.starts = [sum(sizes[:t]) for t in range(len(sizes))]  # each task's first slot
        n = sum(sizes)
        # not in the model's weights (persistent=False): saved by Grace.state_dict
        self.register_buffer("keys", torch.zeros(n, hidden), persistent=False)  # (N, H)
        self.register_buffer("radii", torch.zeros(n), persistent=False)  # (N,)
        self.register_buffer("labels", torch.full((n,), -1, dtype=torch.long), persistent=False)  # (N,)
        self.register_buffer("live", torch.zeros(n, dtype=torch.bool), persistent=False)  # (N,)
        self.enabled = True
        self.refresh()

    def refresh(self) -> None:
        self.live_slots = self.live.nonzero().squeeze(1)  # (K,) the slots in use

    def lookup(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For queries (Q, H): the nearest live slot of each (Q,) and whether it is within its radius (Q,)."""
        distance, which = nearest(queries, self.keys[self.live_slots])  # (Q,) each
        slots = self.live_slots[which]
        return slots, distance <= self.radii[slots]

    def hook(self, module, args, output: torch.Tensor) -> torch.Tensor:
        if not self.enabled or not len(self.live_slots):
            return output
        flat = args[0].reshape(-1, args[0].shape[-1])  # (B*T, H): the MLP's input at every position
        slots, hit = self.lookup(flat)  # (B*T,) each
        if not bool(hit.any()):
            return output
        edited, slots = hit.nonzero().squeeze(1), slots[hit]  # the positions replaced, their slots
        values = torch.cat(list(self.values))[slots] * self.lr_scale  # (E, H)
        replaced = output.reshape(flat.shape).index_put((edited,), values.to(output.dtype))  # (B*T, H)
        return replaced.view_as(output)

    @torch.no_grad()
    def add(self, slot: int, key: torch.Tensor, label: int, epsilon: float) -> str:
        """Insert `key` (H,) with `label` for `slot` by GRACE's rules: "added", "expanded" (an entry of
        the same label grew to cover it; the slot stays unused) or "split" (added, radii split)."""
        outcome = "added"
        if len(self.live_slots):
            distance = rms_distances(key[None], self.keys[self.live_slots])[0]  # (K,)
            d, which = distance.min(0)
            near, d = self.live_slots[which], float(d)
            if d <= float(self.radii[near]) + epsilon:
                if int(self.labels[near]) == label:
                    self.radii[near] = max(float(self.radii[near]), d)
                    return "expanded"
                self.radii[near] = min(float(self.radii[near]), d / 2)
                epsilon, outcome = min(epsilon, d / 2), "split"
        self.keys[slot], self.radii[slot], self.labels[slot], self.live[slot] = key, epsilon, label, True
        self.refresh()
        return outcome


class Grace(Method):
    # The trainable set (one task's values) changes at every task: under several processes the loop
    # wraps the model in DistributedDataParallel again then (train.py `rewrap`). Every process adds the
    # same keys (from all the task's rows), so the codebooks stay the same.
    compatibility = Compatibility(kind="adapter", edits_only=True, exports=False)

    def __init__(self, cfg: GraceConfig):
        super().__init__(cfg)
        self.task = -1  # the task whose keys are in the codebook and whose values train
        self.counts = {"added": 0, "expanded": 0, "split": 0}

    def setup(self, model, ctx):
        not_edits = [t.name for t in ctx.stream.tasks if t.kind != "edit"]
        if not_edits:
            raise UserError(
                f"grace edits facts: it runs on edit tasks (stream: edits), not on task {not_edits[0]!r}"
            )
        self.stream = ctx.stream
        self.mlp = wrapped_mlp(model, self.cfg.layer)
        sizes = [int((t.train.lengths - t.train.target_start).sum()) for t in ctx.stream.tasks]
        device = model.get_input_embeddings().weight.device
        self.codebook = Codebook(model.config.hidden_size, sizes, self.cfg.lr_scale).to(device)
        self.mlp.grace = self.codebook
        self.mlp.register_forward_hook(self.codebook.hook)
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def before_task(self, task_index, model):
        self.task = task_index
        keys, labels, base_out = edit_keys(
            model, self.mlp, self.codebook, self.stream.tasks[task_index].train
        )
        start = self.codebook.starts[task_index]
        for i in range(len(keys)):
            self.counts[self.codebook.add(start + i, keys[i], int(labels[i]), self.cfg.epsilon)] += 1
        with torch.no_grad():
            self.codebook.values[task_index].copy_(base_out / self.cfg.lr_scale)  # warm start
        self.select(task_index)
        own = {id(p) for p in self.codebook.values}
        extra = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in own]
        if extra:
            raise UserError(
                f"grace edits a frozen base, but {extra[0]} would train next to its values (task tokens "
                "added to a pretrained vocabulary?): run the stream without task tokens (task_token: false)"
            )

    def select(self, task_index: int) -> None:
        """Task `task_index`'s values alone trainable."""
        for t, values in enumerate(self.codebook.values):
            values.requires_grad_(t == task_index)

    def state_dict(self):
        book = self.codebook
        tensors = {"keys": book.keys, "radii": book.radii, "labels": book.labels, "live": book.live}
        return {**tensors, "task": self.task, **self.counts}

    def load_state_dict(self, state, model):
        book = self.codebook
        for name in ("keys", "radii", "labels", "live"):
            getattr(book, name).copy_(state[name])
        book.refresh()
        self.task = int(state["task"])
        self.counts = {k: int(state[k]) for k in self.counts}
        if self.task >= 0:
            self.select(self.task)


def wrapped_mlp(model: torch.nn.Module, layer: int | None, method: str = "grace") -> torch.nn.Module:
    """The MLP of decoder block `layer` (None: the middle block rounded down, (num_layers - 1) // 2)."""
    blocks = getattr(model.base_model, "layers", None)
    if blocks is None or not hasattr(blocks[0], "mlp"):
        raise UserError(f"{method} edits a decoder block's mlp: {type(model).__name__} has no layers[i].mlp")
    index = (len(blocks) - 1) // 2 if layer is None else layer
    if index >= len(blocks):
        raise UserError(
            f"{method} layer {index} does not exist: the model has {len(blocks)} blocks (0-{len(blocks) - 1})"
        )
    return blocks[index].mlp


@torch.no_grad()
def edit_keys(
    model: torch.nn.Module, mlp: torch.nn.Module, codebook: Codebook, rows: EncodedSet
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The keys an edit task adds, in row order: at every position that predicts an answer token (its
    eos included), the MLP's input (K, H), the token it predicts (K,) and the base MLP's output there
    (K, H), from one forward of the task's rows with the codebook off."""
    batch = rows.batch(torch.arange(len(rows)), loss_on="target").to(codebook.keys.device)  # (N, T)
    seen: dict[str, torch.Tensor] = {}

    def capture(module, args, output):
        seen["input"], seen["output"] = args[0], output

    handle = mlp.register_forward_hook(capture)
    was_training, codebook.enabled = model.training, False
    model.eval()
    try:
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        handle.remove()
        codebook.enabled = True
        model.train(was_training)
    predicts = batch.loss_mask[:, 1:]  # (N, T-1): position p predicts token p+1 of the answer
    rows_at, positions = predicts.nonzero(as_tuple=True)  # (K,) each, row-major
    labels = batch.input_ids[rows_at, positions + 1]  # (K,)
    return seen["input"][rows_at, positions], labels, seen["output"][rows_at, positions]


register("grace", GraceConfig, Grace)
