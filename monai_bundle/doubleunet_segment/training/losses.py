"""Deep supervision over both DoubleU-Net stages, as the original trains on concat(output1, output2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import nn

__all__ = ["StagewiseLoss"]


class StagewiseLoss(DeepSupervisionLoss):
    """MONAI's :class:`~monai.losses.DeepSupervisionLoss` over the two stages of a DoubleU-Net output.

    In training mode the network returns ``2K`` channels in one tensor (stage 1 then stage 2); they are split
    into the two stages and MONAI sums the per-stage losses with ``weights``. In eval mode only stage 2
    (``K`` channels) comes, which is scored alone, so the same loss object serves validation.

    MONAI computes each stage's loss in float32: in float32 it gives this project's former hand-written sum
    bit for bit (loss and gradients, binary and 3-class, equal and unequal weights); under mixed precision
    it is the float32 loss of the half-precision logits, where the former sum, run under autocast, was
    off from it by up to 6e-5 (float16) and 6e-4 (bfloat16) on a loss of about 4-8 (random logits).

    Args:
        out_channels: K, the classes per stage.
        loss: the per-stage loss; default Dice + BCE (binary) or Dice + cross-entropy (multi-class).
        weights: weights of stage 1 and stage 2.
    """

    def __init__(
        self, out_channels: int = 1, loss: nn.Module | None = None, weights: Sequence[float] = (1.0, 1.0)
    ) -> None:
        if loss is None:
            binary = out_channels == 1
            loss = DiceCELoss(sigmoid=binary, softmax=not binary, to_onehot_y=not binary)
        super().__init__(loss, weights=[float(w) for w in weights])  # type: ignore[arg-type]
        self.out_channels = out_channels

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """The weighted sum of the per-stage losses (training output) or stage 2's loss (eval output).

        Args:
            output: logits (B, 2K, H, W) in training mode or (B, K, H, W) in eval mode.
            target: labels (B, 1, H, W): the binary mask, or class indices for ``K > 1``.

        Returns:
            The scalar loss.

        Raises:
            ValueError: ``output`` has neither K nor 2K channels.
        """
        k = self.out_channels
        if output.shape[1] == k:
            return super().forward(output, target)
        if output.shape[1] != 2 * k:
            raise ValueError(f"expected {k} or {2 * k} output channels, got {output.shape[1]}")
        return super().forward([output[:, :k], output[:, k:]], target)
