"""Splits: seeded, by case, training untouched when a test section is carved out; shipped splits reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from doubleunet_segment.data.datalist import load_items, main, scan_pairs, split_pairs, volume_slices
from helpers import DATA, REPO, needs_data

PAIRS = [{"image": f"images/{i:03d}.png", "label": f"masks/{i:03d}.png"} for i in range(550)]
# the commands that made the shipped splits (each bundle's docs/README.md gives them)
SHIPPED_SPLITS = {
    "polyp": (["kvasir-seg", "cvc-clinicdb"], "0.0555556"),
    "hippocampus": (["msd-hippocampus"], "0.1"),
}


def _names(items: list[dict]) -> set[str]:
    return {d["image"] for d in items}


def test_a_test_section_is_carved_from_the_held_out_items_and_training_stays_the_same():
    before = split_pairs(PAIRS, 1 / 9, seed=42)
    after = split_pairs(PAIRS, 1 / 18, seed=42, test_fraction=1 / 18)
    assert "testing" not in before and after["training"] == before["training"]
    assert _names(after["validation"]) | _names(after["testing"]) == _names(before["validation"])
    assert not _names(after["validation"]) & _names(after["testing"])
    assert (len(after["validation"]), len(after["testing"])) == (30, 31)
    assert split_pairs(PAIRS, 1 / 18, seed=43, test_fraction=1 / 18) != after  # the seed decides


def test_fractions_that_leave_no_training_or_validation_are_refused():
    with pytest.raises(ValueError, match="no training or no validation"):
        split_pairs(PAIRS[:4], 0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="no training or no validation"):
        split_pairs(PAIRS[:10], 0.0, test_fraction=0.1)


@needs_data
@pytest.mark.parametrize("bundle", sorted(SHIPPED_SPLITS))
def test_the_shipped_split_is_disjoint_by_case_and_remade_by_its_command(bundle: str, tmp_path: Path):
    shipped = json.loads((REPO / "monai_bundle" / bundle / "configs" / "datalist.json").read_text())
    sections = [_names(shipped[k]) for k in ("training", "validation", "testing")]
    assert all(sections) and sum(map(len, sections)) == len(set().union(*sections))
    subsets, fraction = SHIPPED_SPLITS[bundle]
    assert set().union(*sections) == {f"{s}/{p['image']}" for s in subsets for p in scan_pairs(DATA / s)}
    out = tmp_path / "datalist.json"
    main([str(DATA), *subsets, "--val-fraction", fraction, "--test-fraction", fraction, "-o", str(out)])
    remade = json.loads(out.read_text())
    assert all(remade[k] == shipped[k] for k in ("training", "validation", "testing"))
    with pytest.raises(KeyError, match="no 'testing' section"):
        load_items(DATA / subsets[0], None, "testing")


@needs_data
def test_volume_slices_along_several_axes_gives_every_view_of_each_case():
    item = {"image": str(DATA / "msd-hippocampus/imagesTr/hippocampus_001.nii.gz")}
    item["label"] = item["image"].replace("imagesTr", "labelsTr")
    slices = volume_slices([item], axis=(1, 0, 2), normalization="zscore")
    one = {a: volume_slices([item], axis=a, normalization="zscore") for a in (0, 1, 2)}
    assert len(slices) == sum(len(v) for v in one.values())
    for a in (0, 1, 2):
        mine = [s for s in slices if s["axis"] == a]
        assert len(mine) == len(one[a])
        np.testing.assert_array_equal(mine[3]["image"], one[a][3]["image"])
        np.testing.assert_array_equal(mine[3]["label"], one[a][3]["label"])
    shapes = {a: next(s["image"].shape for s in slices if s["axis"] == a) for a in (0, 1, 2)}
    assert len(set(shapes.values())) == 3  # each view's planes have their own shape
