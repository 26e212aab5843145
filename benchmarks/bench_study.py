"""Seconds per 100-slice DICOM study through the batch CLI: read, segment, write NIfTI and DICOM SEG.

A real MR volume (the MNI152 T1 template from the sample data) is written as a 100-slice DICOM MR series
(the same synthesiser the tests use), then ``doubleunet-segment`` runs on it once per shipped model.
The table gives the wall time of each stage as the CLI reports it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from dicom_synth import SynthSeries, write_series  # noqa: E402
from doubleunet_segment.catalog import read_catalog  # noqa: E402
from doubleunet_segment.inference.predictor import Predictor  # noqa: E402
from doubleunet_segment.inference.runner import segment_inputs  # noqa: E402


def mni_study(folder: Path, samples: Path, slices: int) -> Path:
    t1 = nib.load(samples / "nilearn-mni152" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    volume = np.asarray(t1.dataobj, dtype=np.float32)
    z0 = (volume.shape[2] - slices) // 2
    volume = volume[:, :, z0 : z0 + slices] * 10.0  # 0..100 template intensities as MR-like integers
    write_series(SynthSeries(volume=volume, modality="MR", description="MNI152 T1 100 slices"), folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--models", default="polyp,hippocampus")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        study = mni_study(Path(tmp) / "study", args.samples, args.slices)
        for name in args.models.split(","):
            predictor = Predictor(read_catalog()[name], device="auto")
            start = time.perf_counter()
            (result,) = segment_inputs([str(study)], Path(tmp) / name, predictor, "nifti,dicom-seg", progress="none")
            total = time.perf_counter() - start
            rows.append({"model": name, "slices": result.slices, "seconds": round(total, 1), "ok": result.ok})
            print(f"{name}: {result.slices} slices in {total:.1f} s ({predictor.device_reason})")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
