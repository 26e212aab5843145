"""Past one device: ``torchrun`` training with DistributedDataParallel.

``configs/multi_gpu_train.json`` (MONAI's overlay convention) calls these helpers so the same bundle
trains on N GPUs with NCCL, or on N CPU processes with gloo (how the tests run it). Case-sharded
inference needs no process group: see :mod:`doubleunet_segment.inference.sharding`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["LossAllReduce", "attach_checkpoints", "device", "finalize", "init", "rank", "wrap"]

if TYPE_CHECKING:  # ignite is a training dependency, imported only when training runs
    from ignite.engine import Engine


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
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    """This process's rank in the group; 0 without one."""
    return dist.get_rank() if dist.is_initialized() else 0


def wrap(network: nn.Module, on: torch.device) -> nn.Module:
    """DDP around ``network``, with synchronised BatchNorm on GPUs.

    SyncBatchNorm makes N ranks with batch B/N normalise as one process with batch B, so the loss
    curve does not depend on how the global batch is split (DoubleU-Net has 30 BatchNorms). PyTorch
    allows it only on GPUs; on CPUs each rank normalises over its own share of the batch.

    Args:
        network: the network, already on ``on``.
        on: this rank's device (see :func:`device`).

    Returns:
        The DistributedDataParallel wrapper; the network itself is its ``.module``.
    """
    if on.type == "cuda":
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
    return nn.parallel.DistributedDataParallel(network, device_ids=[on] if on.type == "cuda" else None)


class LossAllReduce:
    """Replaces each iteration's loss by its mean over ranks, so rank 0 logs the global batch's loss.

    Attach it before the loggers (first in ``train_handlers``); every rank must attach it.
    """

    def attach(self, engine: Engine) -> None:
        """Run after every iteration of ``engine``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Average ``engine.state.output``'s ``loss`` (one dict or a list of them) over ranks, in place."""
        if not dist.is_initialized():
            return
        out = engine.state.output
        items = out if isinstance(out, list) else [out]
        for item in items:
            loss = torch.tensor(float(item["loss"]), dtype=torch.float64)
            dist.all_reduce(loss)
            item["loss"] = float(loss) / dist.get_world_size()


def attach_checkpoints(trainer: Engine, ckpt_dir: str | Path, objects: dict) -> None:
    """Per-epoch resume checkpoints saved by rank 0 and loaded by every rank.

    Args:
        trainer: the ignite training engine.
        ckpt_dir: folder for ``checkpoint_epoch=N.pt``, shared by all ranks.
        objects: the other state to save and restore by name (see
            :func:`doubleunet_segment.training.handlers.attach_checkpoints`).
    """
    from monai.handlers import CheckpointLoader

    from .handlers import attach_checkpoints as attach_rank0
    from .handlers import latest_checkpoint

    if rank() == 0:
        attach_rank0(trainer, ckpt_dir, objects)
        return
    path = latest_checkpoint(ckpt_dir)
    if path is not None:
        state = {**objects, "trainer": trainer}
        CheckpointLoader(load_path=str(path), load_dict=state, map_location="cpu").attach(trainer)
