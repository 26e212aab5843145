"""Sharding batch inference: the --shard argument and torchrun's RANK / WORLD_SIZE."""

from __future__ import annotations

import pytest
from doubleunet_segment.inference.sharding import shard_of


def test_shard_arguments(monkeypatch):
    assert shard_of("1/4") == (1, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert shard_of(None) == (1, 2)
    for bad in ("4/4", "x"):
        with pytest.raises(ValueError):
            shard_of(bad)
