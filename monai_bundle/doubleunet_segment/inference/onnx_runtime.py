"""DoubleU-Net as an ONNX model run by ONNX Runtime: the fastest float32 path on CPUs.

ONNX Runtime's fused convolutions reach about 88% of this machine kind's float32 conv peak where
PyTorch eager reaches 45-63%, so a float32 run (a CPU without bfloat16, or a model whose bf16 masks
disagree with fp32) goes through it. The graph holds stage 2 only (the prediction) at a dynamic
batch and size; padding to a multiple of 16 stays in PyTorch, so any slice size works.
"""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.utils import convert_to_onnx
from torch import nn

from ..networks.doubleunet import SIZE_MULTIPLE, DoubleUNet

__all__ = ["OnnxNetwork", "export_onnx", "onnxruntime_providers"]


class _Stage2(nn.Module):
    """The eval-mode prediction for inputs already padded to a multiple of 16 (nothing data-dependent to trace)."""

    def __init__(self, net: DoubleUNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_stages(x)[1]


def onnxruntime_providers() -> list[str]:
    """Execution providers this ONNX Runtime offers (empty when it is not installed)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def export_onnx(net: DoubleUNet, path: str | Path, size: int = 64) -> Path:
    """Write ``net`` (eval mode, float32) as ONNX with dynamic batch, height and width; returns the path.

    MONAI's :func:`~monai.networks.utils.convert_to_onnx` exports it with the TorchScript-based exporter
    (no onnxscript needed) and verifies the file: ONNX Runtime's output for a random example must match
    PyTorch's (rtol = atol = 1e-4), else the export raises and nothing is written. The file is written
    under a temporary name and renamed, so a cache never holds a half-written or unverified model.
    The check costs about a second, once per weights file (the model is cached): 1 -> 3-channel DoubleU-Net,
    5 interleaved runs on 2 shared CPU cores, median 2.4 s with the former hand ``torch.onnx.export``, 3.6 s
    with MONAI's export and check; the ``.onnx`` file is byte for byte the same.

    Args:
        net: the network (not modified: it is exported through a stage-2 wrapper in eval mode).
        path: the ``.onnx`` file; its folder is created.
        size: the example input's height and width (any multiple of 16; the axes are dynamic).

    Raises:
        AssertionError: ONNX Runtime's output differs from PyTorch's (torch.testing.assert_close).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = _Stage2(net).eval().float().to("cpu", memory_format=torch.contiguous_format)
    example = torch.rand(1, net.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two processes exporting at once do not collide
    try:
        with warnings.catch_warnings(), _global_random_state_kept():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
            convert_to_onnx(
                module,
                (example,),
                input_names=["image"],
                output_names=["logits"],
                opset_version=17,
                dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}},
                filename=str(tmp),
                verify=True,
                device=torch.device("cpu"),
                use_ort=True,
                rtol=1e-4,
                atol=1e-4,  # logits near 0: MONAI's default atol of 0 would fail on float rounding alone
                dynamo=False,  # the TorchScript-based exporter: no onnxscript, and MONAI then runs its own check
            )
        tmp.replace(path)  # a half-written or unverified model is never picked up from the cache
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def _global_random_state_kept() -> Iterator[None]:
    """Undo what ``convert_to_onnx(verify=True)`` does to global state: its ``set_determinism`` calls reseed
    torch, numpy and ``random`` and set cuDNN's flags back to their import-time values."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


class OnnxNetwork(nn.Module):
    """A drop-in for the eval-mode DoubleU-Net: (N, C, H, W) float tensor in, stage-2 logits out.

    Args:
        path: the ``.onnx`` file written by :func:`export_onnx`.
        device: ``cpu`` or ``cuda``; outputs are returned on the input's device.

    Raises:
        ImportError: onnxruntime is not installed.
        RuntimeError: ``cuda`` was asked for but this ONNX Runtime has no CUDA execution provider.
    """

    def __init__(self, path: str | Path, device: torch.device | str = "cpu") -> None:
        super().__init__()
        import onnxruntime

        self.device = torch.device(device)
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise RuntimeError("this ONNX Runtime has no CUDA execution provider (install onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        self.path = Path(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, K, H, W) float32 logits, padded to a multiple of 16 and cropped back."""
        h, w = x.shape[2], x.shape[3]
        pad_h, pad_w = (-h) % SIZE_MULTIPLE, (-w) % SIZE_MULTIPLE
        if pad_h or pad_w:
            x = F.pad(x, [0, pad_w, 0, pad_h])
        array = x.detach().float().cpu().contiguous().numpy()
        out = self.session.run(["logits"], {"image": array})[0]
        return torch.from_numpy(out)[:, :, :h, :w].to(x.device)
