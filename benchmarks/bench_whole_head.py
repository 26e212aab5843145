"""Seconds per whole-head T1 study, by stage, with localisation against the whole-volume path it replaces.

The real head of the sample data (``wholehead-t1/aomic-piop2-sub-0001/orig.mgz``: 256 x 256 x 256 at 1 mm, skull
and face) goes through the batch runner twice in the same run: with localisation (register to MNI152, segment a
box around each hippocampus) and, as the baseline, with ``--localize off`` (every slice of the head through the
sliding window, the path before localisation). The table gives each stage (read, registration, inference,
write) and the speed-up over the baseline. Issue target: at most 15 s end to end on a 2-core CPU.

    python benchmarks/bench_whole_head.py [--no-baseline] [--json results/whole_head.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from argparse import Namespace
from pathlib import Path

from doubleunet_segment import paths
from doubleunet_segment.catalog import read_catalog
from doubleunet_segment.data.cases import discover
from doubleunet_segment.inference.predictor import Predictor
from doubleunet_segment.inference.runner import segment_cases


def run(study: Path, out: Path, predictor: Predictor, localize: str) -> tuple[float, dict[str, float], bool]:
    """Wall seconds, stage seconds and success of one pass of the batch runner over ``study``."""
    cases, notes = discover([str(study)])
    options = Namespace(
        output=out, format=None, overwrite=True, save_probabilities=False, progress="none", localize=localize
    )
    start = time.perf_counter()
    (result,) = segment_cases(cases, notes, predictor, options)
    return time.perf_counter() - start, result.stages, result.ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=paths.sample_data())
    parser.add_argument("--no-baseline", action="store_true", help="skip the whole-volume pass (about 5 min)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    study = args.samples / "wholehead-t1" / "aomic-piop2-sub-0001" / "orig.mgz"
    predictor = Predictor(read_catalog()["hippocampus"], device="auto")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        run(study, Path(tmp) / "warm", predictor, "on")  # template load and first-call costs out of the figures
        for name, localize in (("localised", "on"), ("whole volume", "off")):
            if localize == "off" and args.no_baseline:
                continue
            seconds, stages, ok = run(study, Path(tmp) / localize, predictor, localize)
            rows[name] = {"seconds": round(seconds, 2), "ok": ok, **{k: round(v, 2) for k, v in stages.items()}}
    print(f"whole-head T1 {study.name}, {predictor.device_reason}")
    for name, row in rows.items():
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in row.items() if k not in ("seconds", "ok"))
        print(f"  {name:13s} {row['seconds']:7.2f} s  {stages}")
    if "whole volume" in rows:
        ratio = rows["whole volume"]["seconds"] / rows["localised"]["seconds"]
        print(f"  localised is {ratio:.1f}x faster than the whole-volume path measured in this run")
        rows["speedup"] = round(ratio, 1)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
