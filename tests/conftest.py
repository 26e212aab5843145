"""Shared fixtures: small models the tests make themselves (helpers live in ``helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_model


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
