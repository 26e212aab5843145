"""Why a model's int8 masks move: quantization emulated in float32 PyTorch, part by part.

The engine's int8 path (ONNX Runtime static QDQ) is accepted only where every validation image's mask keeps Dice
>= 0.99 against float32. When a model fails that, this script tells which rounding causes it. It fake-quantizes
the shipped network in float32 and compares thresholded masks with float32's on the model's validation images,
fed as the engine feeds them. Four set-ups are emulated:

- weights only, 8-bit per output channel (symmetric), as a VNNI CPU computes them;
- weights only, 7-bit (what ONNX Runtime's ``reduce_range`` uses on CPUs without VNNI);
- activations only: uint8 per tensor at each convolution's input, MinMax ranges from the training images;
- both, 8-bit and 7-bit;
- then both (8-bit), in one top-level part of the network at a time (encoder1, aspp1, decoder1, head1, ...).

The emulation rounds where ONNX Runtime does (convolution inputs and weights), not every tensor it quantizes, and
it has no integer saturation. It shows sensitivity; it does not reproduce the int8 model's exact masks.

    python benchmarks/int8_sensitivity.py [--model polyp] [--images 32] [--calibration 16]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np
import torch


def fake_quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` (out, in, ...) rounded to ``bits``-bit symmetric integers per output channel, back in float."""
    top = 2 ** (bits - 1) - 1
    scale = weight.abs().flatten(1).amax(1).clamp(min=1e-12).div(top).view(-1, *[1] * (weight.ndim - 1))
    return (weight / scale).round().clamp(-top, top) * scale


def fake_quantize_input(low: float, high: float) -> Callable:
    """A forward pre-hook rounding a layer's input to uint8 over [min(low, 0), max(high, 0)] (ONNX Runtime's
    asymmetric activation scheme)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255 or 1.0
    zero = round(-low / scale)

    def hook(module: torch.nn.Module, inputs: tuple) -> tuple:
        return (((inputs[0] / scale).round() + zero).clamp(0, 255).sub(zero).mul(scale),)

    return hook


def main(argv: list[str] | None = None) -> int:
    """Print the masks' Dice against float32 per emulated set-up; 1 when the model has no sample data here."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="polyp", help="a shipped model (default: %(default)s)")
    p.add_argument("--images", type=int, default=32, help="validation images to compare on (default: %(default)s)")
    p.add_argument("--calibration", type=int, default=16, help="training images for the activation ranges")
    args = p.parse_args(argv)

    from doubleunet_segment.catalog import resolve_model
    from doubleunet_segment.inference.precision import MIN_IMAGE_DICE, mask_dice, validation_images
    from doubleunet_segment.inference.predictor import CALIBRATION_SLICES, Predictor

    try:
        spec = resolve_model(args.model)
    except FileNotFoundError as err:
        p.error(str(err))
    predictor = Predictor(spec, precision="fp32", backend="torch", device="cpu")
    network = predictor._torch_network.float().to(memory_format=torch.contiguous_format).eval()
    training = validation_images(spec, args.calibration, "training", CALIBRATION_SLICES)  # as the engine calibrates
    calibration = predictor._network_inputs(predictor._as_fed(training))
    inputs = predictor._network_inputs(predictor._as_fed(validation_images(spec, args.images)))
    if not calibration or not inputs:
        print(f"model {spec.name!r}: no sample images here", file=sys.stderr)
        return 1
    layers = {n: m for n, m in network.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)}
    weights = {n: m.weight.detach().clone() for n, m in layers.items()}
    ranges: dict[str, tuple[float, float]] = {}

    def record(name: str) -> Callable:
        def hook(module: torch.nn.Module, inputs: tuple) -> None:
            low, high = ranges.get(name, (0.0, 0.0))
            ranges[name] = (min(low, inputs[0].min().item()), max(high, inputs[0].max().item()))

        return hook

    def masks() -> list[np.ndarray]:
        with torch.inference_mode():
            return [(network(torch.from_numpy(x)) > spec.threshold).numpy() for x in inputs]

    handles = [m.register_forward_pre_hook(record(n)) for n, m in layers.items()]
    with torch.inference_mode():
        for x in calibration:
            network(torch.from_numpy(x))
    for handle in handles:
        handle.remove()
    reference = masks()

    def emulate(bits: int | None, activations: bool, part: str | None = None) -> list[float]:
        hooks = []
        for name, module in layers.items():
            chosen = part is None or name.split(".")[0] == part
            module.weight.data = fake_quantize_weight(weights[name], bits) if bits and chosen else weights[name]
            if activations and chosen:
                hooks.append(module.register_forward_pre_hook(fake_quantize_input(*ranges[name])))
        try:
            return [mask_dice(a, b) for a, b in zip(masks(), reference, strict=True)]
        finally:
            for hook in hooks:
                hook.remove()

    def row(label: str, dice: list[float]) -> None:
        below = sum(d < MIN_IMAGE_DICE for d in dice)
        print(f"{label:36s} {np.mean(dice):6.4f} {min(dice):6.4f} {below:5d}", flush=True)

    print(f"model {spec.name}: {len(inputs)} validation images, ranges from {len(calibration)} training images")
    print(f"{'emulated':36s} {'mean':>6s} {'worst':>6s} {'< ' + str(MIN_IMAGE_DICE):>5s}")
    for label, bits, activations in (
        ("weights 8-bit", 8, False),
        ("weights 7-bit", 7, False),
        ("activations uint8", None, True),
        ("weights 8-bit + activations", 8, True),
        ("weights 7-bit + activations", 7, True),
    ):
        row(label, emulate(bits, activations))
    for part in sorted({name.split(".")[0] for name in layers}):
        row(f"only {part} (8-bit + activations)", emulate(8, True, part))
    return 0


if __name__ == "__main__":
    sys.exit(main())
