"""Precision and backend per model and device, chosen once and only where the masks stay those of float32.

- Reduced precision (int8 through ONNX Runtime on CPUs, bf16 autocast on CPUs with avx512_bf16/AMX, fp16 or
  bf16 on GPUs) is used only once :func:`check_precision` has shown that its thresholded masks agree with
  float32 on the model's validation images: pooled Dice >= :data:`MIN_DICE` and every image's own Dice
  >= :data:`MIN_IMAGE_DICE`. int8 must also be faster than float32 in a one-off timing. The decision is
  cached per weights file and device.
- ONNX Runtime replaces PyTorch for float32 when a one-off timing shows it faster (cached too).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__, paths
from ..catalog import ModelSpec
from .cpu import cpu_description
from .inferer import cpu_supports_bf16

__all__ = [
    "BACKENDS",
    "CHECK_PIXELS",
    "MIN_DICE",
    "MIN_IMAGE_DICE",
    "PRECISIONS",
    "VALIDATION_IMAGES",
    "DecisionCache",
    "PrecisionCheck",
    "check_precision",
    "choose_backend",
    "choose_precision",
    "device_name",
    "mask_dice",
    "reduced_precisions",
    "time_call",
    "validation_images",
    "weights_key",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
BACKENDS = ("auto", "torch", "onnx")
MIN_DICE = 0.995  # reduced precision must reproduce the fp32 masks this closely, all images pooled
MIN_IMAGE_DICE = 0.99  # ... and each image on its own: a pooled figure can hide one ruined small structure
VALIDATION_IMAGES = 4
# A volume is compared on its central slab of at most this many pixels per channel (four 512 x 512 slices), at
# least one slice, so a crop-sized volume is compared whole. Four middle slices of a hippocampus crop were the unit
# before 0.6.1: there one structure can be a sliver (11 pixels), and 4 pixels flipping by int8 rounding read as
# Dice 0.897 for a model whose whole crops agree >= 0.994 and whose validation Dice against the labels int8 and
# float32 share to 0.0001.
CHECK_PIXELS = 4 * 512 * 512


@dataclass
class PrecisionCheck:
    """The outcome of :func:`check_precision`: accepted or not, and the Dice that decided it.

    Attributes:
        precision: the reduced precision checked (``int8``, ``bf16`` or ``fp16``).
        accepted: the pooled Dice reached :data:`MIN_DICE` and every image's Dice :data:`MIN_IMAGE_DICE`.
        dice: the pooled Dice against float32 (NaN without images).
        images: how many validation images were compared.
        min_dice: the lowest single image's Dice against float32 (NaN without images).
    """

    precision: str
    accepted: bool
    dice: float
    images: int
    min_dice: float = float("nan")


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two label maps over their foreground labels pooled (1.0 when both are empty).

    Dice = 2|A ∩ B| / (|A| + |B|) per label value present in either map, then averaged over those values.

    Args:
        a: label map of any shape.
        b: label map of the same shape.
    """
    dices = []
    for value in sorted((set(np.unique(a)) | set(np.unique(b))) - {0}):
        x, y = a == value, b == value
        dices.append(2.0 * np.logical_and(x, y).sum() / (x.sum() + y.sum()))
    return float(np.mean(dices)) if dices else 1.0


def check_precision(
    labels: Callable[[np.ndarray, str], np.ndarray], images: list[np.ndarray], precision: str
) -> PrecisionCheck:
    """Run ``images`` at fp32 and at ``precision`` through ``labels(image, precision)``; accept if masks agree.

    Two figures must both hold: the Dice of all images' masks pooled (a systematic shift anywhere lowers
    it) reaches :data:`MIN_DICE`, and each image's own Dice reaches :data:`MIN_IMAGE_DICE` (so no single
    image, e.g. one with a small polyp, loses its mask while the others carry the pooled figure).

    Args:
        labels: ``labels(image, precision)`` -> the label map of one (C, X, Y, Z) image.
        images: the validation images, each (C, X, Y, Z).
        precision: ``int8``, ``bf16`` or ``fp16``.

    Returns:
        The check; not accepted (Dice NaN) when there are no images.
    """
    if not images:
        return PrecisionCheck(precision, False, float("nan"), 0)
    refs = [labels(img, "fp32").ravel() for img in images]
    lows = [labels(img, precision).ravel() for img in images]
    dice = mask_dice(np.concatenate(refs), np.concatenate(lows))
    worst = min(mask_dice(ref, low) for ref, low in zip(refs, lows))
    accepted = dice >= MIN_DICE and worst >= MIN_IMAGE_DICE
    return PrecisionCheck(precision, accepted, dice, len(images), worst)


