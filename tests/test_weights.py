"""Weights files that are not loadable state dicts are refused with a ValueError naming the file, not a traceback."""

from __future__ import annotations

import argparse
import shutil

import pytest
import torch
from doubleunet_segment.cli import main
from doubleunet_segment.networks.weights import load_state
from helpers import DATA, needs_data


def test_text_file_named_pt_is_not_weights(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_text("hello, not weights\n")
    with pytest.raises(ValueError, match=r"bad\.pt: not a PyTorch weights file"):
        load_state(path)


def test_checkpoint_with_pickled_objects_is_refused(tmp_path, polyp_model):
    path = tmp_path / "ckpt.pt"
    state = torch.load(polyp_model, weights_only=True)
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=1e-3)}, path)
    with pytest.raises(ValueError, match=r"ckpt\.pt: holds objects other than tensors.*save a plain state_dict"):
        load_state(path)


def test_non_tensor_values_are_refused(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"weight": [1, 2, 3]}, path)
    with pytest.raises(ValueError, match=r"odd\.pt: not a state dict"):
        load_state(path)


@needs_data
def test_cli_bad_model_is_a_clean_exit_2(tmp_path, polyp_model, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_text("not weights\n")
    shutil.copy(polyp_model.with_suffix(".json"), bad.with_suffix(".json"))
    image = DATA / "cvc-clinicdb" / "images" / "1.png"
    with pytest.raises(SystemExit) as exit_info:
        main([str(image), "-o", str(tmp_path / "out"), "--model", str(bad), "--progress", "none"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "Traceback" not in err and "bad.pt" in err and "not a PyTorch weights file" in err
    assert len(err.strip().splitlines()) == 1, err
