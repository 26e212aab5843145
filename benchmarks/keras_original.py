"""The authors' Keras DoubleU-Net, rebuilt from ../shared/DESIGN.md, as the speed baseline of ``make bench``.

Built layer by layer in the order of the original ``model.py`` (Jha et al., CBMS 2020), with Keras' own VGG19
(``weights=None``: nothing is downloaded) and random weights: the same FLOPs and shapes as the original. The
optional extra ``keras`` installs TensorFlow (``pip install -e '.[keras]'``); without it the bench reports
against the figure recorded in issue 18 and says so.

``python benchmarks/keras_original.py --parity`` sets every weight by the closed-form rule of
../shared/keras-parity/README.md and compares both outputs with the fixture made from the authors' own code:
it prints the largest difference and fails above 1e-4. It also checks the parameter count against DESIGN.md
(29,297,570 with BatchNorm statistics).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(os.environ.get("DOUBLEUNET_KERAS_PARITY", REPO.parent / "shared" / "keras-parity"))
KERAS_PARAMS = 29_297_570  # DESIGN.md: Keras count_params() of the original, BatchNorm statistics included


def available() -> bool:
    """True where TensorFlow and Keras import."""
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def build(height: int, width: int, channels: int = 3):
    """The original DoubleU-Net as a Keras model: (N, H, W, C) in, (N, H, W, 2) out (both stages' sigmoids)."""
    from keras import layers
    from keras.applications import VGG19
    from keras.models import Model

    def squeeze_excite(x, ratio: int = 8):
        filters = x.shape[-1]
        se = layers.GlobalAveragePooling2D()(x)
        se = layers.Reshape((1, 1, filters))(se)
        se = layers.Dense(filters // ratio, activation="relu", use_bias=False)(se)
        se = layers.Dense(filters, activation="sigmoid", use_bias=False)(se)
        return layers.Multiply()([x, se])

    def conv_block(x, filters: int):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same")(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        return squeeze_excite(x)

    def aspp(x, filters: int = 64):
        h, w = x.shape[1], x.shape[2]
        pooled = layers.AveragePooling2D(pool_size=(h, w))(x)
        pooled = layers.Conv2D(filters, 1, padding="same")(pooled)
        pooled = layers.Activation("relu")(layers.BatchNormalization()(pooled))
        branches = [layers.UpSampling2D((h, w), interpolation="bilinear")(pooled)]
        for kernel, rate in ((1, 1), (3, 6), (3, 12), (3, 18)):
            y = layers.Conv2D(filters, kernel, dilation_rate=rate, padding="same", use_bias=False)(x)
            branches.append(layers.Activation("relu")(layers.BatchNormalization()(y)))
        y = layers.Conv2D(filters, 1, padding="same", use_bias=False)(layers.Concatenate()(branches))
        return layers.Activation("relu")(layers.BatchNormalization()(y))

    def head(x):
        return layers.Activation("sigmoid")(layers.Conv2D(1, 1, padding="same")(x))

    inputs = layers.Input((height, width, channels))
    vgg = VGG19(include_top=False, weights=None, input_tensor=inputs)
    skips1 = [vgg.get_layer(n).output for n in ("block1_conv2", "block2_conv2", "block3_conv4", "block4_conv4")]
    x = aspp(vgg.get_layer("block5_conv4").output)
    for filters, skip in zip((256, 128, 64, 32), reversed(skips1)):
        x = layers.UpSampling2D((2, 2), interpolation="bilinear")(x)
        x = conv_block(layers.Concatenate()([x, skip]), filters)
    out1 = head(x)
    x = layers.Multiply()([inputs, out1])
    skips2 = []
    for filters in (32, 64, 128, 256):
        x = conv_block(x, filters)
        skips2.append(x)
        x = layers.MaxPooling2D((2, 2))(x)
    x = aspp(x)
    for filters, skip1, skip2 in zip((256, 128, 64, 32), reversed(skips1), reversed(skips2)):
        x = layers.UpSampling2D((2, 2), interpolation="bilinear")(x)
        x = conv_block(layers.Concatenate()([x, skip1, skip2]), filters)
    return Model(inputs, layers.Concatenate()([out1, head(x)]))


def parity() -> float:
    """Largest difference between this build and the fixture's outputs, weights set by the fixture's rule.

    Raises:
        FileNotFoundError: the fixture is missing.
        AssertionError: the parameter count or the weight shapes differ from the original's.
    """
    spec = json.loads((FIXTURE / "keras_weights.json").read_text())
    x = np.load(FIXTURE / "input_nhwc.npy")
    model = build(x.shape[1], x.shape[2], x.shape[3])
    assert model.count_params() == KERAS_PARAMS, f"{model.count_params():,} parameters, DESIGN.md says {KERAS_PARAMS:,}"
    listed = sorted(spec["weights"], key=lambda w: w["index"])
    assert [list(v.shape) for v in model.weights] == [w["shape"] for w in listed], "weight shapes differ"
    from doubleunet_segment.networks.keras_weights import closed_form_weight

    model.set_weights([closed_form_weight(w["index"], int(spec["phase"]), w["kind"], w["shape"]) for w in listed])
    return float(np.abs(model.predict_on_batch(x) - np.load(FIXTURE / "output_nhwc.npy")).max())


def seconds_per_image(size: int, batch: int = 1, repeats: int = 3) -> float:
    """Best wall time of ``predict_on_batch`` on a (batch, size, size, 3) input, per image, after a warm-up."""
    model = build(size, size)
    x = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
    model.predict_on_batch(x)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(x)
        best = min(best, time.perf_counter() - start)
    return best / batch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parity", action="store_true", help="check the build against ../shared/keras-parity")
    p.add_argument("--size", type=int, default=512, help="time one size x size RGB image (batch 1)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if not available():
        print("TensorFlow is not installed: pip install -e '.[keras]'", file=sys.stderr)
        return 2
    if args.parity:
        diff = parity()
        print(json.dumps({"parity_max_abs_diff": diff}))
        return 0 if diff <= 1e-4 else 1
    print(json.dumps({"size": args.size, "s_per_image": seconds_per_image(args.size, repeats=args.repeats)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
