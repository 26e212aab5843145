"""The VGG19 encoder: signal through an untrained encoder, torchvision weights loaded bit-exact, clear key errors."""

import pytest
import torch
from doubleunet_segment.networks.doubleunet import DoubleUNet
from doubleunet_segment.networks.vgg19 import TORCHVISION_INDEX, VGG19Encoder


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
