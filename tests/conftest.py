"""Shared fixtures: the real sample data folder and small models the tests make themselves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from doubleunet_segment.networks.doubleunet import DoubleUNet

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DOUBLEUNET_SAMPLES", REPO.parent / "shared" / "data"))

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"sample data folder {DATA} not found")


def make_model(folder: Path, name: str, in_channels: int, out_channels: int, spec: dict) -> Path:
    """Weights of a freshly initialised DoubleU-Net (seeded) with the sidecar spec the CLI reads."""
    torch.manual_seed(0)
    path = folder / f"{name}.pt"
    torch.save(DoubleUNet(in_channels=in_channels, out_channels=out_channels).state_dict(), path)
    (folder / f"{name}.json").write_text(json.dumps({"in_channels": in_channels, "out_channels": out_channels, **spec}))
    return path


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
