"""Numerical parity with the authors' Keras DoubleU-Net (fixture made with TF 2.21 / Keras 3.15).

The fixture's README gives a closed-form rule for every weight; we regenerate them, load them into our
network through the Keras-name mapping, and compare both stage outputs on the fixture's real image.
"""

import json

import numpy as np
import pytest
import torch
from doubleunet_segment.networks.doubleunet import DoubleUNet
from doubleunet_segment.networks.keras_weights import closed_form_weight, load_keras_weights
from helpers import KERAS_PARITY as FIXTURE

pytestmark = pytest.mark.skipif(not (FIXTURE / "keras_weights.json").is_file(), reason=f"no fixture at {FIXTURE}")


def test_matches_keras_original_on_both_stages():
    spec = json.loads((FIXTURE / "keras_weights.json").read_text())
    assert float(spec["phase"]).is_integer(), "the rule is defined for whole-number phases"
    weights = {w["path"]: closed_form_weight(w["index"], spec["phase"], w["kind"], w["shape"]) for w in spec["weights"]}
    assert len(weights) == spec["n_weights"]
    expected = np.load(FIXTURE / "output_nhwc.npy")
    x = torch.from_numpy(np.load(FIXTURE / "input_nhwc.npy")).permute(0, 3, 1, 2).contiguous()

    model = DoubleUNet(in_channels=3, out_channels=1).eval()
    load_keras_weights(model, weights)
    with torch.no_grad():
        out1, out2 = model.forward_stages(x)
    ours = torch.cat([torch.sigmoid(out1), torch.sigmoid(out2)], dim=1).permute(0, 2, 3, 1).numpy()

    assert ours.shape == expected.shape
    diff = np.abs(ours - expected).max(axis=(0, 1, 2))
    assert diff[0] <= 1e-5, f"stage 1 differs from Keras by {diff[0]:.2e}"
    assert diff[1] <= 1e-5, f"stage 2 differs from Keras by {diff[1]:.2e}"
    # The eval-mode forward (padding path included) gives stage 2.
    with torch.no_grad():
        np.testing.assert_allclose(torch.sigmoid(model(x)).numpy(), expected[..., 1:].transpose(0, 3, 1, 2), atol=1e-5)
