"""Load weights named and shaped as in the original Keras DoubleU-Net into our network.

Lets users of the authors' code bring their Keras weights along, and is how the parity test sets
both models to the same numbers. Keras names its layers by creation order (``conv2d_7``, ``dense_3``,
``batch_normalization_12``); our modules are registered in the same order, so the k-th conv, BN and
dense outside VGG correspond one to one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .doubleunet import DoubleUNet

__all__ = ["closed_form_weight", "keras_layer_map", "load_keras_weights"]


def closed_form_weight(k: int, phase: int, kind: str, shape: list[int]) -> np.ndarray:
    """Weight number ``k`` of the Keras parity fixture (../shared/keras-parity/README.md), by its rule: a murmur3
    finaliser over ``i + 0x9E3779B9 * (k + phase + 1)``, mapped to [-1, 1) and scaled by ``kind``.

    Args:
        k: the weight's index in Keras' own order.
        phase: the fixture's ``phase`` (a whole number).
        kind: ``kernel`` (scaled by sqrt(6 / fan_in)), ``bias``, ``gamma``, ``beta``, ``moving_mean`` or
            ``moving_variance``.
        shape: the weight's shape in Keras' layout (a conv kernel is (kh, kw, in, out)).

    Returns:
        float32 array of ``shape``.

    Raises:
        KeyError: an unknown ``kind``.
    """
    n, mask = int(np.prod(shape)), np.uint64(0xFFFFFFFF)
    h = (np.arange(n, dtype=np.uint64) + np.uint64((0x9E3779B9 * (k + int(phase) + 1)) & 0xFFFFFFFF)) & mask
    for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        h ^= h >> np.uint64(shift)
        h = (h * np.uint64(mult)) & mask
    h ^= h >> np.uint64(16)
    t = (h.astype(np.float64) / 2.0**32 * 2.0 - 1.0).reshape(shape)
    scale = {
        "kernel": lambda: np.sqrt(6.0 / int(np.prod(shape[:-1]))) * t,
        "bias": lambda: 0.1 * t,
        "gamma": lambda: 1 + 0.2 * t,
        "beta": lambda: 0.2 * t,
        "moving_mean": lambda: 0.2 * t,
        "moving_variance": lambda: 1 + 0.5 * np.abs(t),
    }
    return scale[kind]().astype(np.float32)


def keras_layer_map(model: DoubleUNet) -> dict[str, nn.Module]:
    """Keras layer name -> our module, for every layer that holds weights.

    Args:
        model: the network whose modules are mapped.

    Returns:
        ``block{b}_conv{c}`` for the VGG19 convs, then ``conv2d``, ``conv2d_1``, ..., ``batch_normalization*``
        and ``dense*`` in creation order.
    """
    layers: dict[str, nn.Module] = {}
    vgg = model.encoder1.conv_layers()
    blocks = [2, 2, 4, 4, 4]
    i = 0
    for b, n in enumerate(blocks, start=1):
        for c in range(1, n + 1):
            layers[f"block{b}_conv{c}"] = vgg[i]
            i += 1
    vgg_ids = {id(m) for m in vgg}
    convs: list[nn.Module] = []
    bns: list[nn.Module] = []
    denses: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in vgg_ids:
            convs.append(m)
        elif isinstance(m, nn.BatchNorm2d):
            bns.append(m)
        elif isinstance(m, nn.Linear):
            denses.append(m)
    for prefix, mods in (("conv2d", convs), ("batch_normalization", bns), ("dense", denses)):
        for k, m in enumerate(mods):
            layers[prefix if k == 0 else f"{prefix}_{k}"] = m
    return layers


def _to_torch(kind: str, module: nn.Module, value: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(our tensor, converted Keras value) for one Keras weight."""
    t = torch.from_numpy(np.ascontiguousarray(value))
    if kind == "kernel":
        if isinstance(module, nn.Conv2d):
            t = t.permute(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
        else:
            t = t.t()  # Dense (in, out) -> (out, in)
        return module.weight, t
    target = {
        "bias": "bias",
        "gamma": "weight",
        "beta": "bias",
        "moving_mean": "running_mean",
        "moving_variance": "running_var",
    }[kind]
    return getattr(module, target), t


def load_keras_weights(model: DoubleUNet, weights: dict[str, np.ndarray]) -> None:
    """Set every weight of ``model`` from ``{"layer/kind": array}`` in Keras layout; all must be present.

    Args:
        model: the network to fill, in place.
        weights: ``"layer/kind"`` -> array, kind one of ``kernel``, ``bias``, ``gamma``, ``beta``,
            ``moving_mean``, ``moving_variance``. Conv kernels are (kh, kw, in, out) and dense kernels
            (in, out), as Keras stores them; they are transposed to PyTorch's layout here.

    Raises:
        ValueError: a weight is missing or unknown, or its shape does not match.
    """
    layers = keras_layer_map(model)
    expected = set()
    for name, module in layers.items():
        for kind in _kinds(module):
            expected.add(f"{name}/{kind}")
    missing = sorted(expected - set(weights))
    unknown = sorted(set(weights) - expected)
    if missing or unknown:
        raise ValueError(f"Keras weights do not match DoubleU-Net: missing {missing[:5]}, unknown {unknown[:5]}")
    with torch.no_grad():
        for path, value in weights.items():
            name, kind = path.split("/")
            ours, theirs = _to_torch(kind, layers[name], value)
            if tuple(ours.shape) != tuple(theirs.shape):
                raise ValueError(f"{path}: Keras shape {tuple(theirs.shape)} != ours {tuple(ours.shape)}")
            ours.copy_(theirs)


def _kinds(module: nn.Module) -> list[str]:
    if isinstance(module, nn.BatchNorm2d):
        return ["gamma", "beta", "moving_mean", "moving_variance"]
    return ["kernel"] + (["bias"] if module.bias is not None else [])
