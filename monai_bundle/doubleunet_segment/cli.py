"""``doubleunet-segment``: batch segmentation of DICOM studies, NIfTI/NRRD volumes and 2D images.

Each input becomes one or more cases (every DICOM series is a case); each case gets its own folder in
OUTDIR with a NIfTI label map on the source geometry, a ``segments.json`` of names/colours/codes,
a DICOM SEG for DICOM input, and PNGs a person can look at. A failed case is reported and the rest
still run; the exit status says whether all succeeded. Inputs are never written to; outputs are
written atomically and never overwritten unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import atomic_write_text, refuse_overwrite
from .cases import Case, Volume, discover
from .distributed import local_device, shard_of
from .engine import Engine, Segmentation
from .fastpath import BACKENDS, PRECISIONS, prefetch
from .models import ModelSpec, read_catalog, resolve_model
from .nifti_io import write_nifti
from .overlay import blend, mask_png, orthogonal_views, save_png

FORMATS = ("nifti", "dicom-seg", "png", "seg-nrrd")
EPILOG = """\
examples:
  doubleunet-segment ../shared/data/kvasir-seg/images/cju0qoxqj9q6s0835b43399p4.jpg -o out
  doubleunet-segment /data/dicom_studies -o out --model hippocampus --format nifti,dicom-seg
  doubleunet-segment scan.nii.gz -o out --device cuda --tta

