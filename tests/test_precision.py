"""Precision and backend choice: the reduced-precision acceptance check, its per-weights cache, the backend race."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from doubleunet_segment import paths
from doubleunet_segment.catalog import resolve_model
from doubleunet_segment.data.datalist import load_items
from doubleunet_segment.data.image_io import read_volume_file
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
    monkeypatch.setattr(precision, "reduced_precisions", lambda device, int8=True: ["bf16"])
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
    monkeypatch.setattr(precision, "reduced_precisions", lambda device, int8=True: [])
    assert precision.choose_precision("auto", CPU, weights, labels, images)[0] == "fp32"
    with pytest.raises(ValueError):
        precision.choose_precision("int4", CPU, weights, labels, images)


def test_one_image_whose_mask_is_lost_vetoes_a_precision_the_pooled_figure_would_pass():
    """Nine large masks kept exactly and one small one lost: pooled Dice stays above MIN_DICE, the image rule
    (MIN_IMAGE_DICE) refuses."""
    images = [np.full((1, 64, 64, 1), 9.0)] * 9 + [np.full((1, 64, 64, 1), 1.0)]

    def labels(img: np.ndarray, p: str) -> np.ndarray:
        mask = np.zeros((64, 64, 1), np.uint8)
        if img.max() > 5:
            mask[:, :40] = 1  # a large structure both precisions agree on
        elif p == "fp32":
            mask[:2, :2] = 1  # a small one only float32 finds
        return mask

    check = precision.check_precision(labels, images, "int8")
    assert check.dice >= precision.MIN_DICE and check.min_dice == 0.0 and not check.accepted


def test_int8_is_used_only_where_it_passes_and_is_faster(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    same = lambda img, p: (img > 0.5).astype(np.uint8)  # noqa: E731
    images = lambda: [np.random.default_rng(0).random((1, 16, 16, 2))]  # noqa: E731
    if "CPUExecutionProvider" not in onnxruntime_providers():
        pytest.skip("onnxruntime is not installed")
    cache = precision.DecisionCache(tmp_path / "slower.json")
    chosen, why = precision.choose_precision("auto", CPU, weights, same, images, cache, race_int8=lambda: (1.0, 2.0))
    assert chosen in ("fp32", "bf16") and "int8 not faster" in why
    cache = precision.DecisionCache(tmp_path / "faster.json")
    chosen, why = precision.choose_precision("auto", CPU, weights, same, images, cache, race_int8=lambda: (1.0, 0.5))
    assert chosen == "int8" and "0.500 s vs fp32 1.000 s" in why
    # no race given (a network ONNX Runtime cannot run): int8 is not a candidate at all
    assert "int8" not in precision.choose_precision("auto", CPU, weights, same, images, cache)[1]
    with pytest.raises(ValueError, match="int8 runs through ONNX Runtime"):
        precision.choose_backend("torch", CPU, "int8", weights, lambda: (1.0, 1.0))


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


def test_a_decision_measured_on_one_cpu_kind_is_not_reused_on_another(tmp_path, monkeypatch):
    """Two VMs can share a model name ("AMD EPYC") and a home folder, yet differ in VNNI: the key tells them apart."""
    from doubleunet_segment.inference import cpu

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    name = precision.device_name(CPU)
    assert name == cpu.cpu_description()
    assert name.startswith(f"{cpu.cpu_model()} x") and torch.backends.cpu.get_cpu_capability() in name
    assert ("vnni" in name.split()) == cpu.cpu_has_vnni()
    cache = precision.DecisionCache(tmp_path / "shared.json")
    cache.put(weights, CPU, "int8", {"accepted": True})
    assert cache.get(weights, CPU, "int8")["accepted"]
    monkeypatch.setattr(cpu, "cpu_has_vnni", lambda: not cpu.VNNI_FLAGS & cpu.cpu_flags())  # the other kind
    assert precision.device_name(CPU) != name
    assert cache.get(weights, CPU, "int8") is None


@pytest.mark.skipif(not paths.sample_data().is_dir(), reason="no sample data")
def test_a_crop_sized_volume_is_checked_whole_and_a_large_one_on_its_central_slab(monkeypatch):
    """The check's unit is the case: four middle slices of a hippocampus crop held an 11-pixel sliver of one
    structure, whose 4 flipped pixels read as Dice 0.897. A volume larger than CHECK_PIXELS keeps its middle."""
    spec = resolve_model("hippocampus")
    item = load_items(paths.sample_data(), spec.bundle / "configs" / "datalist.json", "validation", 1)[0]
    volume = read_volume_file(item["image"]).array  # (1, X, Y, Z); the model slices along Y
    (whole,) = precision.validation_images(spec, 1)
    np.testing.assert_array_equal(whole, volume)

    depth = volume.shape[2]
    (four,) = precision.validation_images(spec, 1, slices=4)
    np.testing.assert_array_equal(four, volume[:, :, (depth - 4) // 2 : (depth - 4) // 2 + 4])

    monkeypatch.setattr(precision, "CHECK_PIXELS", 10 * volume.shape[1] * volume.shape[3] + 5)
    (slab,) = precision.validation_images(spec, 1)
    np.testing.assert_array_equal(slab, volume[:, :, (depth - 10) // 2 : (depth - 10) // 2 + 10])
