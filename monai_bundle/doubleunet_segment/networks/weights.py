"""Trained weights in and out: plain state dicts or training checkpoints, and the float16 storage of shipped files."""

from __future__ import annotations

from pathlib import Path

import torch

from .doubleunet import DoubleUNet

__all__ = ["half_storage", "load_state", "load_weights", "stored_in_float16"]


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a plain ``model.pt`` or from a training checkpoint (``{"network": ...}``).

    Args:
        path: the weights file.

    Returns:
        Name -> tensor with any DDP ``module.`` prefix removed and floating-point tensors in float32.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"model weights not found: {path}. Train one with `python -m monai.bundle run training "
            "--config_file monai_bundle/configs/train.json` or pass --model PATH."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("network", "model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return {k.removeprefix("module."): v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_weights(net: DoubleUNet, path: str | Path) -> DoubleUNet:
    """``net`` with the weights of ``path`` (plain state dict or training checkpoint), in eval mode.

    Args:
        net: the network to load into, in place.
        path: the weights file.

    Returns:
        ``net`` itself, in eval mode.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the weights do not fit ``net`` (the message names the file and the channels).
    """
    try:
        net.load_state_dict(load_state(Path(path)))
    except RuntimeError as err:
        raise ValueError(
            f"{path} does not fit this DoubleU-Net ({net.in_channels} in, {net.out_channels} out): {err}"
        ) from err
    return net.eval()


def stored_in_float16(key: str, value: torch.Tensor) -> bool:
    """Shipped files keep weights in float16; BatchNorm running statistics stay float32 (variances overflow 65504)."""
    return value.is_floating_point() and not key.endswith(("running_mean", "running_var"))


def half_storage(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` storing its tensors as the shipped ``model.pt`` does, for an export of the same size.

    Call ``.float()`` on it (or on its TorchScript export) before running it: float16 compute on a CPU is
    slow and overflows.

    Args:
        net: the network to convert, in place.

    Returns:
        ``net`` itself.
    """
    for key, tensor in [*net.named_parameters(), *net.named_buffers()]:
        if stored_in_float16(key, tensor):
            tensor.data = tensor.data.half()
    return net
