"""How the engine runs fast: precision, backend and batch chosen per device, with their safety checks.

- Reduced precision (bf16 autocast on CPUs with avx512_bf16/AMX, fp16 or bf16 on GPUs) is used only
  once :func:`check_precision` has shown that its thresholded masks agree with float32 on the model's
  validation images (Dice >= :data:`MIN_DICE`); the decision is cached per weights file and device.
- ONNX Runtime replaces PyTorch for float32 when a one-off timing shows it faster (cached too).
- :func:`run_in_batches` halves the batch on GPU out-of-memory; :func:`empty_slices` finds slices
  that can be labelled background unseen; :func:`prefetch` reads the next case while one runs.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .inferer import cpu_supports_bf16
from .models import BUNDLE_ROOT, ModelSpec

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BACKENDS = ("auto", "torch", "onnx")
MIN_DICE = 0.995  # reduced precision must reproduce the fp32 masks this closely
VALIDATION_IMAGES = 4


@dataclass
class PrecisionCheck:
    """The outcome of :func:`check_precision`: accepted or not, and the Dice that decided it."""

    precision: str
    accepted: bool
    dice: float
    images: int


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two label maps over their foreground labels pooled (1.0 when both are empty)."""
    dices = []
    for value in sorted((set(np.unique(a)) | set(np.unique(b))) - {0}):
        x, y = a == value, b == value
        dices.append(2.0 * np.logical_and(x, y).sum() / (x.sum() + y.sum()))
    return float(np.mean(dices)) if dices else 1.0


def check_precision(
    labels: Callable[[np.ndarray, str], np.ndarray], images: list[np.ndarray], precision: str
) -> PrecisionCheck:
    """Run ``images`` at fp32 and at ``precision`` through ``labels(image, precision)``; accept if masks agree.

    The masks of all images are compared together, so one image with a tiny structure cannot veto
    the rest, while a systematic shift anywhere lowers the pooled Dice.
    """
    if not images:
        return PrecisionCheck(precision, False, float("nan"), 0)
    ref = np.concatenate([labels(img, "fp32").ravel() for img in images])
    low = np.concatenate([labels(img, precision).ravel() for img in images])
    dice = mask_dice(ref, low)
    return PrecisionCheck(precision, dice >= MIN_DICE, dice, len(images))


def reduced_precisions(device: torch.device) -> list[str]:
    """Reduced precisions worth trying on ``device``, fastest first."""
    if device.type == "cuda":
        return ["fp16", "bf16"] if torch.cuda.is_bf16_supported() else ["fp16"]
    return ["bf16"] if cpu_supports_bf16() else []


