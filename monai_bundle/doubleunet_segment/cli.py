"""``doubleunet-segment``: batch segmentation of DICOM studies, NIfTI/NRRD volumes and 2D images.

Each input becomes one or more cases (every DICOM series is a case); each case gets its own folder in
OUTDIR with a NIfTI label map on the source geometry, a ``segments.json`` of names/colours/codes,
a DICOM SEG for DICOM input, and PNGs a person can look at. A failed case is reported and the rest
still run; the exit status says whether all succeeded. Inputs are never written to; outputs are
written atomically and never overwritten unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path

from . import __version__
from .catalog import read_catalog, resolve_model
from .data.cases import discover
from .inference.precision import BACKENDS, PRECISIONS
from .inference.predictor import Predictor
from .inference.progress import show_log_on_stderr
from .inference.runner import FORMATS, check_output_location, parse_formats, segment_cases
from .inference.sharding import local_device, shard_of
from .inference.whole_head import check_localize

__all__ = ["EPILOG", "build_parser", "check_usage", "main"]

EPILOG = """\
examples:
  doubleunet-segment ../shared/data/kvasir-seg/images/cju0qoxqj9q6s0835b43399p4.jpg -o out
  doubleunet-segment /data/dicom_studies -o out --model hippocampus --format nifti,dicom-seg
  doubleunet-segment orig.mgz -o out --model hippocampus --uncertainty   (a whole-head T1: volumetry)
  doubleunet-segment scan.nii.gz -o out --device cuda --tta

outputs per case (OUTDIR/<case>/): segmentation.nii.gz (labels on the input grid), segmentation.seg.nrrd,
segments.json, seg.dcm (DICOM input), mask.png + overlay.png (2D images), views.png (volumes),
probabilities.nii.gz (--save-probabilities). A whole-head study with the hippocampus model (--localize) also
gets left/right labels 1-4, volumes.json + volumes.csv (mL, asymmetry, eTIV, QC verdict), report.png,
sr.dcm (DICOM input: TID 1500 volumes referencing the SEG), uncertainty.nii.gz (--uncertainty), and the
batch OUTDIR/volumes_summary.csv. Exit status: 0 when every case succeeded, 1 when any failed, 2 on bad
usage, 130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM); finished cases are kept.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``doubleunet-segment`` argument parser."""
    models = ", ".join(sorted(read_catalog()))
    p = argparse.ArgumentParser(
        prog="doubleunet-segment",
        description="Segment DICOM studies, NIfTI/MGZ/NRRD volumes and 2D images with DoubleU-Net.",
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
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto: int8/bf16/fp16 where fp32 masks hold")
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
    p.add_argument(
        "--localize",
        default="auto",
        choices=["auto", "on", "off"],
        help="whole-head studies for crop-trained models (hippocampus): register to the MNI152 template, segment a "
        "box around each hippocampus, report left/right volumes. auto: when the field of view is far larger than "
        "the training crops",
    )
    p.add_argument(
        "--uncertainty",
        action="store_true",
        help="whole-head studies: also write uncertainty.nii.gz, where DoubleU-Net's two stages disagree (0-1)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--progress",
        default="bar",
        choices=["bar", "json", "none"],
        help="bar: progress bars and notes; json: protocol events on stdout (for Slicer); "
        "none: notes and the summary as plain lines",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``doubleunet-segment``.

    Args:
        argv: the arguments, without the program name; default ``sys.argv[1:]``.

    Returns:
        0 when every case succeeded, 1 when any failed, 130 when interrupted (Ctrl-C, SIGINT) and 143 when
        terminated (SIGTERM: a Slurm time limit, ``docker stop``); finished cases are kept, the case being
        written leaves nothing.

    Raises:
        SystemExit: 2 on bad usage or input (missing files, unknown model, no CUDA), 0 for ``--help``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    check_usage(parser, args)
    signals: list[int] = []

    def on_sigterm(signum: int, frame: object) -> None:
        signals.append(signum)
        raise KeyboardInterrupt  # the same path as Ctrl-C: the atomic writers remove their temporary files

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: leave SIGTERM as it is
        previous = None
    results: list = []
    cases: list = []
    try:
        return _run(parser, args, results, cases)
    except KeyboardInterrupt:
        sys.stderr.write(
            f"doubleunet-segment: interrupted: {len(results)} of {len(cases)} case(s) done; finished cases are kept\n"
        )
        return 128 + (signals[0] if signals else signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 naming the flag for values no run could use (before anything is read or loaded)."""
    if args.threshold is not None and not (0.0 < args.threshold < 1.0 and math.isfinite(args.threshold)):
        parser.error(f"argument --threshold: must lie strictly between 0 and 1, got {args.threshold}")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"argument --batch-size: must be at least 1, got {args.batch_size}")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, results: list, found: list) -> int:
    """The run itself; ``results`` receives each finished case's result and ``found`` the cases to run."""
    made = False
    try:
        parse_formats(args.format)
        made = check_output_location(args.output, args.inputs)
        cases, notes = discover(args.inputs)  # bad input fails before the model is loaded
        rank, world = shard_of(args.shard)
        cases = cases[rank::world]
        found.extend(cases)
        spec = resolve_model(args.model)
        check_localize(args.localize, spec)
        if args.threshold is not None:
            spec.threshold = args.threshold
        if args.largest_component is not None:
            spec.largest_component = args.largest_component
        predictor = Predictor(
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
        if made:
            try:
                args.output.rmdir()  # made by the check above; only while still empty
            except OSError:
                pass
        parser.exit(2, f"doubleunet-segment: error: {err}\n")
    show_log_on_stderr()
    segment_cases(cases, notes, predictor, args, results)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
