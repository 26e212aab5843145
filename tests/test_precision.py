"""Precision and backend choice: the reduced-precision acceptance check, its per-weights cache, the backend race."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from doubleunet_segment.inference import precision
from doubleunet_segment.inference.onnx_runtime import onnxruntime_providers

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("private_cache")


def test_precision_check_accepts_equal_masks_and_rejects_different_ones():
    images = [np.zeros((1, 8, 8, 1))]
    same = precision.check_precision(lambda img, p: np.eye(8, dtype=np.uint8)[..., None], images, "bf16")
    assert same.accepted and same.dice == 1.0 and same.images == 1
    shifted = precision.check_precision(
        lambda img, p: np.eye(8, k=int(p != "fp32"), dtype=np.uint8)[..., None], images, "bf16"
    )
    assert not shifted.accepted and shifted.dice == pytest.approx(2 * 0 / 15)
    assert not precision.check_precision(lambda img, p: img, [], "bf16").accepted


def test_precision_choice_is_cached_per_weights_file(tmp_path, monkeypatch):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    monkeypatch.setattr(precision, "reduced_precisions", lambda device: ["bf16"])
    calls = []

    def labels(img: np.ndarray, precision: str) -> np.ndarray:
        calls.append(precision)
        return (img > 0.5).astype(np.uint8)

    images = lambda: [np.random.default_rng(0).random((1, 16, 16, 2))]  # noqa: E731
    chosen, why = precision.choose_precision("auto", CPU, weights, labels, images)
    assert chosen == "bf16" and "Dice 1.0000" in why and calls == ["fp32", "bf16"]
    assert precision.choose_precision("auto", CPU, weights, labels, images)[0] == "bf16"
    assert calls == ["fp32", "bf16"]  # the second engine reuses the decision
    assert precision.choose_precision("fp32", CPU, weights, labels, images) == ("fp32", "fp32 requested")
    monkeypatch.setattr(precision, "reduced_precisions", lambda device: [])
    assert precision.choose_precision("auto", CPU, weights, labels, images)[0] == "fp32"
    with pytest.raises(ValueError):
        precision.choose_precision("int8", CPU, weights, labels, images)


def test_backend_choice_follows_the_race_and_precision(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    assert precision.choose_backend("auto", CPU, "bf16", weights, lambda: (1.0, 0.1))[0] == "torch"
    assert precision.choose_backend("torch", CPU, "fp32", weights, lambda: (1.0, 0.1))[0] == "torch"
    assert precision.choose_backend("auto", CPU, "fp32", weights, lambda: (1.0, 0.1), exportable=False)[0] == "torch"
    if "CPUExecutionProvider" in onnxruntime_providers():
        assert precision.choose_backend("auto", CPU, "fp32", weights, lambda: (1.0, 0.5))[0] == "onnx"
        assert precision.choose_backend("auto", CPU, "fp32", weights, lambda: (0.1, 0.5))[0] == "onnx"  # cached
        assert precision.choose_backend("onnx", CPU, "fp32", None, lambda: (0.0, 0.0))[0] == "onnx"