def default_batch_size(device: torch.device, slice_pixels: int = 256 * 256) -> int:
    """Slices per forward pass: enough to fill a GPU (about 8 GB of activations), few on CPU.

    On CPU one 256x256 DoubleU-Net slice already keeps every core busy: batch 4 ran no faster than
    batch 1 (``benchmarks/bench_inference.py``), so only small windows are batched there.
    """
    if device.type != "cuda":
        return int(max(1, min(16, 2 * (256 * 256) // slice_pixels)))
    return int(max(1, min(64, 32 * (256 * 256) // slice_pixels)))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


def cache_dir() -> Path:
    """Where decisions and exported ONNX models are kept (``DOUBLEUNET_CACHE`` overrides)."""
    override = os.environ.get("DOUBLEUNET_CACHE")
    if override:
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "doubleunet-segment"


def weights_key(weights: Path) -> str:
    """Identifies one weights file's content cheaply: path, size and modification time."""
    st = Path(weights).stat()
    return f"{Path(weights).resolve()}|{st.st_size}|{st.st_mtime_ns}"


class DecisionCache:
    """A small JSON of past decisions, read also from ``<weights>.fastpath.json`` shipped beside the weights."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / "decisions.json"

    def _read(self, path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def get(self, weights: Path, device: torch.device, what: str) -> dict | None:
        key = f"{weights_key(weights)}|{device_name(device)}|{what}"
        sidecar = self._read(Path(f"{weights}.fastpath.json")).get(f"{device_name(device)}|{what}")
        return self._read(self.path).get(key) or sidecar

    def put(self, weights: Path, device: torch.device, what: str, value: dict) -> None:
        key = f"{weights_key(weights)}|{device_name(device)}|{what}"
        data = self._read(self.path)
        data[key] = {**value, "torch": torch.__version__, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(self.path)
        except OSError:
            pass  # a read-only home only costs a re-check next time


def validation_images(spec: ModelSpec, n: int = VALIDATION_IMAGES) -> list[np.ndarray]:
    """Up to ``n`` of the model's validation images as (C, X, Y, Z) arrays; volumes give their middle slices.

    Found through ``spec.extra['datalist']`` or ``configs/datalist_<segments>.json`` and the sample
    data folder; an empty list (no data here) makes :func:`choose_precision` keep float32.
    """
    from .cases import read_image_2d, read_volume_file
    from .datalist import is_volume, load_items

    name = spec.extra.get("datalist") or (f"datalist_{spec.segments}.json" if isinstance(spec.segments, str) else None)
    datalist = BUNDLE_ROOT / "configs" / name if name else None
    data_dir = Path(os.environ.get("DOUBLEUNET_SAMPLES", BUNDLE_ROOT.parent.parent / "shared" / "data"))
    if datalist is None or not datalist.is_file() or not data_dir.is_dir():
        return []
    images = []
    for item in load_items(data_dir, datalist, "validation", n):
        path = Path(item["image"])
        try:
            if is_volume(path):
                array = read_volume_file(path).array
                axis, mid = spec.slice_axis + 1, array.shape[spec.slice_axis + 1] // 2
                array = np.take(array, range(max(mid - 2, 0), min(mid + 2, array.shape[axis])), axis=axis)
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
) -> tuple[str, str]:
    """The precision to run at and why: ``choice`` if explicit, else the fastest reduced one that passes."""
    if choice not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {choice!r}")
    if choice != "auto":
        return choice, f"{choice} requested"
    candidates = reduced_precisions(device)
    if not candidates:
        return "fp32", "fp32: this device has no fast reduced precision"
    cache = cache or DecisionCache()
    loaded: list[np.ndarray] | None = None
    for precision in candidates:
        cached = cache.get(weights, device, precision) if weights and weights.is_file() else None
        if cached is None:
            loaded = images() if loaded is None else loaded
            result = check_precision(labels, loaded, precision)
            cached = {"accepted": result.accepted, "dice": result.dice, "images": result.images}
            if result.images and weights and weights.is_file():
                cache.put(weights, device, precision, cached)
        how = f"Dice {cached['dice']:.4f} vs fp32 on {cached['images']} validation image(s)"
        if cached["accepted"]:
            return precision, f"{precision} autocast: {how}"
        if not cached["images"]:
            return "fp32", f"fp32: no validation images to verify {precision} on"
    return "fp32", f"fp32: {candidates[-1]} rejected ({how} < {MIN_DICE})"


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

    ``exportable`` is False for networks other than :class:`network.DoubleUNet` (custom bundles).
    """
    from .onnx_export import onnxruntime_providers

    if choice not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {choice!r}")
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


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class OutOfMemory(RuntimeError):
    """Out of memory even at batch 1; ``done`` items were finished before it."""

    def __init__(self, done: int, cause: BaseException) -> None:
        super().__init__(f"out of memory at batch 1 after {done} item(s): {cause}")
        self.done = done


def run_in_batches(
    step: Callable[[int, int], None],
    total: int,
    batch: int,
    start: int = 0,
    notify: Callable[[str], None] | None = None,
    is_oom: Callable[[BaseException], bool] = is_out_of_memory,
) -> int:
    """Call ``step(a, b)`` over ``[start, total)`` in batches, halving the batch on out-of-memory.

    Returns the batch size that worked (the next call can start there). Raises :class:`OutOfMemory`
    when even one item does not fit, so the caller can move to another device and go on from ``done``.
    """
    batch = max(1, batch)
    while start < total:
        stop = min(start + batch, total)
        try:
            step(start, stop)
        except Exception as err:  # CUDA raises OutOfMemoryError, other backends RuntimeError
            if not is_oom(err):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if batch == 1:
                raise OutOfMemory(start, err) from err
            batch //= 2
            if notify:
                notify(f"out of memory: batch halved to {batch}")
            continue
        start = stop
    return batch


def empty_slices(volume: np.ndarray, axis: int, threshold: float | None = None) -> np.ndarray:
    """Boolean per slice along ``axis`` of a (C, X, Y, Z) volume: every voxel at or below ``threshold``.

    ``None`` takes the volume's minimum, so only slices of pure padding/air count (MR zero fill,
    CT outside the field of view); a number is in the input's own units (e.g. -900 HU).
    """
    limit = float(volume.min()) if threshold is None else threshold
    other = tuple(i for i in range(4) if i != axis + 1)
    return np.asarray(volume.max(axis=other) <= limit)


class _Prefetched:
    """A case's ``load`` that hands over the prefetched volume once and then lets go of it."""

    def __init__(self, future: Future) -> None:
        self._future: Future | None = future

    def __call__(self) -> object:
        future, self._future = self._future, None
        if future is None:
            raise RuntimeError("a prefetched case can be loaded only once")
        return future.result()


def prefetch(cases: Iterable, load: Callable[[object], object] = lambda case: case.load()) -> Iterator:
    """Yield ``cases`` with ``load`` already started for the next one in a background thread.

    Decoding a DICOM series or a compressed NIfTI takes seconds that otherwise add to each case;
    numpy/zlib/pydicom release the GIL for most of it. Each yielded case's ``load`` returns the
    prefetched volume (or raises its error, so a bad case still fails alone). At most two volumes
    are in memory at a time.
    """
    items = list(cases)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        future: Future | None = pool.submit(load, items[0]) if items else None
        for i, case in enumerate(items):
            current = _Prefetched(future)
            future = pool.submit(load, items[i + 1]) if i + 1 < len(items) else None
            yield replace(case, load=current)
