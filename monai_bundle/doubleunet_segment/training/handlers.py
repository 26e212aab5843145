"""Pieces of the training workflow that MONAI's handlers do not cover: resume, per-epoch log, curves."""

from __future__ import annotations

import csv
import logging
import re
import time
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from ..networks.weights import load_weights

__all__ = [
    "CHECKPOINT_PATTERN",
    "EpochLog",
    "attach_checkpoints",
    "latest_checkpoint",
    "prune_checkpoints",
    "start_from_weights",
]

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The newest ``checkpoint_epoch=N.pt`` written by the per-epoch CheckpointSaver, if any.

    Args:
        ckpt_dir: the run's checkpoint folder (need not exist).

    Returns:
        The file with the highest epoch number N, or None when there is none.
    """
    found = []
    for path in Path(ckpt_dir).glob("*checkpoint_epoch=*.pt"):
        m = CHECKPOINT_PATTERN.search(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return max(found)[1] if found else None


def attach_checkpoints(trainer: Engine, ckpt_dir: str | Path, objects: dict) -> None:
    """Save a whole-state checkpoint every epoch and resume from the newest one on start.

    Ignite writes checkpoints atomically (temp file + rename), so after a kill the newest file is
    whole and training picks up at the epoch after it, with optimizer and scheduler state.
    Attached after the trainer exists because the trainer is itself part of the saved state.
    Logs ``resuming from <file>`` at INFO when it resumes.

    Args:
        trainer: the ignite training engine; saved and restored with ``objects``.
        ckpt_dir: folder for ``checkpoint_epoch=N.pt``.
        objects: the other state to save and restore by name (network, optimizer, scheduler, ...).
    """
    from monai.handlers import CheckpointLoader, CheckpointSaver

    state = {**objects, "trainer": trainer}
    path = latest_checkpoint(ckpt_dir)
    if path is not None:
        logger.info("resuming from %s", path)
        CheckpointLoader(load_path=str(path), load_dict=state, map_location="cpu").attach(trainer)
    saver = CheckpointSaver(save_dir=str(ckpt_dir), save_dict=state, save_interval=1, epoch_level=True, n_saved=1)
    saver.attach(trainer)
    # The saver only prunes files it wrote itself: drop those left by the run that was resumed.
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: prune_checkpoints(ckpt_dir))


def start_from_weights(network: torch.nn.Module, weights: str | Path | None, ckpt_dir: str | Path) -> None:
    """Fine-tune: start a new run from trained weights (e.g. the shipped model) instead of from scratch.

    A run that already has a checkpoint resumes from it instead, so a killed fine-tune does not
    restart from the original weights. Logs ``starting from the weights in <file>`` at INFO.

    Args:
        network: the network to load into (or a DDP wrapper around it); left in training mode.
        weights: a state-dict file or training checkpoint; None or empty starts from scratch.
        ckpt_dir: the run's checkpoint folder; a checkpoint there takes precedence over ``weights``.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: the file does not fit the network (the message names the file).
    """
    if not weights or latest_checkpoint(ckpt_dir) is not None:
        return
    load_weights(getattr(network, "module", network), weights).train()  # DDP wraps it; a mismatch names the file
    logger.info("starting from the weights in %s", weights)


def prune_checkpoints(ckpt_dir: str | Path) -> None:
    """Keep only the newest per-epoch checkpoint (deleted only once a newer one is complete).

    Args:
        ckpt_dir: the run's checkpoint folder.
    """
    newest = latest_checkpoint(ckpt_dir)
    for path in Path(ckpt_dir).glob("*checkpoint_epoch=*.pt"):
        if path != newest and CHECKPOINT_PATTERN.search(path.name):
            path.unlink(missing_ok=True)


class EpochLog:
    """Appends one CSV row per epoch (loss, validation metric, learning rate, seconds) for the curves.

    Columns: ``epoch``, ``train_loss`` (mean over the epoch's iterations), ``<metric>`` (NaN before the
    first validation), ``lr`` (first parameter group) and ``seconds`` (wall time of the epoch).

    Args:
        path: the CSV file; appended to, with a header when it is new.
        evaluator: the validation engine whose ``state.metrics[metric]`` is logged.
        metric: name of the validation metric, e.g. ``val_mean_dice``.
        optimizer: the optimizer whose learning rate is logged.
    """

    def __init__(self, path: str | Path, evaluator: Engine, metric: str, optimizer: torch.optim.Optimizer) -> None:
        self.path = Path(path)
        self.evaluator = evaluator
        self.metric = metric
        self.optimizer = optimizer
        self._losses: list[float] = []
        self._start = time.monotonic()

    def attach(self, engine: Engine) -> None:
        """Register on the trainer's epoch and iteration events."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _epoch_started(self, engine: Engine) -> None:
        self._losses = []
        self._start = time.monotonic()

    def _iteration(self, engine: Engine) -> None:
        out = engine.state.output
        item = out[0] if isinstance(out, list) else out
        self._losses.append(float(item["loss"]))

    def _epoch_completed(self, engine: Engine) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        val = self.evaluator.state.metrics.get(self.metric, float("nan")) if self.evaluator.state else float("nan")
        row = {
            "epoch": engine.state.epoch,
            "train_loss": sum(self._losses) / max(len(self._losses), 1),
            self.metric: val,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": round(time.monotonic() - self._start, 1),
        }
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
