"""ONNX export and ONNX Runtime: the exported network gives the PyTorch network's output."""

from __future__ import annotations

import pytest
import torch
from doubleunet_segment.inference.onnx_runtime import OnnxNetwork, export_onnx
from doubleunet_segment.networks.doubleunet import DoubleUNet

pytestmark = pytest.mark.usefixtures("private_cache")


def test_onnx_export_matches_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = DoubleUNet(in_channels=1, out_channels=2).eval()
    x = torch.rand(2, 1, 40, 56)  # not multiples of 16: padding stays outside the graph
    path = export_onnx(net, tmp_path / "m.onnx")
    with torch.inference_mode():
        expected = net(x)
    got = OnnxNetwork(path)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
