"""The two-stage loss: MONAI's DeepSupervisionLoss over the DoubleU-Net's stage-1 and stage-2 channels."""

from __future__ import annotations

import pytest
import torch
from doubleunet_segment.training.losses import StagewiseLoss
from monai.losses import DiceCELoss


def hand_sum(output: torch.Tensor, target: torch.Tensor, k: int, weights: tuple[float, float]) -> torch.Tensor:
    """The former hand-written loss: the weighted sum of a DiceCE on each stage's channels."""
    binary = k == 1
    loss = DiceCELoss(sigmoid=binary, softmax=not binary, to_onehot_y=not binary)
    return weights[0] * loss(output[:, :k], target) + weights[1] * loss(output[:, k:], target)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.5, 2.0)])
def test_same_loss_and_gradients_as_the_hand_sum(k: int, weights: tuple[float, float]) -> None:
    generator = torch.Generator().manual_seed(k)
    output = (torch.randn(4, 2 * k, 32, 48, generator=generator) * 3).requires_grad_()
    target = torch.randint(0, max(k, 2), (4, 1, 32, 48), generator=generator).float()
    got = StagewiseLoss(k, weights=weights)(output, target)
    (got_grad,) = torch.autograd.grad(got, output)
    expected = hand_sum(output, target, k, weights)
    (expected_grad,) = torch.autograd.grad(expected, output)
    assert torch.equal(got, expected)  # bit for bit
    assert torch.equal(got_grad, expected_grad)


@pytest.mark.parametrize("k", [1, 3])
def test_eval_output_is_stage_two_alone_and_bad_channels_fail(k: int) -> None:
    output = torch.randn(2, k, 16, 16)
    target = torch.randint(0, max(k, 2), (2, 1, 16, 16)).float()
    loss = StagewiseLoss(k, weights=(0.5, 2.0))
    torch.testing.assert_close(loss(output, target), loss.loss(output, target), rtol=0, atol=0)
    with pytest.raises(ValueError, match="output channels"):
        loss(torch.randn(2, 3 * k, 16, 16), target)


def test_mixed_precision_loss_is_the_float32_loss_of_the_half_logits() -> None:
    output = (torch.randn(2, 6, 32, 32, generator=torch.Generator().manual_seed(0)) * 3).bfloat16()
    target = torch.randint(0, 3, (2, 1, 32, 32)).float()
    loss = StagewiseLoss(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(output, target)
    assert got.dtype == torch.float32
    assert torch.equal(got, loss(output.float(), target))
