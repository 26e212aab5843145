"""Deep supervision over both DoubleU-Net stages, as the original trains on concat(output1, output2)."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import nn

__all__ = ["StagewiseLoss"]


class StagewiseLoss(nn.Module):
    """Applies one loss to each stage of a training-mode output and sums them with weights.

    In training mode the network returns ``2K`` channels (stage 1 then stage 2); in eval mode only
    stage 2 (``K`` channels), which is scored alone, so the same loss object serves validation.

    Args:
        loss: the per-stage loss; default Dice + BCE (binary) or Dice + cross-entropy (multi-class).
        out_channels: K, the classes per stage.
        weights: weights of stage 1 and stage 2.
    """

    def __init__(self, out_channels: int = 1, loss: nn.Module | None = None, weights=(1.0, 1.0)) -> None:
        super().__init__()
        self.out_channels = out_channels
        if loss is None:
            binary = out_channels == 1
            loss = DiceCELoss(sigmoid=binary, softmax=not binary, to_onehot_y=not binary)
        self.loss = loss
        self.weights = tuple(float(w) for w in weights)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
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
            return self.loss(output, target)
        if output.shape[1] != 2 * k:
            raise ValueError(f"expected {k} or {2 * k} output channels, got {output.shape[1]}")
        return self.weights[0] * self.loss(output[:, :k], target) + self.weights[1] * self.loss(output[:, k:], target)
