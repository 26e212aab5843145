"""Trained weights in and out: plain state dicts or training checkpoints, the float16 storage of shipped files,
and the hash check of shipped files.

A bundle lists its weight files in ``large_files.yml`` (the MONAI model-zoo format: ``path`` relative to the
bundle, ``url``, ``hash_val``, ``hash_type``). Loading a file that the nearest ``large_files.yml`` above it lists
checks the file's hash first, so a damaged, truncated or half-downloaded copy (or a Git LFS pointer) is refused
with a message saying how to restore it, instead of failing deep inside ``torch.load`` or, worse, loading.
Files that no ``large_files.yml`` lists (a user's own ``.pt``, a training run's output) are loaded unchecked.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path

import torch
import yaml

from .. import paths
from .doubleunet import DoubleUNet

__all__ = [
    "WeightsHashError",
    "file_digest",
    "large_file_entry",
    "load_state",
    "load_weights",
    "stored_in_float16",
    "verify_listed",
]


class WeightsHashError(ValueError):
    """A weights file listed in ``large_files.yml`` does not have the hash listed there."""


# Digests already computed in this process, by (file, size, mtime, hash type): a file loaded again is not read
# twice. Measured on the project's 2-core AMD EPYC (SHA extensions): sha256 of one 59 MB shipped weights file
# takes 0.04-0.05 s with the file in the page cache (about 1.3 GB/s), against 0.08 s for its torch.load.
_DIGESTS: dict[tuple[str, int, int, str], str] = {}


def file_digest(path: Path, hash_type: str = "sha256") -> str:
    """The hex digest of ``path``, computed once per (path, size, modification time) in this process.

    Raises:
        ValueError: ``hash_type`` is not a hash :mod:`hashlib` knows.
        OSError: the file cannot be read.
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, hash_type.lower())
    if key not in _DIGESTS:
        _DIGESTS[key] = _hash_file(path, hash_type.lower())
    return _DIGESTS[key]


def _hash_file(path: Path, hash_type: str) -> str:
    digest = hashlib.new(hash_type)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def large_file_entry(path: Path) -> tuple[Path, dict] | None:
    """The ``large_files.yml`` entry of ``path``: from the nearest folder above it holding a ``large_files.yml``.

    Returns:
        (that ``large_files.yml``, the entry), or None when no ``large_files.yml`` is found or the nearest one
        does not list ``path``.
    """
    path = Path(path).resolve()
    for folder in path.parents:
        listing = folder / paths.LARGE_FILES_NAME
        if listing.is_file():
            relative = path.relative_to(folder).as_posix()
            entries = (yaml.safe_load(listing.read_text()) or {}).get("large_files") or []
            for entry in entries:
                if str(entry.get("path", "")).removeprefix("./") == relative:
                    return listing, entry
            return None
    return None


def verify_listed(path: Path) -> None:
    """Check ``path`` against its ``large_files.yml`` entry, if it has one (see :func:`large_file_entry`).

    Raises:
        WeightsHashError: the file's hash differs from the listed one; the message names the file, both hashes
            and how to restore it.
    """
    found = large_file_entry(path)
    if found is None:
        return
    listing, entry = found
    hash_type = str(entry.get("hash_type", "sha256"))
    expected = str(entry["hash_val"]).lower()
    actual = file_digest(path, hash_type)
    if actual != expected:
        relative = entry["path"]
        raise WeightsHashError(
            f"{path} is damaged or is not the shipped file: its {hash_type} is {actual}, but {listing} lists "
            f"{expected} for {relative}. Restore it: in a source checkout run `git checkout -- {relative}` in "
            f"{listing.parent}; otherwise download it again from {entry.get('url', 'the project release')} "
            "(or reinstall the package). New weights are shipped with `python -m doubleunet_segment.release.ship`, "
            "which records their hash."
        )


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a plain ``model.pt`` or from a training checkpoint (``{"network": ...}``).

    Args:
        path: the weights file.

    Returns:
        Name -> tensor with any DDP ``module.`` prefix removed and floating-point tensors in float32.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        WeightsHashError: ``path`` is listed in a ``large_files.yml`` with another hash (:func:`verify_listed`).
        ValueError: ``path`` is not a PyTorch weights file, holds objects other than tensors (a checkpoint
            with pickled training arguments), or is not a name -> tensor mapping; the message names the file.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"model weights not found: {path}. Train one in a bundle folder (monai_bundle/<model>) with "
            "`python -m monai.bundle run training --config_file configs/train.json` or pass --model PATH."
        )
    verify_listed(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:  # a pickled object (argparse.Namespace, an optimizer, ...) the safe loader refuses
            raise ValueError(
                f"{path}: holds objects other than tensors ({found.group(1)}); save a plain state_dict "
                "(torch.save(model.state_dict(), PATH))"
            ) from err
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        reason = detail.group(1).strip() if detail else _one_line(err)
        raise ValueError(f"{path}: not a PyTorch weights file ({reason})") from err
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, AttributeError, TypeError, IndexError) as err:
        # a text file named .pt (KeyError), a truncated zip (RuntimeError), an empty file (EOFError), ...
        raise ValueError(f"{path}: not a PyTorch weights file ({_one_line(err)})") from err
    for key in ("network", "model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ValueError(f"{path}: not a state dict (name -> tensor); save a plain state_dict")
    return {k.removeprefix("module."): v.float() if v.is_floating_point() else v for k, v in state.items()}


def _one_line(err: BaseException) -> str:
    """``ExceptionName: first line of the message``, at most 160 characters."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    text = text[:157] + "..." if len(text) > 160 else text
    return f"{err.__class__.__name__}: {text}" if text else err.__class__.__name__


def load_weights(net: DoubleUNet, path: str | Path) -> DoubleUNet:
    """``net`` with the weights of ``path`` (plain state dict or training checkpoint), in eval mode.

    Args:
        net: the network to load into, in place.
        path: the weights file.

    Returns:
        ``net`` itself, in eval mode.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        WeightsHashError: ``path`` is a shipped file whose hash is not the listed one.
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
