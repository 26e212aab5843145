"""Helpers shared by the tests: the repository and sample-data roots, the data marker and small models.

Tests import these with ``from helpers import ...`` (``tests`` is on pytest's ``pythonpath``);
``conftest.py`` holds only fixtures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dicom3tools' ``dciodvfy`` (installed beside this Python) reports for a DICOM file."""
    dciodvfy = Path(sys.executable).parent / "dciodvfy"
    result = subprocess.run([str(dciodvfy), "-new", str(path)], capture_output=True, text=True, check=False)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


RELIABILITY_CASES = Path(os.environ.get("RELIABILITY_CASES", SHARED / "reliability-cases"))
needs_cases = pytest.mark.skipif(
    not RELIABILITY_CASES.is_dir(), reason=f"reliability cases {RELIABILITY_CASES} not found"
)


def make_reliability_case(name: str, out: Path) -> Path:
    """Build ``reliability-cases/<name>``'s input into ``out`` with its own ``make.py`` (as a user would reproduce
    the bug report), reading the sample data from :data:`DATA`; returns ``out``."""
    env = {**os.environ, "DOUBLEUNET_SAMPLES": str(DATA)}
    script = RELIABILITY_CASES / name / "make.py"
    subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True, env=env)
    return out