outputs per case (OUTDIR/<case>/): segmentation.nii.gz (labels on the input grid), segments.json,
seg.dcm (DICOM input), mask.png + overlay.png (2D images), views.png (volumes), probabilities.nii.gz
(--save-probabilities). Exit status: 0 when every case succeeded, 1 when any failed, 2 on bad usage.
"""


def build_parser() -> argparse.ArgumentParser:
    models = ", ".join(sorted(read_catalog()))
    p = argparse.ArgumentParser(
        prog="doubleunet-segment",
        description="Segment DICOM studies, NIfTI/NRRD volumes and 2D images with DoubleU-Net.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="DICOM folder (searched recursively), volume file or image"
    )
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="folder for the results")
    p.add_argument("--model", default=None, help=f"shipped model name ({models}; default polyp), bundle folder or .pt")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default auto)")
    p.add_argument(
        "--format", default=None, help=f"comma-separated outputs from {', '.join(FORMATS)} (default: all that apply)"
    )
    p.add_argument("--threshold", type=float, default=None, help="foreground probability cut for binary models")
    p.add_argument("--tta", action="store_true", help="test-time augmentation with flips (3x slower)")
    p.add_argument(
        "--largest-component",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep only each structure's largest connected piece (default: the model's own; hippocampus on)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="slices per forward pass (default: per device)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto: bf16/fp16 if it keeps fp32 masks")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="auto: ONNX Runtime for fp32 if faster")
    p.add_argument(
        "--skip-empty",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="label slices with every voxel <= --background as background unseen (default off)",
    )
    p.add_argument("--background", type=float, default=None, help="skip threshold (default: the volume's minimum)")
    p.add_argument("--shard", default=None, metavar="R/N", help="segment cases R, R+N, ... (default: torchrun's rank)")
    p.add_argument("--save-probabilities", action="store_true", help="also write probabilities.nii.gz")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--progress",
        default="bar",
        choices=["bar", "json", "none"],
        help="progress bars, JSON lines (for Slicer), none",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def parse_formats(text: str | None) -> set[str]:
    if text is None:
        return set(FORMATS)
    chosen = {f.strip() for f in text.split(",") if f.strip()}
    unknown = chosen - set(FORMATS)
    if unknown or not chosen:
        raise ValueError(f"unknown --format {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    return chosen


@dataclass
class CaseResult:
    case: Case
    ok: bool
    seconds: float = 0.0
    slices: int = 0
    voxels: int = 0
    outputs: dict[str, str] = field(default_factory=dict)
    message: str = ""


class Reporter:
    """Progress for people (tqdm bars) or for programs (one JSON object per line on stdout)."""

    def __init__(self, mode: str, n_cases: int) -> None:
        self.mode = mode
        self.overall = None
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._tqdm = tqdm
            self.overall = tqdm(total=n_cases, desc="cases", unit="case", position=0, file=sys.stderr)

    def event(self, **data: Any) -> None:
        if self.mode == "json":
            print(json.dumps(data), flush=True)
        elif self.mode == "bar" and data["event"] in ("note", "device", "error"):
            text = data.get("message") or data.get("reason")
            self._tqdm.write(f"{data.get('case', '')}: {text}" if data.get("case") else str(text), file=sys.stderr)

    def start_case(self, case: Case, total: int) -> None:
        self.event(event="start", case=case.name, total=total)
        if self.mode == "bar":
            self.bar = self._tqdm(
                total=total, desc=case.name[:30], unit="slice", position=1, leave=False, file=sys.stderr
            )

    def progress(self, case: Case, done: int, total: int) -> None:
        self.event(event="progress", case=case.name, done=done, total=total)
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()

    def end_case(self, result: CaseResult) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.overall is not None:
            self.overall.update(1)
        if result.ok:
            self.event(event="done", case=result.case.name, seconds=round(result.seconds, 2), outputs=result.outputs)
        else:
            self.event(event="error", case=result.case.name, message=result.message)

    def close(self) -> None:
        if self.overall is not None:
            self.overall.close()


def _planned_outputs(case_dir: Path, volume: Volume, formats: set[str], save_probs: bool) -> dict[str, Path]:
    out = {"segments": case_dir / "segments.json"}
    if "nifti" in formats:
        out["nifti"] = case_dir / "segmentation.nii.gz"
    if "seg-nrrd" in formats and not volume.is_2d_image:
        out["seg-nrrd"] = case_dir / "segmentation.seg.nrrd"
    if "dicom-seg" in formats and volume.series is not None:
        out["dicom-seg"] = case_dir / "seg.dcm"
    if "png" in formats:
        if volume.is_2d_image:
            out["mask"] = case_dir / "mask.png"
            out["overlay"] = case_dir / "overlay.png"
        else:
            out["views"] = case_dir / "views.png"
    if save_probs:
        out["probabilities"] = case_dir / "probabilities.nii.gz"
    return out


def write_outputs(
    case_dir: Path, volume: Volume, seg: Segmentation, spec: ModelSpec, planned: dict[str, Path], overwrite: bool
) -> None:
    """Every planned file, each written atomically; ``segments.json`` last, so its presence means done."""
    segments = spec.segment_infos()
    if "nifti" in planned:
        write_nifti(seg.labels, volume.affine, planned["nifti"], overwrite=overwrite)
    if "probabilities" in planned:
        write_nifti(seg.probabilities, volume.affine, planned["probabilities"], overwrite=overwrite)
    if "seg-nrrd" in planned:
        from .nifti_io import write_seg_nrrd

        write_seg_nrrd(seg.labels, volume.affine, segments, planned["seg-nrrd"], overwrite=overwrite)
    if "dicom-seg" in planned:
        from .dicom_seg import write_dicom_seg

        write_dicom_seg(
            volume.series,
            seg.labels,
            segments,
            planned["dicom-seg"],
            algorithm_version=__version__,
            overwrite=overwrite,
        )
    if "mask" in planned:
        save_png(mask_png(seg.labels[:, :, 0]), planned["mask"], overwrite)
        save_png(blend(volume.array[:, :, :, 0], seg.labels[:, :, 0], segments), planned["overlay"], overwrite)
    if "views" in planned:
        save_png(orthogonal_views(volume.array, seg.labels, segments), planned["views"], overwrite)
    info = {
        "model": spec.name,
        "software": f"DoubleU-Net Segment {__version__}",
        "device": seg.device,
        "device_reason": seg.device_reason,
        "threshold": spec.threshold if spec.out_channels > 1 else None,
        "largest_component": spec.largest_component,
        "shape": list(seg.labels.shape),
        "segments": [s.to_dict() for s in segments],
        "voxels": {s.name: int((seg.labels == s.value).sum()) for s in segments},
        "files": {k: p.name for k, p in planned.items() if k != "segments"},
    }
    atomic_write_text(planned["segments"], json.dumps(info, indent=1) + "\n", overwrite=overwrite)


def check_output_location(output: Path, inputs: list[str]) -> None:
    """Refuse an output folder inside (or equal to) an input folder: inputs are never written to."""
    out = output.expanduser().resolve()
    for item in inputs:
        src = Path(item).expanduser().resolve()
        folder = src if src.is_dir() else src.parent
        if src.is_dir() and (out == folder or folder in out.parents):
            raise ValueError(f"output folder {out} lies inside input folder {folder}; choose another -o")


def run_case(case: Case, engine: Engine, args: argparse.Namespace, formats: set[str], reporter: Reporter) -> CaseResult:
    start = time.monotonic()
    case_dir = args.output / case.name
    try:
        volume = case.load()
        for note in volume.warnings:
            reporter.event(event="note", case=case.name, message=note)
        planned = _planned_outputs(case_dir, volume, formats, args.save_probabilities)
        for path in planned.values():
            refuse_overwrite(path, args.overwrite)
        axis = 2 if volume.is_2d_image else engine.inferer.slice_axis
        n = volume.array.shape[axis + 1]
        reporter.start_case(case, n)
        seg = engine.segment(
            volume.array, lambda done, total: reporter.progress(case, done, total), args.save_probabilities
        )
        for note in seg.notes + ([f"{seg.skipped} empty slice(s) labelled background"] if seg.skipped else []):
            reporter.event(event="note", case=case.name, message=note)
        write_outputs(case_dir, volume, seg, engine.spec, planned, args.overwrite)
        voxels = int((seg.labels > 0).sum())
        return CaseResult(case, True, time.monotonic() - start, n, voxels, {k: str(v) for k, v in planned.items()})
    except Exception as err:  # one bad case must not stop the batch
        return CaseResult(case, False, time.monotonic() - start, message=f"{type(err).__name__}: {err}")


def print_summary(results: list[CaseResult], stream=None) -> None:
    stream = stream or sys.stderr
    rows = [("case", "study", "series", "slices", "seconds", "voxels", "result")]
    for r in results:
        rows.append(
            (
                r.case.name,
                r.case.study[-12:],
                r.case.series[-12:],
                str(r.slices),
                f"{r.seconds:.1f}",
                str(r.voxels),
                str(Path(r.outputs["segments"]).parent) if r.ok else f"FAILED: {r.message}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1], file=stream)
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} of {len(results)} case(s) segmented, {failed} failed", file=stream)


def segment_inputs(
    inputs: list[str],
    output: str | Path,
    engine: Engine,
    formats: str | None = None,
    overwrite: bool = False,
    save_probabilities: bool = False,
    progress: str = "bar",
) -> list[CaseResult]:
    """Segment every case of ``inputs`` into ``output``; the bundle's inference config calls this."""
    check_output_location(Path(output), inputs)
    cases, notes = discover(inputs)
    options = argparse.Namespace(
        output=Path(output),
        format=formats,
        overwrite=overwrite,
        save_probabilities=save_probabilities,
        progress=progress,
    )
    return segment_cases(cases, notes, engine, options)


