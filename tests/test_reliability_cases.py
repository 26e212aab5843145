"""The reliability cases not covered by their module's own tests: NRRD geometry and the bundle's exit status.

Each input is built by its ``reliability-cases/<case>/make.py`` (from public bug reports); DICOM cases are in
``test_reliability_dicom.py``, discovery and image cases in ``test_cases.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from doubleunet_segment.cli import main
from helpers import REPO, make_reliability_case, needs_cases, needs_data

pytestmark = [needs_data, needs_cases]


@pytest.mark.parametrize(
    ("case", "volume", "expected"),
    [
        ("nrrd-oblique", "oblique.nrrd", "expected_ras_affine.txt"),
        ("nrrd-space-las-ras", "las.nrrd", "expected_las.txt"),
        ("nrrd-space-las-ras", "lps.nrrd", "expected_lps.txt"),
        ("nrrd-space-las-ras", "ras.nrrd", "expected_ras.txt"),
    ],
)
def test_nrrd_geometry_lands_on_the_input_grid(tmp_path: Path, hippo_model: Path, case, volume, expected) -> None:
    """Oblique, permuted NRRDs in any ``space`` give a label map on exactly the affine the case's script states."""
    source = make_reliability_case(case, tmp_path / "in")
    out = tmp_path / "out"
    assert main([str(source / volume), "-o", str(out), "--model", str(hippo_model), "--progress", "none"]) == 0
    image = nib.load(out / volume.removesuffix(".nrrd") / "segmentation.nii.gz")
    np.testing.assert_allclose(image.affine, np.loadtxt(source / expected), atol=1e-5)
    np.testing.assert_allclose(image.get_qform(), image.get_sform(), atol=1e-5)  # qform is stored as float32


def test_bundle_inference_tells_the_calling_script_a_case_failed(tmp_path: Path, polyp_model: Path) -> None:
    """The script's two inputs (a Kvasir frame and the same frame as a 2D NRRD) both segment now; with a third,
    broken input beside them ``run inference`` exits non-zero, names it, and still writes the other two."""
    source = make_reliability_case("bundle-exit-status", tmp_path / "in")
    (source / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference"]
    bundle = REPO / "monai_bundle" / "polyp"
    cmd += ["--config_file", str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle)]
    cmd += ["--ckpt_path", str(polyp_model)]
    cmd += ["--input", str(source), "--output_dir", str(out), "--progress", "none"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "broken.nii.gz" in done.stdout + done.stderr
    assert {p.name for p in out.iterdir() if (p / "segments.json").is_file()} == {"good", "flat2d"}
    assert not (out / "broken").exists()
