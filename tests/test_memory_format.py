"""The layout a training run keeps its network in (``training.memory_format``), as the bundles' train.json use it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from doubleunet_segment.training.memory_format import training_memory_format

BUNDLES = Path(__file__).resolve().parents[1] / "monai_bundle"


@pytest.mark.parametrize(
    ("device", "bf16", "expected"),
    [
        ("cpu", False, torch.contiguous_format),  # float32 CPU training: NCHW backward convolutions are faster
        ("cpu", True, torch.channels_last),
        ("cuda", False, torch.channels_last),
    ],
)
def test_auto_picks_by_device_and_precision(device, bf16, expected):
    assert training_memory_format(device, "auto", bf16) == expected


def test_a_named_layout_overrides_the_rule_and_an_unknown_one_is_refused():
    assert training_memory_format("cpu", "channels_last") == torch.channels_last
    assert training_memory_format("cuda", "contiguous") == torch.contiguous_format
    with pytest.raises(ValueError, match="nhwc"):
        training_memory_format("cpu", "nhwc")


def _first_conv_weight(overrides: dict) -> torch.Tensor:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "polyp" / "configs" / "train.json"))
    parser["bundle_root"] = str(BUNDLES / "polyp")
    parser["device"] = "$torch.device('cpu')"
    for key, value in overrides.items():
        parser[key] = value
    network = parser.get_parsed_content("network")
    return next(m.weight for m in network.modules() if isinstance(m, torch.nn.Conv2d))


def test_train_json_builds_the_network_in_the_layout_it_names():
    nchw = _first_conv_weight({"memory_format": "contiguous", "cpu_bf16": False})
    nhwc = _first_conv_weight({"memory_format": "channels_last", "cpu_bf16": False})
    assert nchw.is_contiguous() and not nchw.is_contiguous(memory_format=torch.channels_last)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and not nhwc.is_contiguous()
    auto = _first_conv_weight({"cpu_bf16": False})  # the shipped default, on a float32 CPU
    assert auto.is_contiguous()