def segment_cases(cases: list[Case], notes: list[str], engine: Engine, options: argparse.Namespace) -> list[CaseResult]:
    """Segment ``cases``; ``options`` carries the command line's output, format, overwrite,
    save_probabilities and progress."""
    progress = options.progress
    chosen = parse_formats(options.format)
    reporter = Reporter(progress, len(cases))
    reporter.event(event="device", device=str(engine.device), reason=engine.device_reason)
    reporter.event(event="note", message=f"fast path: {engine.path_reason}")
    for note in notes:
        reporter.event(event="note", message=note)
    results = []
    for case in prefetch(cases):  # the next case is read while this one is segmented
        result = run_case(case, engine, options, chosen, reporter)
        reporter.end_case(result)
        results.append(result)
    reporter.close()
    if progress != "json":
        print_summary(results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        parse_formats(args.format)
        check_output_location(args.output, args.inputs)
        cases, notes = discover(args.inputs)  # bad input fails before the model is loaded
        rank, world = shard_of(args.shard)
        cases = cases[rank::world]
        spec = resolve_model(args.model)
        if args.threshold is not None:
            spec.threshold = args.threshold
        if args.largest_component is not None:
            spec.largest_component = args.largest_component
        engine = Engine(
            spec,
            device=local_device(args.device, rank),
            batch_size=args.batch_size,
            tta=args.tta,
            precision=args.precision,
            backend=args.backend,
            skip_empty=args.skip_empty,
            background=args.background,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        parser.exit(2, f"doubleunet-segment: error: {err}\n")
    results = segment_cases(cases, notes, engine, args)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
