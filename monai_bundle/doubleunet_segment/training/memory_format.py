"""The memory layout a training run keeps its network in: channels-last (NHWC) or contiguous (NCHW).

Inference and training want different layouts on a CPU. The engine runs inference channels-last: oneDNN's forward
convolutions are faster in NHWC. A training step is mostly backward convolutions, though, and on an AVX2-only CPU
oneDNN's NHWC backward is much slower than its NCHW one.

Measured with torch 2.13 (CPU build) on an AMD EPYC with AVX2 (no AVX-512, no bf16), 2026-11-30. One thread,
float32, a polyp DoubleU-Net training step (forward, ``StagewiseLoss``, backward, Adam) at batch 8 x 128 px:

- channels-last: 15.9 s per step, NCHW: 12.6 s (1.26x);
- convolution totals (``torch.profiler``): 15.2 s and 12.1 s;
- decoder layer 160 -> 32 channels at 128 px: forward 244 vs 281 ms, backward 925 vs 799 ms;
- first VGG layer 64 -> 64 at 128 px: forward 109 vs 171 ms, backward 994 vs 356 ms.

``benchmarks/bench_training.py`` measures the layouts against each other on any machine (variants ``baseline``,
channels-last, against ``nchw``).
"""

from __future__ import annotations

import torch

__all__ = ["MEMORY_FORMATS", "training_memory_format"]

MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def training_memory_format(device: torch.device | str, choice: str = "auto", bf16: bool = False) -> torch.memory_format:
    """The layout to train a network in on ``device``.

    ``auto`` picks as follows:

    - On CUDA it picks channels-last: cuDNN's tensor-core convolutions under mixed precision want NHWC.
    - On a CPU training in float32 it picks contiguous (NCHW): the backward convolutions decide the step (see
      the module's figures).
    - On a CPU that autocasts to bfloat16 it picks channels-last, as trained before (unmeasured here: no such CPU
      in this project's current machines; ``bench_training.py --variants baseline,nchw`` measures it there).

    Args:
        device: the training device.
        choice: ``auto``, ``channels_last`` or ``contiguous`` (the bundle configs' ``memory_format``).
        bf16: the CPU step autocasts to bfloat16 (the configs' ``cpu_bf16``).

    Returns:
        ``torch.channels_last`` or ``torch.contiguous_format``, for ``network.to(memory_format=...)``.

    Raises:
        ValueError: ``choice`` is not one of the three.
    """
    if choice != "auto":
        if choice not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be auto, {' or '.join(MEMORY_FORMATS)}, not {choice!r}")
        return MEMORY_FORMATS[choice]
    if torch.device(device).type == "cuda" or bf16:
        return torch.channels_last
    return torch.contiguous_format
