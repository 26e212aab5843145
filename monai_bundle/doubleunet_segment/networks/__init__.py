"""DoubleU-Net and its parts: the network, its VGG19 encoder, weight files, the Keras weight mapping.

The names below are imported on first use, so importing the package itself imports nothing heavy.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_PUBLIC = {
    "DoubleUNet": "doubleunet",
    "VGG19Encoder": "vgg19",
    "load_weights": "weights",
    "load_state": "weights",
    "load_keras_weights": "keras_weights",
}

__all__ = list(_PUBLIC)

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
