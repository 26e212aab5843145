"""The network's contract: shapes for any size, both stages trained, exact size, TorchScript, VGG weights."""

import pytest
import torch
from doubleunet_segment.networks.doubleunet import DoubleUNet
from doubleunet_segment.networks.vgg19 import TORCHVISION_INDEX, VGG19Encoder


def test_learnable_parameters_match_keras_original():
    # Keras count_params() 29,297,570 minus 7,296 BatchNorm moving statistics.
    assert sum(p.numel() for p in DoubleUNet(3, 1).parameters()) == 29_290_274


@pytest.mark.parametrize("h,w", [(64, 64), (50, 70), (33, 17)])
def test_output_size_equals_input_size(h, w):
    net = DoubleUNet(3, 1).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, h, w)).shape == (1, 1, h, w)


def test_stage_shapes_table():
    """The per-stage shapes documented in monai_bundle/docs/README.md."""
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


def test_untrained_encoder_keeps_the_signal_through_sixteen_convs():
    torch.manual_seed(0)
    with torch.no_grad():
        bridge, skips = VGG19Encoder()(torch.rand(2, 3, 64, 64))
    assert bridge.std() > 0.25 * skips[0].std()  # PyTorch's default init left about 0.07 of it


def _torchvision_state(seed: int = 1) -> dict:
    """A state dict laid out as torchvision's vgg19 (features.N + a classifier to be ignored)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    shapes = [(m.weight.shape, m.bias.shape) for m in VGG19Encoder().conv_layers()]
    for (ws, bs), (_, _, tv) in zip(shapes, TORCHVISION_INDEX):
        state[f"features.{tv}.weight"] = torch.randn(ws, generator=g)
        state[f"features.{tv}.bias"] = torch.randn(bs, generator=g)
    state["classifier.0.weight"] = torch.randn(8, 8, generator=g)
    return state


def test_vgg_weights_arrive_bit_exact(tmp_path):
    state = _torchvision_state()
    path = tmp_path / "vgg19-test.pth"
    torch.save(state, path)
    assert [tv for _, _, tv in TORCHVISION_INDEX] == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    net = DoubleUNet(3, 1, vgg_weights=str(path))
    for conv, (_, _, tv) in zip(net.encoder1.conv_layers(), TORCHVISION_INDEX):
        assert torch.equal(conv.weight, state[f"features.{tv}.weight"])
        assert torch.equal(conv.bias, state[f"features.{tv}.bias"])


def test_vgg_missing_or_mismatched_key_is_a_clear_error(tmp_path):
    state = _torchvision_state()
    del state["features.34.bias"]
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    with pytest.raises(ValueError) as err:
        VGG19Encoder().load_torchvision_state_dict(state)
    assert "missing key features.34.bias" in str(err.value)
    assert "features.0.weight has shape (64, 1, 3, 3)" in str(err.value)
    with pytest.raises(FileNotFoundError):
        VGG19Encoder().load_torchvision_state_dict(tmp_path / "absent.pth")
