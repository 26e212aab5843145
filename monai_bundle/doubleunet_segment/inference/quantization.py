"""int8 DoubleU-Net for ONNX Runtime: static QDQ quantization, calibrated on the model's own training images.

The float32 ONNX export (:mod:`.onnx_runtime`) is quantized with ONNX Runtime's ``quantize_static``:

- weights per output channel (signed int8), activations per tensor (unsigned int8), QDQ format, so ONNX Runtime
  fuses each ``DequantizeLinear -> Conv -> QuantizeLinear`` into an integer convolution; the pooling,
  concatenation, upsampling and squeeze-and-excite ops between convolutions are quantized too;
- activation ranges from the network inputs of the model's own training images, as the engine feeds them
  (same normalisation, resizing and batching), with MinMax calibration;
- nodes named in ``keep_float`` stay float32 (the mask heads or the first layers, where a model needs it): their
  weights and arithmetic; an input they take from a quantized node arrives rounded to that node's uint8 grid;
- on CPUs without VNNI, weights use 7 bits (``reduce_range``): AVX2's ``vpmaddubsw`` adds pairs of u8 x s8
  products into saturating int16, which 8-bit weights overflow. On the shipped polyp model, all convolutions
  (and nothing else) quantized on an AVX2-only EPYC: worst validation image Dice vs fp32 0.54 with 8-bit weights,
  0.82 with 7-bit.

Whether the result may be used is not decided here: :func:`doubleunet_segment.inference.precision.choose_precision`
accepts it only where every validation image's mask keeps Dice >= 0.99 against float32, and only if it is faster.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .cpu import cpu_has_vnni

__all__ = ["quantize_int8"]


def quantize_int8(
    fp32: str | Path,
    out: str | Path,
    calibration: Iterable[np.ndarray],
    keep_float: Sequence[str] = (),
    reduce_range: bool | None = None,
) -> Path:
    """Write the static int8 (QDQ) version of the float32 ONNX model ``fp32`` to ``out``; returns ``out``.

    Args:
        fp32: the float32 model of :func:`doubleunet_segment.inference.onnx_runtime.export_onnx` (input ``image``).
        out: where the int8 model goes; written under a temporary name and renamed, so a cache never holds a
            half-written model.
        calibration: network inputs, each (N, C, H, W) float32 as the engine feeds them (H, W multiples of 16).
        keep_float: ONNX node-name prefixes to leave in float32; the exporter names nodes by module path, e.g.
            ``/head2/`` or ``/encoder1/stages.0/``.
        reduce_range: 7-bit weights; None: when the CPU has no VNNI (:func:`.cpu.cpu_has_vnni`).

    Raises:
        ValueError: ``calibration`` is empty.
        ImportError: onnxruntime is not installed.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    batches = [np.ascontiguousarray(x, dtype=np.float32) for x in calibration]
    if not batches:
        raise ValueError("int8 calibration needs at least one input batch")
    fp32, out = Path(fp32), Path(out)
    names = [node.name for node in onnx.load(str(fp32), load_external_data=False).graph.node]
    excluded = [name for name in names if any(name.startswith(prefix) for prefix in keep_float)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to run shape pre-processing first: the export is already inferred
    try:
        quantize_static(
            str(fp32),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # every op type ONNX Runtime can quantize, not only Conv and MatMul: tensors then stay uint8 from one
            # convolution to the next (ReLU folded into the convolution's output range, pooling, concatenation,
            # upsampling and the excitation products in uint8). Hippocampus 2.5D model, AVX2-only EPYC, 2 threads,
            # 15 interleaved runs, median per batch of 16 (52) slices of 48 x 48: 0.282 s (0.900 s) against 0.333
            # s (1.010 s) with Conv and MatMul alone; worst validation crop's mask against float32 0.9949 (0.9941).
            op_types_to_quantize=None,
            nodes_to_exclude=excluded,
            reduce_range=(not cpu_has_vnni()) if reduce_range is None else reduce_range,
        )
        tmp.replace(out)
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)
    return out
