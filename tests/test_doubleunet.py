"""The network's contract: shapes for any size, both stages trained, exact size, TorchScript."""

import pytest
import torch
from doubleunet_segment.networks.doubleunet import DoubleUNet


def test_learnable_parameters_match_keras_original():
    # Keras count_params() 29,297,570 minus 7,296 BatchNorm moving statistics.
    assert sum(p.numel() for p in DoubleUNet(3, 1).parameters()) == 29_290_274


@pytest.mark.parametrize("h,w", [(64, 64), (50, 70), (33, 17)])
def test_output_size_equals_input_size(h, w):
    net = DoubleUNet(3, 1).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, h, w)).shape == (1, 1, h, w)


def test_stage_shapes_table():
    """The per-stage shapes documented in monai_bundle/polyp/docs/README.md."""
    net = DoubleUNet(3, 1).eval()
    x = torch.rand(1, 3, 64, 96)
    bridge, skips = net.encoder1(x)
    assert [tuple(s.shape[1:]) for s in skips] == [(64, 64, 96), (128, 32, 48), (256, 16, 24), (512, 8, 12)]
    assert tuple(bridge.shape[1:]) == (512, 4, 6)
    assert tuple(net.aspp1(bridge).shape[1:]) == (64, 4, 6)
    out1, out2 = net.forward_stages(x)
    assert out1.shape == out2.shape == (1, 1, 64, 96)


def test_multiclass_grey_input_and_training_output_holds_both_stages():
    net = DoubleUNet(in_channels=1, out_channels=3)
    x = torch.rand(2, 1, 48, 32)
    assert net.train()(x).shape == (2, 6, 48, 32)
    assert net.eval()(x).shape == (2, 3, 48, 32)


def test_multiclass_mask_is_one_minus_background_probability():
    net = DoubleUNet(1, 3).eval()
    logits = torch.randn(1, 3, 4, 4)
    expected = 1 - torch.softmax(logits, 1)[:, :1]
    assert torch.allclose(net._mask(logits), expected)


def test_gradients_reach_both_stages():
    net = DoubleUNet(3, 1).train()
    out = net(torch.rand(1, 3, 32, 32))
    out[:, 1:].sum().backward()  # stage 2 only: its gradient must flow back through the mask into stage 1
    assert net.head2.weight.grad.abs().sum() > 0
    assert net.head1.weight.grad.abs().sum() > 0
    assert net.encoder1.stages[0][0].weight.grad.abs().sum() > 0


def test_trains_on_a_batch_of_one():
    net = DoubleUNet(3, 1).train()
    net(torch.rand(1, 3, 32, 32)).mean().backward()
    assert net.aspp1.pool_conv.weight.grad is not None


def test_rejects_unsupported_channels():
    with pytest.raises(ValueError, match="in_channels"):
        DoubleUNet(in_channels=2)


def test_torchscript_matches_eager():
    net = DoubleUNet(1, 3).eval()
    scripted = torch.jit.script(net)
    x = torch.rand(1, 1, 40, 56)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-5)
