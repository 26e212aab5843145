"""Seconds per hippocampus crop: the shipped model's own views against one slice axis, in the same run.

A multi-view model segments every slice of each of its axes and averages the probabilities, so it costs about
as many times one view as it has views. This times :meth:`Predictor.segment` on real MSD crops (the hippocampus
bundle's validation cases) for the single primary axis (the baseline) and for the model's views, with the path
the predictor picks by itself (precision, backend, threads), after one warm-up call each. Issue 17's budget is
under 1 s per crop on the project's CPU.

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
from doubleunet_segment.inference.predictor import Predictor


def seconds_per_crop(predictor: Predictor, crops: list[np.ndarray]) -> float:
    """Median wall seconds of ``predictor.segment`` over ``crops`` (after one warm-up call)."""
    predictor.segment(crops[0])
    times = []
    for crop in crops:
        start = time.perf_counter()
        predictor.segment(crop)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


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
    rows = {}
    for name, variant in ((f"one axis ({spec.slice_axis})", single), (f"views {list(spec.views)}", spec)):
        predictor = Predictor(variant, device="auto")
        rows[name] = {"seconds": round(seconds_per_crop(predictor, crops), 3), "path": predictor.path_reason}
    shapes = ", ".join("x".join(map(str, c.shape[1:])) for c in crops)
    print(f"hippocampus crops ({shapes}), median of {len(crops)}")
    base = next(iter(rows.values()))["seconds"]
    for name, row in rows.items():
        print(f"  {name:18s} {row['seconds']:6.3f} s/crop  {row['seconds'] / base:4.2f}x one axis  ({row['path']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