def reduced_precisions(device: torch.device, int8: bool = True) -> list[str]:
    """Reduced precisions worth trying on ``device``, fastest first.

    Args:
        device: where the model runs.
        int8: the network can go through ONNX Runtime's int8 path (a DoubleU-Net, onnxruntime installed).
    """
    if device.type == "cuda":
        return ["fp16", "bf16"] if torch.cuda.is_bf16_supported() else ["fp16"]
    from .onnx_runtime import onnxruntime_providers

    candidates = ["int8"] if int8 and "CPUExecutionProvider" in onnxruntime_providers() else []
    return candidates + (["bf16"] if cpu_supports_bf16() else [])


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model, cores and features (:func:`.cpu.cpu_description`): part of each cached
    decision's key."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_description()


def weights_key(weights: Path) -> str:
    """Identifies one weights file's content cheaply: path, size and modification time.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
    """
    st = Path(weights).stat()
    return f"{Path(weights).resolve()}|{st.st_size}|{st.st_mtime_ns}"


class DecisionCache:
    """A small JSON of past decisions, read also from ``<weights>.fastpath.json`` shipped beside the weights.

    Keys are the weights file (:func:`weights_key`), the device (:func:`device_name`) and what was decided
    (a precision or ``backend``). An unreadable cache reads as empty; a cache that cannot be written is
    skipped, so the decision is only made again next time.

    Args:
        path: the cache file; default ``decisions.json`` in :func:`doubleunet_segment.paths.cache_dir`.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.cache_dir() / "decisions.json"

    def _read(self, path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def get(self, weights: Path, device: torch.device, what: str) -> dict | None:
        """The decision stored for this weights file, device and question, or None."""
        key = f"{weights_key(weights)}|{device_name(device)}|{what}"
        sidecar = self._read(Path(f"{weights}.fastpath.json")).get(f"{device_name(device)}|{what}")
        return self._read(self.path).get(key) or sidecar

    def put(self, weights: Path, device: torch.device, what: str, value: dict) -> None:
        """Store ``value`` (stamped with the torch version, this release and the time), atomically."""
        key = f"{weights_key(weights)}|{device_name(device)}|{what}"
        data = self._read(self.path)
        stamp = {"torch": torch.__version__, "version": __version__, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        data[key] = {**value, **stamp}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(self.path)
        except OSError:
            pass  # a read-only home only costs a re-check next time


def validation_images(
    spec: ModelSpec, n: int = VALIDATION_IMAGES, section: str = "validation", slices: int | None = None
) -> list[np.ndarray]:
    """Up to ``n`` of the model's validation images as (C, X, Y, Z) arrays; volumes give a central slab.

    Found through the model's bundle (``configs/datalist.json``) and the sample data folder; an empty list
    (a bare weights file, no data here) makes :func:`choose_precision` keep float32.

    Args:
        spec: the model.
        n: at most this many images.
        section: the datalist section (``training`` gives the int8 calibration images).
        slices: a volume's central slices along the model's slice axis; None: as many as fit in
            :data:`CHECK_PIXELS` per channel, at least one (a crop-sized volume whole, a 512 x 512 CT its middle
            four).
    """
    from ..data.datalist import is_volume, load_items
    from ..data.image_io import read_image_2d, read_volume_file

    datalist = spec.bundle / "configs" / "datalist.json" if spec.bundle is not None else None
    data_dir = paths.sample_data()
    if datalist is None or not datalist.is_file() or not data_dir.is_dir():
        return []
    images = []
    for item in load_items(data_dir, datalist, section, n):
        path = Path(item["image"])
        try:
            if is_volume(path):
                array = read_volume_file(path).array
                axis = spec.slice_axis + 1
                depth = array.shape[axis]
                plane = array[0].size // depth
                count = min(depth, slices if slices is not None else max(CHECK_PIXELS // plane, 1))
                start = (depth - count) // 2
                array = np.take(array, range(start, start + count), axis=axis)
            else:
                array = read_image_2d(path).array
        except (OSError, ValueError, RuntimeError):
            continue
        images.append(array)
    return images


def choose_precision(
    choice: str,
    device: torch.device,
    weights: Path | None,
    labels: Callable[[np.ndarray, str], np.ndarray],
    images: Callable[[], list[np.ndarray]],
    cache: DecisionCache | None = None,
    race_int8: Callable[[], tuple[float, float]] | None = None,
) -> tuple[str, str]:
    """The precision to run at and why: ``choice`` if explicit, else the fastest reduced one that passes.

    Args:
        choice: one of :data:`PRECISIONS`.
        device: where the model runs.
        weights: the weights file the decision is cached for (None: not cached).
        labels: ``labels(image, precision)`` -> label map, for :func:`check_precision`.
        images: returns the validation images; called only when a check has to run.
        cache: the decision cache (default :class:`DecisionCache`).
        race_int8: ``race_int8()`` -> (float32 seconds, int8 seconds) for one batch: int8 is used only where it
            is faster (bf16 and fp16 are only tried on devices where they are). None: int8 is not tried (a
            network ONNX Runtime cannot run).

    Returns:
        ``fp32``, ``int8``, ``bf16`` or ``fp16`` and a sentence saying why.

    Raises:
        ValueError: ``choice`` is not one of :data:`PRECISIONS`.
    """
    if choice not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {choice!r}")
    if choice != "auto":
        return choice, f"{choice} requested"
    candidates = reduced_precisions(device, race_int8 is not None)
    if not candidates:
        return "fp32", "fp32: this device has no fast reduced precision"
    cache = cache or DecisionCache()
    loaded: list[np.ndarray] | None = None
    reasons = []
    for precision in candidates:
        cached = cache.get(weights, device, precision) if weights and weights.is_file() else None
        if cached is None or cached.get("version") != __version__:  # another release may check or quantize otherwise
            loaded = images() if loaded is None else loaded
            result = check_precision(labels, loaded, precision)
            cached = {"accepted": result.accepted, "dice": result.dice, "min_dice": result.min_dice}
            cached["images"] = result.images
            if result.accepted and precision == "int8" and race_int8 is not None:
                cached["fp32_s"], cached["low_s"] = race_int8()
            if result.images and weights and weights.is_file():
                cache.put(weights, device, precision, cached)
        if not cached["images"]:
            return "fp32", f"fp32: no validation images to verify {precision} on"
        how = (
            f"Dice {cached['dice']:.4f} pooled, {cached['min_dice']:.4f} worst image, vs fp32 on "
            f"{cached['images']} validation image(s)"
        )
        what = "ONNX Runtime int8" if precision == "int8" else f"{precision} autocast"
        timing = f"{cached['low_s']:.3f} s vs fp32 {cached['fp32_s']:.3f} s per batch" if "low_s" in cached else ""
        if not cached["accepted"]:
            reasons.append(f"{precision} rejected ({how}; needs {MIN_DICE} pooled, {MIN_IMAGE_DICE} each)")
        elif timing and cached["low_s"] >= cached["fp32_s"]:
            reasons.append(f"{precision} not faster ({timing})")
        else:
            return precision, f"{what}: {how}" + (f"; {timing}" if timing else "")
    return "fp32", "fp32: " + "; ".join(reasons)


def time_call(fn: Callable[[], object], repeats: int = 2) -> float:
    """Best wall time of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def choose_backend(
    choice: str,
    device: torch.device,
    precision: str,
    weights: Path | None,
    race: Callable[[], tuple[float, float]],
    cache: DecisionCache | None = None,
    exportable: bool = True,
) -> tuple[str, str]:
    """``torch`` or ``onnx`` and why; ``race()`` returns (torch seconds, onnx seconds) for one batch.

    ``exportable`` is False for networks other than
    :class:`doubleunet_segment.networks.doubleunet.DoubleUNet` (custom bundles).

    Args:
        choice: one of :data:`BACKENDS`.
        device: where the model runs.
        precision: the precision chosen; ONNX Runtime is raced only for ``fp32``.
        weights: the weights file the decision is cached for (None: not cached).
        race: times both backends; called only when no decision is cached.
        cache: the decision cache (default :class:`DecisionCache`).
        exportable: whether the network can be exported to ONNX.

    Returns:
        ``torch`` or ``onnx`` and a sentence saying why.

    Raises:
        ValueError: ``choice`` is not one of :data:`BACKENDS`.
        ValueError: also, ``int8`` with the ``torch`` backend, on a GPU or for another network.
        RuntimeError: ``onnx`` (or ``int8``) was asked for but ONNX Runtime lacks the device's execution provider.
    """
    from .onnx_runtime import onnxruntime_providers

    if choice not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {choice!r}")
    if precision == "int8":
        if choice == "torch" or device.type != "cpu" or not exportable:
            raise ValueError("int8 runs through ONNX Runtime on the CPU only, for DoubleU-Net networks")
        if "CPUExecutionProvider" not in onnxruntime_providers():
            raise RuntimeError("int8 needs onnxruntime (pip install onnxruntime)")
        return "onnx", "ONNX Runtime (int8 QDQ)"
    providers = onnxruntime_providers()
    wanted = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if choice == "onnx":
        if wanted not in providers:
            raise RuntimeError(f"--backend onnx needs onnxruntime with {wanted} (have {providers or 'none'})")
        return "onnx", "ONNX Runtime requested"
    if choice == "torch":
        return "torch", "PyTorch requested"
    if not exportable:
        return "torch", "PyTorch: this network is not a DoubleU-Net the ONNX export knows"
    if precision != "fp32":
        return "torch", f"PyTorch: ONNX Runtime has no {precision} path here"
    if wanted not in providers:
        return "torch", "PyTorch: onnxruntime is not installed with " + wanted
    cache = cache or DecisionCache()
    cached = cache.get(weights, device, "backend") if weights and weights.is_file() else None
    if cached is None:
        torch_s, onnx_s = race()
        cached = {"torch_s": torch_s, "onnx_s": onnx_s}
        if weights and weights.is_file():
            cache.put(weights, device, "backend", cached)
    faster = "onnx" if cached["onnx_s"] < cached["torch_s"] else "torch"
    return faster, f"{faster}: ONNX Runtime {cached['onnx_s']:.3f} s vs PyTorch {cached['torch_s']:.3f} s per batch"
