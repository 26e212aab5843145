"""The fast paths: precision acceptance, backend choice, ONNX equivalence, OOM back-off, empty slices, prefetch."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, needs_data
from doubleunet_segment.catalog import resolve_model
from doubleunet_segment.data.cases import Case, read_volume_file
from doubleunet_segment.inference import batching, precision
from doubleunet_segment.inference.onnx_runtime import OnnxNetwork, export_onnx, onnxruntime_providers
from doubleunet_segment.inference.predictor import SKIP_EMPTY_DEFAULT, Predictor
from doubleunet_segment.networks.doubleunet import DoubleUNet

CPU = torch.device("cpu")
MNI = DATA / "nilearn-mni152" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
REAL_VOLUMES = [
    MNI,
    DATA / "pyradiomics-3d" / "nifti" / "brain1_image.nii.gz",
    DATA / "pyradiomics-3d" / "nifti" / "breast1_image.nii.gz",
    DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz",
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DOUBLEUNET_CACHE", str(tmp_path / "cache"))


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


def test_default_batch_grows_on_gpu_with_smaller_slices():
    assert batching.default_batch_size(CPU) >= 1
    cuda = torch.device("cuda")
    assert batching.default_batch_size(cuda, 256 * 256) > batching.default_batch_size(cuda, 512 * 512) >= 1


def test_oom_back_off_halves_the_batch_and_covers_every_item_once():
    seen: list[int] = []
    notes: list[str] = []

    def step(a: int, b: int) -> None:
        if b - a > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.extend(range(a, b))

    assert batching.run_in_batches(step, 21, 16, notify=notes.append) == 2
    assert seen == list(range(21)) and notes == ["out of memory: batch halved to 8"] + [
        "out of memory: batch halved to 4",
        "out of memory: batch halved to 2",
    ]


def test_oom_at_batch_one_reports_progress_and_other_errors_pass():
    def step(a: int, b: int) -> None:
        if b > 5:
            raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(batching.OutOfMemory) as err:
        batching.run_in_batches(step, 10, 4)
    assert err.value.done == 5
    with pytest.raises(ValueError):
        batching.run_in_batches(lambda a, b: (_ for _ in ()).throw(ValueError("bad")), 3, 2)


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


@needs_data
def test_engine_paths_agree_on_a_real_volume(hippo_model):
    volume = read_volume_file(REAL_VOLUMES[-1]).array[..., 14:18]
    spec = resolve_model(str(hippo_model))
    ref = Predictor(spec, "cpu", precision="fp32", backend="torch")
    assert ref.precision == "fp32" and ref.backend == "torch" and ref.inferer.channels_last
    expected = ref.predict(volume)
    if "CPUExecutionProvider" in onnxruntime_providers():
        onnx = Predictor(spec, "cpu", precision="fp32", backend="onnx")
        np.testing.assert_allclose(onnx.predict(volume), expected, atol=1e-4)
    auto = Predictor(spec, "cpu")
    assert auto.precision in ("fp32", "bf16") and auto.path_reason
    if precision.reduced_precisions(CPU):
        check = precision.check_precision(ref._labels_at, [volume], "bf16")  # real fp32 vs bf16 runs
        assert 0.0 <= check.dice <= 1.0 and check.accepted == (check.dice >= precision.MIN_DICE)


class TinyNet(torch.nn.Module):
    """A cheap stand-in network: the skipping logic is the engine's, not the model's."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@needs_data
@pytest.mark.parametrize("path", REAL_VOLUMES, ids=lambda p: p.name.split(".")[0])
def test_skipping_empty_slices_changes_only_skipped_slices(path: Path, hippo_model):
    volume = read_volume_file(path).array[:, ::2, ::2]  # every slice, fewer voxels
    spec = resolve_model(str(hippo_model))
    spec.inplane = "resize"  # one window per slice: the stand-in network is not what is tested
    engines = [
        Predictor(spec, "cpu", network=TinyNet(3), precision="fp32", backend="torch", skip_empty=skip)
        for skip in (False, True)
    ]
    empty = batching.empty_slices(volume, 2)
    full, skipped = (e.segment(volume) for e in engines)
    assert skipped.skipped == int(empty.sum()) and full.skipped == 0
    np.testing.assert_array_equal(skipped.labels[..., ~empty], full.labels[..., ~empty])
    assert not skipped.labels[..., empty].any()
    if path == MNI:
        assert empty.sum() == 34  # the template's zero-filled top and bottom
    np.testing.assert_array_equal(volume, read_volume_file(path).array[:, ::2, ::2])  # input left as it was


@needs_data
def test_empty_slice_default_follows_the_real_volume_finding(hippo_model):
    """Skipping is on by default only if the model's own labels of empty slices are background."""
    volume = read_volume_file(MNI).array[:, ::4, ::4]
    empty = batching.empty_slices(volume, 2)
    keep = np.flatnonzero(empty)[::4].tolist() + [90, 91]
    volume = volume[..., keep]
    spec = resolve_model(str(hippo_model))
    full, skipped = (
        Predictor(spec, "cpu", precision="fp32", backend="torch", skip_empty=skip).segment(volume)
        for skip in (False, True)
    )
    assert skipped.skipped == len(keep) - 2
    unchanged = np.array_equal(full.labels, skipped.labels)
    assert SKIP_EMPTY_DEFAULT is unchanged or not SKIP_EMPTY_DEFAULT


def test_prefetch_overlaps_the_next_load_and_keeps_failures_per_case():
    started = {name: threading.Event() for name in "abc"}

    def loader(name: str):
        def load():
            started[name].set()
            if name == "b":
                raise ValueError("unreadable")
            return name.upper()

        return load

    cases = [Case(n, n, "volume", loader(n)) for n in "abc"]
    out = []
    for case in batching.prefetch(cases):
        if case.name == "a":
            assert started["b"].wait(5)  # b is read while a is still being processed
        try:
            out.append(case.load())
        except ValueError as err:
            out.append(str(err))
    assert out == ["A", "unreadable", "C"]
