"""Past one device: ``torchrun`` training with DistributedDataParallel and case-sharded batch inference.

``configs/multi_gpu_train.json`` (MONAI's overlay convention) calls these helpers so the same bundle
trains on N GPUs with NCCL, or on N CPU processes with gloo (how the tests run it). Inference needs
no process group: each rank segments cases ``rank, rank + N, ...`` of the same sorted case list.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:  # ignite is a training dependency; the inference CLI imports this module too
    from ignite.engine import Engine


def shard_of(text: str | None = None) -> tuple[int, int]:
    """(rank, world size) from ``R/N`` (``--shard``), else from torchrun's ``RANK``/``WORLD_SIZE``."""
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
    """The engine's device choice; under torchrun each rank is pinned to its own GPU first."""
    if choice != "cpu" and torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return choice


def device() -> torch.device:
    """This rank's device: its GPU (``LOCAL_RANK``) where there are GPUs, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init() -> None:
    """Join the process group torchrun set up: NCCL on GPUs, gloo on CPUs."""
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(device())


def finalize() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def wrap(network: nn.Module, on: torch.device) -> nn.Module:
    """DDP around ``network``, with synchronised BatchNorm on GPUs.

    SyncBatchNorm makes N ranks with batch B/N normalise as one process with batch B, so the loss
    curve does not depend on how the global batch is split (DoubleU-Net has 30 BatchNorms). PyTorch
    allows it only on GPUs; on CPUs each rank normalises over its own share of the batch.
    """
    if on.type == "cuda":
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
    return nn.parallel.DistributedDataParallel(network, device_ids=[on] if on.type == "cuda" else None)


class LossAllReduce:
    """Replaces each iteration's loss by its mean over ranks, so rank 0 logs the global batch's loss.

    Attach it before the loggers (first in ``train_handlers``); every rank must attach it.
    """

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not dist.is_initialized():
            return
        out = engine.state.output
        items = out if isinstance(out, list) else [out]
        for item in items:
            loss = torch.tensor(float(item["loss"]), dtype=torch.float64)
            dist.all_reduce(loss)
            item["loss"] = float(loss) / dist.get_world_size()


def attach_checkpoints(trainer: Engine, ckpt_dir: str | Path, objects: dict) -> None:
    """Per-epoch resume checkpoints saved by rank 0 and loaded by every rank."""
    from monai.handlers import CheckpointLoader

    from .training import attach_checkpoints as attach_rank0
    from .training import latest_checkpoint

    if rank() == 0:
        attach_rank0(trainer, ckpt_dir, objects)
        return
    path = latest_checkpoint(ckpt_dir)
    if path is not None:
        state = {**objects, "trainer": trainer}
        CheckpointLoader(load_path=str(path), load_dict=state, map_location="cpu").attach(trainer)
