"""Promotion of trained weights: half-precision copies, per-dataset summaries, evaluation geometry, overrides."""

import pytest
import torch
from doubleunet_segment.release.ship import half_precision, summarise


def test_half_precision_copy_loads_back_close_to_the_original(tmp_path, polyp_model):
    half = half_precision(polyp_model, tmp_path / "half.pt")
    original = torch.load(polyp_model, weights_only=True)
    state = torch.load(half, weights_only=True)
    assert state.keys() == original.keys()
    w = "encoder1.stages.0.0.weight"
    assert state[w].dtype == torch.float16
    assert state["aspp1.pool_bn.running_var"].dtype == torch.float32  # large variances would overflow float16
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


def test_candidate_is_evaluated_with_its_own_inputs_and_the_shipped_with_the_catalogs(tmp_path):
    import json
    import shutil

    from doubleunet_segment.catalog import read_bundle, read_catalog
    from doubleunet_segment.paths import bundle_dir
    from doubleunet_segment.release.ship import (
        candidate_inputs,
        evaluation_overrides,
        parse_overrides,
        shipped_inputs,
        update_spec_inputs,
    )

    assert parse_overrides(["--image_size", "[48,48]", "--datalist", "auto"]) == {
        "image_size": [48, 48],
        "datalist": "auto",
    }
    with pytest.raises(ValueError, match="--key value"):
        parse_overrides(["--slice_axis"])
    configs = bundle_dir("polyp") / "configs"
    polyp = [str(configs / "train.json"), str(configs / "evaluate.json")]
    assert candidate_inputs(polyp, []) == {"image_size": [128, 128], "in_channels": 3}  # 2D: no slice axis
    configs = bundle_dir("hippocampus") / "configs"
    hippo = [str(configs / "train.json"), str(configs / "evaluate.json")]
    # a 2.5D candidate: the slice and its two neighbours as the three input channels
    overrides = ["--slice_axis", "1", "--context", "1", "--in_channels", "3", "--num_workers", "0"]
    inputs = candidate_inputs(hippo, overrides)
    assert inputs == {"slice_axis": 1, "image_size": [48, 48], "context": 1, "in_channels": 3}

    spec = read_catalog()["hippocampus"]
    current = shipped_inputs(spec, inputs)
    # the shipped model is scored as it runs, not with the candidate's 2.5D context
    assert current == {
        "slice_axis": spec.slice_axis,
        "image_size": list(spec.roi_size),
        "context": spec.context,
        "in_channels": spec.in_channels,
    }
    evaluated = parse_overrides(evaluation_overrides(overrides, current, spec))
    assert evaluated == {"num_workers": 0, "largest_component": True, **current}
    assert parse_overrides(evaluation_overrides(overrides, inputs, spec))["context"] == 1

    copy = tmp_path / "hippocampus"
    shutil.copytree(
        bundle_dir("hippocampus") / "models", copy / "models", ignore=shutil.ignore_patterns("*.pt", "*.ts")
    )
    update_spec_inputs(copy, {"slice_axis": 2, "image_size": [64, 64], "context": 1, "in_channels": 3})
    written = json.loads((copy / "models" / "model.json").read_text())
    shipped = json.loads((bundle_dir("hippocampus") / "models" / "model.json").read_text())
    changed = ("slice_axis", "roi_size", "context", "in_channels")
    assert [written[k] for k in changed] == [2, [64, 64], 1, 3]
    assert {k: v for k, v in written.items() if k not in changed} == {
        k: v for k, v in shipped.items() if k not in changed
    }
    reread = read_bundle(copy)  # the catalog reads the written spec back as a 2.5D model
    assert (reread.context, reread.in_channels, reread.slice_axis) == (1, 3, 2)


def test_ship_refuses_malformed_overrides_with_a_usage_error(tmp_path, capsys):
    from doubleunet_segment.release.ship import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--name", "polyp", str(tmp_path), "--", "--image_size"])
    assert exit_info.value.code == 2 and "--key value pairs" in capsys.readouterr().err
    # the order the model cards and the recipe print: RUN, then --name, then the overrides after --
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--name", "polyp", "--", "--image_size"])
    assert exit_info.value.code == 2 and "--key value pairs" in capsys.readouterr().err


def test_shipping_new_weights_records_their_sha256_so_the_loader_accepts_them(tmp_path, monkeypatch, polyp_model):
    import hashlib
    import json
    import shutil

    import yaml
    from doubleunet_segment import paths
    from doubleunet_segment.catalog import load_model, read_catalog
    from doubleunet_segment.networks.weights import WeightsHashError
    from doubleunet_segment.release.ship import RELEASES_URL, install_weights

    source = paths.bundle_dir("polyp")
    root = tmp_path / "bundles" / "polyp"
    (root / "models").mkdir(parents=True)
    (root / "configs").mkdir()
    for name in ("large_files.yml", "models/model.json", "models/model.pt", "configs/metadata.json"):
        shutil.copy2(source / name, root / name)
    before = yaml.safe_load((root / "large_files.yml").read_text())["large_files"]
    monkeypatch.setenv(paths.BUNDLES_ENV, str(root.parent))
    spec = read_catalog()["polyp"]

    candidate = half_precision(polyp_model, tmp_path / "half.pt")
    shutil.copy2(candidate, spec.weights)  # new weights put in place by hand: the listed hash refuses them
    with pytest.raises(WeightsHashError, match="model.pt"):
        load_model(spec)

    install_weights(candidate, spec.weights, spec.bundle)
    text = (root / "large_files.yml").read_text()
    assert text.startswith("# ")  # the explanatory header survives the rewrite
    after = yaml.safe_load(text)["large_files"]
    assert [e["path"] for e in after] == [e["path"] for e in before]  # entries keep their place
    version = json.loads((root / "configs" / "metadata.json").read_text())["version"]
    assert after[0] == {
        "path": "models/model.pt",
        "url": f"{RELEASES_URL}/v{version}/polyp-model.pt",
        "hash_val": hashlib.sha256(candidate.read_bytes()).hexdigest(),
        "hash_type": "sha256",
    }
    assert load_model(spec).training is False  # the shipped file now loads
    assert not [p.name for p in (root / "models").iterdir() if p.name.endswith(".tmp")]
