"""Seconds per hippocampus crop: float32 against the engine's own path, and one slice axis against the views.

This times :meth:`Predictor.segment` on real MSD crops (the hippocampus bundle's validation cases), after one
warm-up call each, in one run:

- the baseline: the shipped model's primary slice axis in float32 through PyTorch;
- the same axis on the path the predictor picks by itself (precision, backend, threads; int8 where its masks
  pass the engine's check), with the masks' Dice against the baseline's;
- the model's views on that path (a multi-view model segments every slice of each of its axes and averages the
  probabilities, so it costs about as many times one view as it has views).

Issue 17's budget is under 1 s per crop on the project's CPU.

    python benchmarks/bench_views.py [--cases 5] [--json results/views.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from doubleunet_segment import paths
from doubleunet_segment.catalog import read_catalog
from doubleunet_segment.data.datalist import load_items
from doubleunet_segment.data.image_io import read_volume_file
from doubleunet_segment.inference.precision import mask_dice
from doubleunet_segment.inference.predictor import Predictor

BUDGET_S = 1.0  # issue 17: seconds per crop on the project's CPU


def seconds_per_crop(predictor: Predictor, crops: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    """Median wall seconds of ``predictor.segment`` over ``crops`` (after one warm-up call), and the label maps."""
    predictor.segment(crops[0])
    times, labels = [], []
    for crop in crops:
        start = time.perf_counter()
        labels.append(predictor.segment(crop).labels)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=5, help="validation crops to time")
    parser.add_argument("--views", default=None, help="views to time, e.g. 1,0,2 (default: the shipped model's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    spec = read_catalog()["hippocampus"]
    if args.views:
        axes = tuple(int(a) for a in args.views.split(","))
        spec = replace(spec, slice_axis=axes[0], consensus_axes=axes if len(axes) > 1 else ())
    items = load_items(paths.sample_data(), spec.bundle / "configs" / "datalist.json", "validation", args.cases)
    crops = [read_volume_file(Path(item["image"])).array for item in items]
    single = replace(spec, consensus_axes=())
    variants = [
        (f"axis {spec.slice_axis}, float32", single, {"precision": "fp32", "backend": "torch"}),
        (f"axis {spec.slice_axis}, engine's path", single, {}),
    ]
    if spec.consensus_axes:
        variants.append((f"views {list(spec.views)}, engine's path", spec, {}))
    rows: dict[str, dict] = {}
    reference: list[np.ndarray] = []
    for name, variant, path in variants:
        predictor = Predictor(variant, device="auto", **path)
        seconds, labels = seconds_per_crop(predictor, crops)
        reference = reference or labels
        worst = min(mask_dice(a, b) for a, b in zip(reference, labels, strict=True))
        rows[name] = {
            "seconds": round(seconds, 3),
            "worst_dice_vs_fp32": round(worst, 4),
            "path": predictor.path_reason,
        }
    shapes = ", ".join("x".join(map(str, c.shape[1:])) for c in crops)
    print(f"hippocampus crops ({shapes}), median of {len(crops)}; budget {BUDGET_S} s per crop")
    base = next(iter(rows.values()))["seconds"]
    for name, row in rows.items():
        print(
            f"  {name:30s} {row['seconds']:6.3f} s/crop  {base / row['seconds']:4.2f}x axis-{spec.slice_axis} float32  "
            f"worst Dice vs axis-{spec.slice_axis} float32 {row['worst_dice_vs_fp32']:.4f}  ({row['path']})"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
