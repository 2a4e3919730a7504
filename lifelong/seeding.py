"""One seed drives everything: sub-seeds are derived from it by name, never drawn from a global RNG.

torch is imported by the functions that use it: the data package derives seeds without loading torch.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed for (seed, parts...), the same in every process and Python version."""
    key = repr((seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def generator(seed: int, *parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *parts))
    return gen


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, torch.Tensor]:
    """The global RNG states as tensors (saved with safetensors, not pickled)."""
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda.{i}"] = s
    return state


def load_rng_state(state: dict[str, torch.Tensor]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available():
        cuda = [state[k] for k in sorted(state) if k.startswith("cuda.")]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
