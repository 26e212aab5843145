"""DoubleU-Net Segment: the one implementation behind the MONAI bundle, the CLI and the Slicer module.

The package is laid out by concern:

- :mod:`.networks`: DoubleU-Net, its VGG19 encoder, weight files and the Keras weight mapping;
- :mod:`.data`: readers and writers (DICOM series, DICOM SEG, NIfTI/NRRD, images), case discovery,
  datalists, atomic writes, overlays;
- :mod:`.inference`: the :class:`Predictor`, the slice inferer, precision/backend choice, batching, the batch
  runner, the persistent worker and its event protocol;
- :mod:`.training`: handlers, losses, distributed training, evaluation;
- :mod:`.release`: promoting weights, TorchScript export, model-card figures, the demo;
- top level: the model :mod:`.catalog`, :mod:`.transforms`, :mod:`.segments`, :mod:`.paths` and the thin :mod:`.cli`.

The public names below are imported on first use, so ``import doubleunet_segment`` (or its event protocol)
does not import torch.
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.6.1"

_PUBLIC = {
    "DoubleUNet": "networks.doubleunet",
    "ModelSpec": "catalog",
    "read_catalog": "catalog",
    "resolve_model": "catalog",
    "Predictor": "inference.predictor",
    "Prediction": "inference.predictor",
    "segment_inputs": "inference.runner",
    "SegmentInfo": "segments",
}

__all__ = ["__version__", *_PUBLIC]

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
