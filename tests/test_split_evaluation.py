"""Figures on a model's own split: bootstrap intervals, post-processing chosen on validation only, test used once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from doubleunet_segment.catalog import ModelSpec
from doubleunet_segment.release.split_evaluation import (
    MIN_GAIN,
    CaseOutput,
    PostProcessing,
    choose_postprocessing,
    main,
    score,
)
from doubleunet_segment.training.evaluation import bootstrap_ci
from doubleunet_segment.transforms import postprocess_labels
from helpers import REPO, needs_data


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_cases():
    rng = np.random.default_rng(0)
    few, many = rng.normal(0.8, 0.1, 20), rng.normal(0.8, 0.1, 500)
    low, high = bootstrap_ci(few)
    assert low < few.mean() < high
    assert np.subtract(*bootstrap_ci(many)[::-1]) < (high - low) / 3  # width shrinks about as 1/sqrt(n)
    assert bootstrap_ci(few) == bootstrap_ci(few)  # seeded: a summary is reproducible
    assert all(np.isnan(bootstrap_ci([0.5]))) and bootstrap_ci([0.7, 0.7]) == (0.7, 0.7)
    assert not any(np.isnan(bootstrap_ci([0.5, np.nan, 0.7])))  # NaN cases (HD95 of an empty mask) left out


def test_postprocessing_steps_each_do_their_one_job():
    labels = np.zeros((40, 40, 1), np.uint8)
    labels[5:20, 5:20] = 1
    labels[10, 10] = 0  # a hole
    labels[30, 30] = 1  # a one-pixel island
    labels[30:34, 2:6] = 1  # a 16-pixel piece (1% of the slice)
    holes = postprocess_labels(labels, 1, fill_holes=True)
    assert holes[10, 10] == 1 and holes.sum() == labels.sum() + 1
    small = postprocess_labels(labels, 1, min_component_fraction=0.005)  # under 8 pixels go
    assert small[30, 30] == 0 and small[30:34, 2:6].all() and small.sum() == labels.sum() - 1
    largest = postprocess_labels(labels, 1, largest_component=True)
    assert largest.sum() == 15 * 15 - 1
    assert labels[30, 30] == 1 and labels[10, 10] == 0  # the input is left as it was
    two = np.zeros((20, 20, 1), np.uint8)
    two[2:10, 2:10], two[5, 5] = 1, 2  # a class-2 pixel inside class 1 is not a hole to fill
    assert postprocess_labels(two, 2, fill_holes=True)[5, 5] == 2


def _case(truth: np.ndarray, probability: np.ndarray, name: str) -> CaseOutput:
    return CaseOutput(f"/data/polyps/images/{name}.png", probability[None, ..., None], truth[..., None], None, 0.0)


def test_a_step_is_chosen_only_where_it_raises_validation_dice():
    spec = ModelSpec(name="p", weights=Path("none.pt"), out_channels=1, segments="polyp")
    truth = np.zeros((32, 32), np.uint8)
    truth[4:20, 4:20] = 1
    truth[24:29, 24:29] = 1  # a second, small polyp: keeping the largest piece would lose it
    prob = np.where(truth == 1, 0.9, 0.1)
    prob[10:12, 10:12] = 0.2  # a hole in the prediction
    prob[0, 31] = 0.9  # a one-pixel false island
    prob[4:20, 3] = 0.45  # a rim that only a lower threshold takes, and it is wrong
    cases = [_case(truth, prob, f"c{i}") for i in range(3)]
    chosen, table = choose_postprocessing(cases, spec)
    assert chosen.threshold == 0.5 and chosen.fill_holes and not chosen.largest_component
    assert chosen.min_component_fraction == 0.0025  # the smallest cut that drops the 1-pixel island (3 pixels)
    kept = [r for r in table if r["kept"]]
    assert all(later["mean_dice"] >= earlier["mean_dice"] + MIN_GAIN for earlier, later in zip(kept, kept[1:]))
    perfect = score(cases, spec, chosen)
    assert perfect["mean_dice"] == pytest.approx(1.0) and perfect["groups"]["all/Polyp"]["cases"] == 3
    single = np.zeros((32, 20), np.uint8)
    single[4:20, 4:20] = 1
    one = np.where(single == 1, 0.9, 0.1)
    one[26:30, 10:14] = 0.9  # a false island of 16 pixels, over every small-piece cut (at most 1% = 6 pixels)
    chosen, _ = choose_postprocessing([_case(single, one, "one")], spec)
    assert chosen.largest_component
    clean = [_case(truth, np.where(truth == 1, 0.9, 0.1), "clean")]
    assert choose_postprocessing(clean, spec)[0] == PostProcessing()  # nothing to gain: nothing switched on


@needs_data
def test_the_test_split_is_scored_once_per_weights_file(tmp_path: Path, capsys):
    bundle = tmp_path / "hippocampus"
    source = REPO / "monai_bundle" / "hippocampus"
    shutil.copytree(source, bundle, ignore=shutil.ignore_patterns("runs", "docs", "*.ts"))
    metrics = bundle / "models" / "metrics.json"
    record = json.loads(metrics.read_text())
    assert main([str(bundle), "--test", "--limit", "2"]) == 1  # the shipped weights were tested: refused
    record.pop("split")  # as for a weights file new from ship
    metrics.write_text(json.dumps(record))
    assert main([str(bundle), "--test", "--limit", "2"]) == 0
    split = json.loads((bundle / "models" / "metrics.json").read_text())["split"]
    for section in ("validation", "test"):
        group = split[section]["groups"]["all/Anterior hippocampus"]
        low, high = group["dice_ci95"]
        assert group["cases"] == 2 and low <= group["dice"] <= high and 0.5 < group["dice"] <= 1.0
    assert split["postprocessing"]["largest_component"] is True and len(split["weights_sha256"]) == 64
    assert main([str(bundle), "--test", "--limit", "2"]) == 1  # the same weights: refused
    assert "already tested" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(bundle), "--test", "--views", "0"])  # exploring belongs on validation
    with pytest.raises(SystemExit):
        main([str(bundle), "--test", "--int8"])
    with pytest.raises(SystemExit):
        main([str(bundle), "--test", "--context", "1"])


@needs_data
def test_2p5d_weights_are_explored_on_validation_with_their_neighbouring_slices(tmp_path: Path, capsys):
    """The shipped 2.5D model runs its three-channel network on (slice - 1, slice, slice + 1); --context 0 explores
    the same weights given the slice thrice, as the 2D model it was fine-tuned from was fed: other masks."""
    bundle = REPO / "monai_bundle" / "hippocampus"
    assert main([str(bundle), "--choose-postprocessing", "--limit", "2"]) == 0
    stacked = capsys.readouterr().out
    assert main([str(bundle), "--choose-postprocessing", "--context", "0", "--limit", "2"]) == 0
    flat = capsys.readouterr().out
    assert "chosen on 2 validation cases" in flat
    first_row = lambda out: next(line for line in out.splitlines() if line.strip().startswith("baseline"))  # noqa: E731
    assert first_row(flat) != first_row(stacked)
