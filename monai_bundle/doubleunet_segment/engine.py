"""The inference engine: a channel-first volume in, per-class probabilities and a label map out.

The CLI and the Slicer subprocess call :class:`Engine`; the bundle's inference config uses the same
:class:`inferer.DoubleUNetInferer`. Volumes go through it in chunks of slices so progress can be
reported and memory grows with the chunk, not with the volume. A 2D image is a volume of one slice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .inferer import DoubleUNetInferer
from .models import ModelSpec, load_model
from .transforms import Normalize, ProbabilitiesToLabels, add_slice_context

ProgressCallback = Callable[[int, int], None]


def pick_device(choice: str = "auto") -> tuple[torch.device, str]:
    """The device to run on and a sentence saying why (users' most common question with GPU tools)."""
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
class Segmentation:
    probabilities: np.ndarray  # (K, X, Y, Z) float32; K = 1 (foreground) for binary models
    labels: np.ndarray  # (X, Y, Z) uint8
    device: str
    device_reason: str


class Engine:
    """A loaded model ready to segment volumes.

    Args:
        spec: the model to run (see :func:`models.resolve_model`).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: slices per forward pass.
        tta: average over flipped copies (3x the compute).
        threshold: foreground probability cut for binary models (default: the model's own).
        network, inferer, preprocessing, postprocessing: replace the parts built from ``spec``
            (the bundle's inference config passes its own components this way).
    """

    def __init__(
        self,
        spec: ModelSpec,
        device: str = "auto",
        batch_size: int = 4,
        tta: bool = False,
        threshold: float | None = None,
        network: torch.nn.Module | None = None,
        inferer: DoubleUNetInferer | None = None,
        preprocessing: Callable[[np.ndarray], torch.Tensor] | None = None,
        postprocessing: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.spec = spec
        self.device, self.device_reason = pick_device(device)
        self.threshold = spec.threshold if threshold is None else threshold
        self.network = (network or load_model(spec)).to(self.device).eval()
        self.inferer = inferer or DoubleUNetInferer.for_model(spec, sw_batch_size=batch_size, tta=tta)
        self.preprocessing = preprocessing or Normalize(spec.normalization)
        self.postprocessing = postprocessing or ProbabilitiesToLabels(self.threshold)

    def _check_channels(self, volume: np.ndarray) -> np.ndarray:
        if volume.ndim != 4:
            raise ValueError(f"expected a channel-first (C, X, Y, Z) volume, got shape {volume.shape}")
        c = volume.shape[0]
        if self.spec.context:
            if c == 3:
                volume = volume.mean(axis=0, keepdims=True)
            return volume  # neighbours become the channels after normalisation
        if c == self.spec.in_channels:
            return volume
        if c == 3 and self.spec.in_channels == 1:
            return volume.mean(axis=0, keepdims=True)  # an RGB rendering of a grey image
        if c == 1 and self.spec.in_channels == 3:
            return np.repeat(volume, 3, axis=0)  # grey shown to an RGB model as equal channels
        raise ValueError(f"model {self.spec.name!r} takes {self.spec.in_channels} channel(s), the input has {c}")

    def predict(self, volume: np.ndarray, progress: ProgressCallback | None = None, chunk: int = 16) -> np.ndarray:
        """(C, X, Y, Z) volume -> (K, X, Y, Z) float32 probabilities, along the model's slice axis."""
        x = self.preprocessing(self._check_channels(volume))
        x = add_slice_context(x, self.inferer.slice_axis, self.spec.context)
        axis = self.inferer.slice_axis
        n = x.shape[axis + 1]
        out = np.zeros((self.spec.out_channels, *x.shape[1:]), dtype=np.float32)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            part = x.narrow(axis + 1, start, stop - start)[None].to(self.device)
            index = [slice(None)] * 4
            index[axis + 1] = slice(start, stop)
            out[tuple(index)] = self.inferer(part, self.network)[0].cpu().numpy()
            if progress:
                progress(stop, n)
        return out

    def segment(self, volume: np.ndarray, progress: ProgressCallback | None = None) -> Segmentation:
        probs = self.predict(volume, progress)
        return Segmentation(probs, self.postprocessing(probs), str(self.device), self.device_reason)
