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


def test_export_is_checked_and_leaves_global_state_alone(tmp_path):
    """MONAI's convert_to_onnx checks ONNX Runtime against PyTorch and reseeds the global generators: undone."""
    pytest.importorskip("onnxruntime")
    import random

    import numpy as np

    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    expected = torch.rand(3), np.random.rand(3), random.random()
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    net = DoubleUNet(in_channels=3, out_channels=1).eval()
    torch.manual_seed(1)  # the network's initialisation drew numbers; start the torch stream again
    path = export_onnx(net, tmp_path / "cache" / "m.onnx", size=32)
    assert [p.name for p in path.parent.iterdir()] == ["m.onnx"]  # no temporary file left behind
    torch.testing.assert_close(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
