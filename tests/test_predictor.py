"""The predictor's engine paths on real volumes: torch, ONNX and automatic choice agree; empty slices are skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from doubleunet_segment.catalog import resolve_model
from doubleunet_segment.data.image_io import read_volume_file
from doubleunet_segment.inference import batching, precision
from doubleunet_segment.inference.onnx_runtime import onnxruntime_providers
from doubleunet_segment.inference.predictor import SKIP_EMPTY_DEFAULT, Predictor
from helpers import DATA, needs_data

CPU = torch.device("cpu")
MNI = DATA / "nilearn-mni152" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
REAL_VOLUMES = [
    MNI,
    DATA / "pyradiomics-3d" / "nifti" / "brain1_image.nii.gz",
    DATA / "pyradiomics-3d" / "nifti" / "breast1_image.nii.gz",
    DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz",
]
pytestmark = pytest.mark.usefixtures("private_cache")


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


def test_a_2d_image_is_sliced_in_its_own_plane_by_a_model_slicing_along_y(hippo_model, tmp_path):
    """A (C, X, Y, 1) image given to a slice_axis 1 model: one forward pass over the image plane, not Y strips."""
    import json
    import shutil

    from doubleunet_segment.catalog import load_model

    model = tmp_path / "hippo_axis1.pt"
    shutil.copy(hippo_model, model)
    spec_file = json.loads(hippo_model.with_suffix(".json").read_text())
    model.with_suffix(".json").write_text(json.dumps({**spec_file, "slice_axis": 1}))
    spec = resolve_model(str(model))
    assert spec.slice_axis == 1
    network = load_model(spec)
    forwards = []
    network.register_forward_hook(lambda *_: forwards.append(1))
    predictor = Predictor(spec, "cpu", network=network, precision="fp32", backend="torch", batch_size=4)
    image = np.random.default_rng(0).random((1, 40, 30, 1), dtype=np.float32)
    calls = []
    forwards.clear()
    seg = predictor.segment(image, progress=lambda done, total: calls.append((done, total)))
    assert seg.labels.shape == (40, 30, 1) and seg.probabilities.shape == (3, 40, 30, 1)
    assert len(forwards) == 1 and calls == [(1, 1)]
    forwards.clear()
    assert predictor.predict(image).shape == (3, 40, 30, 1) and len(forwards) == 1
    assert predictor.inferer.slice_axis == 1  # real volumes still slice along the spec's axis
    volume = np.random.default_rng(1).random((1, 12, 5, 3), dtype=np.float32)
    calls.clear()
    assert predictor.segment(volume, progress=lambda d, t: calls.append((d, t))).labels.shape == (12, 5, 3)
    assert calls[-1] == (5, 5)


def test_a_multi_view_model_averages_the_probabilities_of_each_of_its_axes(hippo_model, tmp_path):
    """``"slice_axis": [1, 0, 2]`` in model.json: every view segmented, probabilities averaged, labels from the mean."""
    import json
    import shutil

    from doubleunet_segment.catalog import load_model
    from doubleunet_segment.inference.inferer import DoubleUNetInferer

    def spec_with(name: str, slice_axis) -> object:
        model = tmp_path / f"{name}.pt"
        shutil.copy(hippo_model, model)
        spec_file = json.loads(hippo_model.with_suffix(".json").read_text())
        model.with_suffix(".json").write_text(json.dumps({**spec_file, "slice_axis": slice_axis}))
        return resolve_model(str(model))

    multi = spec_with("multi", [1, 0, 2])
    assert (multi.slice_axis, multi.consensus_axes, multi.views, multi.slice_axis_setting) == (
        1,
        (1, 0, 2),
        (1, 0, 2),
        [1, 0, 2],
    )
    network = load_model(multi)
    volume = (
        read_volume_file(REAL_VOLUMES[-1]).array[:, :20, :24, :16]
        if DATA.is_dir()
        else (np.random.default_rng(0).random((1, 20, 24, 16), dtype=np.float32))
    )
    kwargs = dict(network=network, precision="fp32", backend="torch", skip_empty=False, batch_size=8)
    predictor = Predictor(multi, "cpu", **kwargs)
    calls = []
    seg = predictor.segment(volume, progress=lambda d, t: calls.append((d, t)))
    singles = [Predictor(spec_with(f"axis{a}", a), "cpu", **kwargs).predict(volume) for a in (1, 0, 2)]
    np.testing.assert_allclose(seg.probabilities, np.mean(singles, axis=0), atol=1e-5)
    assert not np.allclose(singles[0], singles[1], atol=1e-3)  # the views do differ
    np.testing.assert_array_equal(seg.labels, predictor.postprocessing(seg.probabilities))
    assert calls[-1] == (20 + 24 + 16, 20 + 24 + 16) and predictor.inferer.slice_axis == 1
    np.testing.assert_allclose(predictor.predict(volume), seg.probabilities, atol=1e-6)
    # the bundle configs' inferer takes the same list and gives the same mean
    inferer = DoubleUNetInferer(3, (48, 48), [1, 0, 2], "sliding_window", sw_batch_size=8, amp=False)
    x = predictor.preprocessing(volume)[None]
    np.testing.assert_allclose(inferer(x, network.eval())[0].numpy(), seg.probabilities, atol=1e-4)
    with pytest.raises(ValueError, match="slice_axis"):
        spec_with("bad", [1, 1])
    with pytest.raises(ValueError, match="slice_axis"):
        DoubleUNetInferer(3, (48, 48), [3])
