"""Case-sharded batch inference: N processes (``torchrun`` ranks or ``--shard R/N``) split one sorted case list.

No process group is needed: rank R segments cases ``R, R + N, ...``, so N machines or GPUs share a study
folder without talking to each other.
"""

from __future__ import annotations

import os

import torch

__all__ = ["local_device", "shard_of"]


def shard_of(text: str | None = None) -> tuple[int, int]:
    """(rank, world size) from ``R/N`` (``--shard``), else from torchrun's ``RANK``/``WORLD_SIZE``.

    Raises:
        ValueError: ``text`` is not two integers ``R/N`` with 0 <= R < N.
    """
    if text:
        try:
            rank, world = (int(v) for v in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard takes R/N such as 0/4, got {text!r}") from None
        if not 0 <= rank < world:
            raise ValueError(f"--shard {text}: R must be in 0..N-1")
        return rank, world
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def local_device(choice: str, rank: int) -> str:
    """The predictor's device choice; under torchrun each rank is pinned to its own GPU first.

    Args:
        choice: ``auto``, ``cpu`` or ``cuda``, returned unchanged.
        rank: this process's rank, used for the GPU when ``LOCAL_RANK`` is not set.
    """
    if choice != "cpu" and torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return choice
