"""Shared fixtures: small models the tests make themselves (helpers live in ``helpers.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import DATA, make_model

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one thread each, for the worker and the command lines it starts,
    # rather than four threads fighting for two cores
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A cache folder of this test's own, so precision and backend choices never leak between tests."""
    monkeypatch.setenv("DOUBLEUNET_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def polyp_model(tmp_path_factory) -> Path:
    spec = {"normalization": "median", "inplane": "resize", "roi_size": [64, 64], "segments": "polyp"}
    return make_model(tmp_path_factory.mktemp("models"), "polyp_test", 3, 1, spec)


@pytest.fixture(scope="session")
def hippo_model(tmp_path_factory) -> Path:
    spec = {
        "normalization": "zscore",
        "inplane": "sliding_window",
        "roi_size": [64, 64],
        "slice_axis": 2,
        "segments": "hippocampus",
    }
    return make_model(tmp_path_factory.mktemp("models"), "hippo_test", 1, 3, spec)


@pytest.fixture(scope="session")
def hippo_slab(tmp_path_factory) -> Path:
    """Slices 15-17 of a real MR volume (MSD hippocampus_001), written as the Slicer extension writes its input:
    uncompressed NIfTI, the affine shifted so the slab stays where it was in space."""
    source = DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    if not source.is_file():
        pytest.skip(f"sample volume {source} not found")
    image = nib.load(source)
    shift = np.eye(4)
    shift[2, 3] = 15
    path = tmp_path_factory.mktemp("input") / "input.nii"
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:, :, 15:18], image.affine @ shift), path)
    return path
