"""The inference predictor: a channel-first volume in, per-class probabilities and a label map out.

The CLI and the Slicer subprocess call :class:`Predictor`; the bundle's inference config uses the same
:class:`inferer.DoubleUNetInferer`. Volumes stream through it one batch of slices at a time: channel
expansion, 2.5D context, inference and labelling happen per batch, so memory grows with the batch,
not with the volume. A 2D image is a volume of one slice. The fast path (precision, backend, batch)
is chosen once per predictor by :mod:`.precision` and :mod:`.batching`, with every choice overridable.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import __version__, paths
from ..catalog import ModelSpec, load_model
from ..networks.doubleunet import DoubleUNet
from ..transforms import Normalize, ProbabilitiesToLabels, normalize_each_slice
from .batching import OutOfMemory, default_batch_size, empty_slices, run_in_batches
from .cpu import cpu_has_vnni
from .inferer import DoubleUNetInferer
from .precision import choose_backend, choose_precision, time_call, validation_images, weights_key
from .quantization import quantize_int8

if TYPE_CHECKING:
    from .onnx_runtime import OnnxNetwork

__all__ = [
    "CHANNEL_AGNOSTIC",
    "NEW_TENSOR_NORMALIZATIONS",
    "SKIP_EMPTY_DEFAULT",
    "Prediction",
    "Predictor",
    "ProgressCallback",
    "pick_device",
]

# Skipping empty slices changes results wherever a model labels blank input as foreground (the
# random-weight test models do, on the 34 zero slices of the MNI152 volume), so it is opt-in.
SKIP_EMPTY_DEFAULT = False
NEW_TENSOR_NORMALIZATIONS = ("median", "unit", "imagenet")
CHANNEL_AGNOSTIC = ("median", "zscore", "unit")  # normalisations that treat repeated grey channels alike
CALIBRATION_IMAGES = 16  # training images whose network inputs set the int8 activation ranges
# ... a volume's middle slices only: ONNX Runtime's MinMax calibrator keeps every layer's output of every input
# until the end (measured: over 14 MB per 48 x 48 slice of the hippocampus model), so 16 whole crops (about 800
# slices) would need some 12 GB
CALIBRATION_SLICES = 4

ProgressCallback = Callable[[int, int], None]


def pick_device(choice: str = "auto") -> tuple[torch.device, str]:
    """The device to run on and a sentence saying why (users' most common question with GPU tools).

    Args:
        choice: ``auto`` (CUDA if visible, else CPU), ``cpu`` or ``cuda``.

    Returns:
        The device and the reason, e.g. ``auto: CUDA device found (NVIDIA H200)``.

    Raises:
        RuntimeError: ``cuda`` was asked for but no CUDA device is usable.
        ValueError: ``choice`` is none of the three.
    """
    if choice == "cpu":
        return torch.device("cpu"), "CPU requested"
    built = torch.backends.cuda.is_built()
    available = torch.cuda.is_available()
    if choice == "cuda":
        if not available:
            why = "torch was built without CUDA" if not built else "no CUDA device is visible"
            raise RuntimeError(f"--device cuda requested but {why}")
        return torch.device("cuda"), f"CUDA requested: {torch.cuda.get_device_name(0)}"
    if choice != "auto":
        raise ValueError(f"device must be auto, cpu or cuda, got {choice!r}")
    if available:
        return torch.device("cuda"), f"auto: CUDA device found ({torch.cuda.get_device_name(0)})"
    if not built:
        return torch.device("cpu"), "auto: CPU, because this torch build has no CUDA support"
    return torch.device("cpu"), "auto: CPU, because torch has CUDA support but sees no CUDA device"


@dataclass
class Prediction:
    """What :meth:`Predictor.segment` returns for one volume.

    Attributes:
        probabilities: (K, X, Y, Z) float32 in [0, 1] (K = 1: foreground), or None when not kept.
        labels: (X, Y, Z) uint8 label map, 0 = background.
        device: where it ran, e.g. ``cuda`` or ``cpu``.
        device_reason: why there.
        skipped: empty slices labelled background without running the network.
        notes: things a person should know (batch-size fallbacks, a CPU fallback).
    """

    probabilities: np.ndarray | None  # (K, X, Y, Z) float32; K = 1 (foreground); None if not kept
    labels: np.ndarray  # (X, Y, Z) uint8
    device: str
    device_reason: str
    skipped: int = 0  # empty slices labelled background without running the network
    notes: list[str] = field(default_factory=list)


class Predictor:
    """A loaded model ready to segment volumes.

    Args:
        spec: the model to run (see :func:`doubleunet_segment.catalog.resolve_model`).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: slices per forward pass (None: a default for the device).
        tta: average over flipped copies (3x the compute).
        threshold: foreground probability cut for binary models (default: the model's own).
        network, inferer, preprocessing, postprocessing: replace the parts built from ``spec``
            (the bundle's inference config passes its own components this way).
        precision: ``auto`` (bf16/fp16 where it reproduces fp32 masks), ``fp32``, ``bf16`` or ``fp16``.
        backend: ``auto`` (ONNX Runtime for fp32 where it is faster), ``torch`` or ``onnx``.
        skip_empty: label slices whose voxels all lie at or below ``background`` as background
            without running the network (None: :data:`SKIP_EMPTY_DEFAULT`).
        background: the skip threshold in input units (None: the volume's minimum).

    Raises:
        RuntimeError: ``device`` is ``cuda`` without a usable CUDA device.
        ValueError: an unknown ``device``, ``precision`` or ``backend``, or weights that do not fit the spec.
        FileNotFoundError: the spec's weights file does not exist (and no ``network`` is given).
    """

    def __init__(
        self,
        spec: ModelSpec,
        device: str = "auto",
        batch_size: int | None = None,
        tta: bool = False,
        threshold: float | None = None,
        network: torch.nn.Module | None = None,
        inferer: DoubleUNetInferer | None = None,
        preprocessing: Callable[[np.ndarray], torch.Tensor] | None = None,
        postprocessing: Callable[[np.ndarray], np.ndarray] | None = None,
        precision: str = "auto",
        backend: str = "auto",
        skip_empty: bool | None = None,
        background: float | None = None,
    ) -> None:
        self.spec = spec
        self.device, self.device_reason = pick_device(device)
        self.threshold = spec.threshold if threshold is None else threshold
        self.network = (network or load_model(spec)).to(self.device).eval()
        pixels = int(np.prod(spec.roi_size))
        batch = batch_size or (inferer.sw_batch_size if inferer else default_batch_size(self.device, pixels))
        self.inferer = inferer or DoubleUNetInferer.for_model(spec, sw_batch_size=batch, tta=tta)
        self.inferer.sw_batch_size = batch
        self.preprocessing = preprocessing or Normalize(spec.normalization)
        self.postprocessing = postprocessing or ProbabilitiesToLabels(self.threshold)
        self.skip_empty = SKIP_EMPTY_DEFAULT if skip_empty is None else skip_empty
        self.background = background
        self.notes: list[str] = []
        self._torch_network = self.network
        self._use_channels_last()
        self._fp32_race: tuple[float, float] | None = None  # shared by the int8 and the backend decisions
        self._onnx: OnnxNetwork | None = None
        self._int8: OnnxNetwork | None = None
        self._scratch: Path | None = None  # the ONNX exports of a network without a weights file
        exportable = isinstance(self._torch_network, DoubleUNet)
        self.precision, precision_reason = choose_precision(
            precision,
            self.device,
            self._weights(),
            self._labels_at,
            self._validation_images,
            race_int8=self._race_int8 if exportable else None,
        )
        self.inferer.precision = "fp32" if self.precision == "int8" else self.precision
        self.backend, backend_reason = choose_backend(
            backend,
            self.device,
            self.precision,
            self._weights(),
            self._race,
            exportable=exportable,
        )
        if self.backend == "onnx":
            self.network = self.int8_network() if self.precision == "int8" else self._onnx_network()
            self.inferer.channels_last = False
        self.path_reason = f"{precision_reason}; {backend_reason}; batch {self.batch_size}"

    @property
    def batch_size(self) -> int:
        """Slices per forward pass (it shrinks after an out-of-memory error)."""
        return self.inferer.sw_batch_size

    def _weights(self) -> Path | None:
        weights = Path(self.spec.weights) if self.spec.weights else None
        return weights if weights is not None and weights.is_file() else None

    def _use_channels_last(self) -> None:
        """NHWC weights and inputs: oneDNN and cuDNN's fastest convolution layout."""
        if isinstance(self.network, torch.nn.Module) and any(True for _ in self.network.parameters()):
            self.network = self.network.to(memory_format=torch.channels_last)
            self._torch_network = self.network
            self.inferer.channels_last = True

    def _validation_images(self) -> list[np.ndarray]:
        return self._as_fed(validation_images(self.spec))

    def _as_fed(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """``images`` in input units, as this predictor expects them: a predictor given other preprocessing (the
        bundle's, whose transforms normalise before it) gets them normalised by the model's own method first, so
        the precision check and the int8 calibration see what the network sees in every front door."""
        if isinstance(self.preprocessing, Normalize):
            return images
        normalize = Normalize(self.spec.normalization)
        return [normalize(image).numpy() for image in images]

    def _labels_at(self, image: np.ndarray, precision: str) -> np.ndarray:
        """Label map of one (C, X, Y, Z) image at ``precision`` (for the acceptance check); ``int8`` runs the
        quantized ONNX model, the others autocast the PyTorch network."""
        saved = self.inferer.precision, self.network, self.inferer.channels_last
        if precision == "int8":
            self.network, self.inferer.channels_last = self.int8_network(), False
            precision = "fp32"
        self.inferer.precision = precision
        try:
            return self.postprocessing(self.predict(image))
        finally:
            self.inferer.precision, self.network, self.inferer.channels_last = saved

    def _race(self) -> tuple[float, float]:
        """Seconds for one batch at the trained size through PyTorch and through ONNX Runtime (fp32); timed once
        per predictor (the int8 decision and the backend decision share it)."""
        if self._fp32_race is None:
            model = self._torch_network
            onnx = self._onnx_network()
            x = self._race_input()
            layout = torch.channels_last if self.inferer.channels_last else torch.contiguous_format
            with torch.inference_mode():
                torch_s = time_call(lambda: model(x.contiguous(memory_format=layout)), repeats=1)
                onnx_s = time_call(lambda: onnx(x), repeats=1)
            self._fp32_race = (torch_s, onnx_s)
        return self._fp32_race

    def _race_input(self) -> torch.Tensor:
        return torch.rand(self.batch_size, self._network_channels(), *self.spec.roi_size, device=self.device)

    def _race_int8(self) -> tuple[float, float]:
        """(fastest float32 seconds, int8 seconds) for one batch at the trained size."""
        int8 = self.int8_network()
        x = self._race_input()
        return min(self._race()), time_call(lambda: int8(x), repeats=1)

    @property
    def int8_path(self) -> Path:
        """Where the int8 model of this weights file is cached: beside its float32 export, named by the CPU kind
        (VNNI or 7-bit weights) and the release (calibration may change between releases)."""
        bits = "vnni" if cpu_has_vnni() else "7bit"
        fp32 = self._onnx_path()
        return fp32.with_name(f"{fp32.stem}-int8-{bits}-{__version__}.onnx")

    def int8_network(self) -> torch.nn.Module:
        """The int8 ONNX Runtime network (:func:`.quantization.quantize_int8`), quantized once per weights file
        and CPU kind into the cache (:attr:`int8_path`), calibrated on the model's training images as this
        predictor feeds them.

        Raises:
            RuntimeError: the model has no training images here to calibrate on.
        """
        from .onnx_runtime import OnnxNetwork

        if self._int8 is not None:
            return self._int8
        path = self.int8_path
        if not path.is_file():
            images = self._as_fed(validation_images(self.spec, CALIBRATION_IMAGES, "training", CALIBRATION_SLICES))
            if not images:
                raise RuntimeError(f"model {self.spec.name!r}: no training images here to calibrate int8 on")
            quantize_int8(self._onnx_export(), path, self._network_inputs(images), self.spec.int8_keep_float)
        self._int8 = OnnxNetwork(path, "cpu")
        return self._int8

    def _network_inputs(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """The (N, C, H, W) batches the network is given for ``images`` (normalised, resized, batched as in
        :meth:`predict`), recorded from a float32 pass."""
        inputs: list[np.ndarray] = []
        network = self._torch_network

        def record(x: torch.Tensor) -> torch.Tensor:
            inputs.append(x.detach().float().cpu().contiguous().numpy())
            return network(x)

        saved = self.network, self.inferer.precision
        self.network, self.inferer.precision = record, "fp32"
        try:
            for image in images:
                self.predict(image)
        finally:
            self.network, self.inferer.precision = saved
        return inputs

    def _network_channels(self) -> int:
        return 2 * self.spec.context + 1 if self.spec.context else self.spec.in_channels

    def _onnx_path(self) -> Path:
        """The float32 export's cache file, named by the weights file (:func:`.precision.weights_key`); a network
        without a weights file gets a folder of its own for this predictor."""
        weights = self._weights()
        if weights is None:
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix="doubleunet-onnx-"))
            return self._scratch / "model.onnx"
        digest = hashlib.sha1(weights_key(weights).encode()).hexdigest()[:16]
        return paths.cache_dir() / "onnx" / f"{weights.stem}-{digest}.onnx"

    def _onnx_export(self) -> Path:
        """The float32 ONNX file (:meth:`_onnx_path`), exported once per weights file into the cache."""
        from .onnx_runtime import export_onnx

        path = self._onnx_path()
        if not path.is_file():
            export_onnx(copy.deepcopy(self._torch_network).to("cpu"), path)
        return path

    def _onnx_network(self) -> OnnxNetwork:
        """The float32 ONNX Runtime network: one session per predictor, shared by the race and the run."""
        from .onnx_runtime import OnnxNetwork

        if self._onnx is None:
            self._onnx = OnnxNetwork(self._onnx_export(), self.device)
        return self._onnx

    def _check_channels(self, volume: np.ndarray) -> np.ndarray:
        """The volume with the channels preprocessing expects; grey for RGB models is expanded per batch."""
        if volume.ndim != 4:
            raise ValueError(f"expected a channel-first (C, X, Y, Z) volume, got shape {volume.shape}")
        c = volume.shape[0]
        if self.spec.context:
            if c == 3:
                volume = volume.mean(axis=0, keepdims=True)
            return volume  # neighbours become the channels batch by batch
        if c == self.spec.in_channels:
            return volume
        if c == 3 and self.spec.in_channels == 1:
            return volume.mean(axis=0, keepdims=True)  # an RGB rendering of a grey image
        if c == 1 and self.spec.in_channels == 3:
            if getattr(self.preprocessing, "method", None) in CHANNEL_AGNOSTIC:
                return volume  # repeated per batch: a 600-slice CT does not triple in memory
            return np.repeat(volume, 3, axis=0)  # grey shown to an RGB model as equal channels
        raise ValueError(f"model {self.spec.name!r} takes {self.spec.in_channels} channel(s), the input has {c}")

    def _preprocessing_copies(self) -> bool:
        """True for normalisations known to return a new tensor: no defensive copy of a 600-slice volume."""
        return isinstance(self.preprocessing, Normalize) and self.preprocessing.method in NEW_TENSOR_NORMALIZATIONS

    def slice_axis_for(self, volume: np.ndarray) -> int:
        """The axis (0-2 of X, Y, Z) to slice a (C, X, Y, Z) ``volume`` along: 2 (the image plane) for a
        single-slice input such as a 2D image, else the inferer's own slice axis (slicing a (C, X, Y, 1) image
        along X or Y would make X or Y strips of one pixel's width). The runner counts progress with it too."""
        return 2 if volume.shape[-1] == 1 else self.inferer.slice_axis

    def _batch(self, x: torch.Tensor, index: np.ndarray, axis: int | None = None) -> torch.Tensor:
        """Slices ``index`` along ``axis`` (default: the slice axis) as a (1, C, X, Y, Z) network input,
        context added."""
        dim = (self.inferer.slice_axis if axis is None else axis) + 1
        n = x.shape[dim]
        idx = torch.as_tensor(index)
        if self.spec.context:
            offsets = range(-self.spec.context, self.spec.context + 1)
            part = torch.cat([torch.index_select(x, dim, torch.clamp(idx + o, 0, n - 1)) for o in offsets], dim=0)
        elif index[-1] - index[0] == len(index) - 1:
            part = x.narrow(dim, int(index[0]), len(index))  # a run of slices: a view, no gather
        else:
            part = torch.index_select(x, dim, idx)
        if part.shape[0] == 1 and self.spec.in_channels == 3 and not self.spec.context:
            part = part.expand(3, -1, -1, -1)
        return part[None].to(self.device)

    def _stream(
        self,
        volume: np.ndarray,
        emit: Callable[[np.ndarray, torch.Tensor], None],
        progress: ProgressCallback | None,
        independent_slices: bool = False,
    ) -> int:
        """Feed the volume batch by batch to ``emit(slice indices, probabilities)``; returns slices skipped.

        ``independent_slices``: the slices along Z are separate pictures, each normalised on its own.
        """
        checked = self._check_channels(volume)
        axis = self.slice_axis_for(volume)
        # a single-slice input is given to the inferer as (N, C, X, Y) images: its 2D rule slices along Z
        as_image = axis != self.inferer.slice_axis
        n = checked.shape[axis + 1]
        empty = empty_slices(checked, axis, self.background) if self.skip_empty else np.zeros(n, bool)
        if empty.any():
            shape = list(checked.shape[1:])
            shape[axis] = int(empty.sum())
            background = torch.zeros(self.spec.out_channels, *shape)
            if self.spec.out_channels > 1:
                background[0] = 1.0  # softmax models: all probability on class 0
            emit(np.flatnonzero(empty), background)
        if np.shares_memory(checked, volume) and not self._preprocessing_copies():
            checked = checked.copy()  # zscore (MONAI) works in place; the caller's volume stays as given
        if independent_slices:
            x = normalize_each_slice(checked, self.preprocessing)
        else:
            x = self.preprocessing(checked)
        todo = np.flatnonzero(~empty)
        done = int(empty.sum())

        def step(a: int, b: int) -> None:
            index = todo[a:b]
            inputs = self._batch(x, index, axis)
            if as_image:
                probabilities = self.inferer(inputs[..., 0], self.network)[..., None]
            else:
                probabilities = self.inferer(inputs, self.network)
            emit(index, probabilities[0].cpu())
            if progress:
                progress(done + b, n)

        start = 0
        batch = self.batch_size
        while True:
            try:
                self.inferer.sw_batch_size = run_in_batches(step, len(todo), batch, start, self.notes.append)
                if progress and not len(todo):
                    progress(n, n)
                return int(empty.sum())
            except OutOfMemory as err:
                if self.device.type != "cuda":
                    raise
                start, batch = err.done, self.batch_size
                self._fall_back_to_cpu()

    def _fall_back_to_cpu(self) -> None:
        """GPU memory too small even for one slice: finish on the CPU rather than fail."""
        self.device = torch.device("cpu")
        self.device_reason += "; fell back to CPU after GPU out-of-memory at batch 1"
        self.notes.append("GPU out of memory even at batch 1: continuing on the CPU (slower)")
        self.network = self._torch_network = self._torch_network.to(self.device)
        self.backend = "torch"
        self.inferer.channels_last = True
        if self.precision == "fp16":
            self.precision = self.inferer.precision = "fp32"

    @staticmethod
    def _get(out: np.ndarray, axis: int, index: np.ndarray) -> np.ndarray:
        """``out[..., index, ...]`` along the slice axis of a (K, X, Y, Z) array."""
        where = [slice(None)] * out.ndim
        where[axis + out.ndim - 3] = index
        return out[tuple(where)]

    @staticmethod
    def _put(out: np.ndarray, axis: int, index: np.ndarray, values: np.ndarray) -> None:
        """``out[..., index, ...] = values`` along the slice axis of a (K, X, Y, Z) or (X, Y, Z) array."""
        dim = axis + out.ndim - 3
        where = [slice(None)] * out.ndim
        where[dim] = index
        out[tuple(where)] = values

    def views_for(self, volume: np.ndarray) -> tuple[int, ...]:
        """The slice axes whose probabilities are averaged for a (C, X, Y, Z) ``volume``: the spec's consensus
        axes (multi-view models), else the one axis of :meth:`slice_axis_for` (always so for a single slice)."""
        if volume.shape[-1] != 1 and len(self.spec.views) > 1:
            return self.spec.views
        return (self.slice_axis_for(volume),)

    @contextmanager
    def _along(self, axis: int) -> Iterator[None]:
        """Slice along ``axis`` for the duration (the inferer's axis is what :meth:`slice_axis_for` follows)."""
        saved = self.inferer.slice_axis
        self.inferer.slice_axis = axis
        try:
            yield
        finally:
            self.inferer.slice_axis = saved

    def _probabilities(
        self, volume: np.ndarray, progress: ProgressCallback | None, independent_slices: bool
    ) -> tuple[np.ndarray, int]:
        """(K, X, Y, Z) probabilities averaged over :meth:`views_for`, and the slices skipped as empty."""
        views = self.views_for(volume)
        out = np.zeros((self.spec.out_channels, *volume.shape[1:]), dtype=np.float32)
        if len(views) == 1:
            axis = views[0]
            skipped = self._stream(
                volume, lambda index, p: self._put(out, axis, index, p.numpy()), progress, independent_slices
            )
            return out, skipped
        total = sum(volume.shape[1 + a] for a in views)
        done, skipped = 0, 0
        for axis in views:

            def add(index: np.ndarray, p: torch.Tensor, axis: int = axis) -> None:
                self._put(out, axis, index, self._get(out, axis, index) + p.numpy() / len(views))

            def report(d: int, n: int, offset: int = done) -> None:
                if progress:
                    progress(offset + d, total)

            with self._along(axis):
                skipped += self._stream(volume, add, report, independent_slices)
            done += volume.shape[1 + axis]
        return out, skipped

    def predict(
        self,
        volume: np.ndarray,
        progress: ProgressCallback | None = None,
        chunk: int | None = None,
        independent_slices: bool = False,
    ) -> np.ndarray:
        """(C, X, Y, Z) volume -> (K, X, Y, Z) float32 probabilities, along the model's slice axis (a multi-view
        model: the mean of each of its axes' probabilities).

        Args:
            volume: (C, X, Y, Z) in input units; a 2D image is (C, H, W, 1). Grey volumes are expanded
                for RGB models and RGB averaged for grey ones. Not modified.
            progress: called with (slices done, slices in total) after each batch (over all views).
            chunk: slices per forward pass for this call, instead of the predictor's batch size.
            independent_slices: the slices along Z are separate pictures (a cine loop without patient
                geometry): each is normalised as the same picture given alone would be.

        Returns:
            (K, X, Y, Z) float32 probabilities (K = 1 for binary models).

        Raises:
            ValueError: ``volume`` is not 4D, or its channels do not fit the model.
        """
        saved = self.inferer.sw_batch_size
        if chunk:
            self.inferer.sw_batch_size = chunk
        try:
            return self._probabilities(volume, progress, independent_slices)[0]
        finally:
            if chunk:
                self.inferer.sw_batch_size = saved

    def segment(
        self,
        volume: np.ndarray,
        progress: ProgressCallback | None = None,
        keep_probabilities: bool = True,
        independent_slices: bool = False,
    ) -> Prediction:
        """Probabilities (if kept) and labels; labels are made per batch, so without probabilities a
        512x512x600 volume needs only its own memory plus a uint8 label map. A model whose spec says
        ``largest_component`` gets its labels (not its probabilities) cut to one piece per class, and likewise
        ``fill_holes`` and ``min_component_fraction`` (:meth:`ModelSpec.postprocess`).

        Args:
            volume: (C, X, Y, Z) in input units, as for :meth:`predict`; not modified.
            progress: called with (slices done, slices in total) after each batch.
            keep_probabilities: also return the (K, X, Y, Z) probabilities.
            independent_slices: the slices along Z are separate pictures (a cine loop without patient
                geometry): each is normalised as the same picture given alone would be.

        Returns:
            The :class:`Prediction`.

        Raises:
            ValueError: ``volume`` is not 4D, or its channels do not fit the model.
        """
        self.notes = []
        if len(self.views_for(volume)) > 1:  # multi-view: labels only once every view's probabilities are in
            probs, skipped = self._probabilities(volume, progress, independent_slices)
            labels = self.postprocessing(probs).astype(np.uint8)
            probs = probs if keep_probabilities else None
        else:
            axis = self.slice_axis_for(volume)
            shape = volume.shape[1:]
            labels = np.zeros(shape, dtype=np.uint8)
            probs = np.zeros((self.spec.out_channels, *shape), dtype=np.float32) if keep_probabilities else None

            def emit(index: np.ndarray, p: torch.Tensor) -> None:
                values = p.numpy()
                self._put(labels, axis, index, self.postprocessing(values))
                if probs is not None:
                    self._put(probs, axis, index, values)

            skipped = self._stream(volume, emit, progress, independent_slices)
        labels = self.spec.postprocess(labels, self.slice_axis_for(volume))
        return Prediction(probs, labels, str(self.device), self.device_reason, skipped, list(self.notes))
