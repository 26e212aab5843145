"""Helpers shared by the tests: the repository and sample-data roots, the data marker and small models.

Tests import these with ``from helpers import ...`` (``tests`` is on pytest's ``pythonpath``);
``conftest.py`` holds only fixtures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from doubleunet_segment.networks.doubleunet import DoubleUNet
from doubleunet_segment.paths import sample_data

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # the read-only folder beside the checkout (sample data, fixtures, API lists)
DATA = sample_data()  # $DOUBLEUNET_SAMPLES or ../shared/data: the package defines it once
KERAS_PARITY = Path(os.environ.get("KERAS_PARITY_FIXTURE", SHARED / "keras-parity"))

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"sample data folder {DATA} not found")


def make_model(folder: Path, name: str, in_channels: int, out_channels: int, spec: dict) -> Path:
    """Weights of a freshly initialised DoubleU-Net (seeded) with the sidecar spec the CLI reads."""
    torch.manual_seed(0)
    path = folder / f"{name}.pt"
    torch.save(DoubleUNet(in_channels=in_channels, out_channels=out_channels).state_dict(), path)
    (folder / f"{name}.json").write_text(json.dumps({"in_channels": in_channels, "out_channels": out_channels, **spec}))
    return path
