"""Promotion of trained weights: half-precision copies and per-dataset figures."""

import torch
from doubleunet_segment.ship import half_precision, summarise


def test_half_precision_copy_loads_back_close_to_the_original(tmp_path, polyp_model):
    half = half_precision(polyp_model, tmp_path / "half.pt")
    original = torch.load(polyp_model, weights_only=True)
    state = torch.load(half, weights_only=True)
    assert state.keys() == original.keys()
    w = "encoder1.stages.0.0.weight"
    assert state[w].dtype == torch.float16
    assert torch.allclose(state[w].float(), original[w], atol=1e-3)
    assert half.stat().st_size < 0.6 * polyp_model.stat().st_size


def test_summary_groups_by_dataset_folder_and_class():
    rows = [
        {"case": "/d/kvasir-seg/images/a.jpg", "class": "Polyp", "dice": "0.8", "hd95": "nan"},
        {"case": "/d/kvasir-seg/images/b.jpg", "class": "Polyp", "dice": "0.6", "hd95": "4"},
        {"case": "/d/cvc-clinicdb/images/1.png", "class": "Polyp", "dice": "0.9", "hd95": "2"},
    ]
    summary = summarise(rows)
    assert abs(summary["groups"]["kvasir-seg/Polyp"]["dice"] - 0.7) < 1e-9
    assert summary["groups"]["kvasir-seg/Polyp"]["hd95"] == 4.0  # NaN (an empty mask) left out of the mean
    assert summary["groups"]["all/Polyp"]["cases"] == 3
    assert abs(summary["mean_dice"] - 2.3 / 3) < 1e-9
