"""The batch runner behind ``doubleunet-segment``, the bundle's inference config and the Slicer worker.

Each input becomes one or more cases (every DICOM series is a case); each case gets its own folder with a
NIfTI label map on the source geometry, a ``segments.json`` of names/colours/codes, a DICOM SEG for DICOM
input, and PNGs a person can look at. A failed case is reported and the rest still run. Inputs are never
written to; outputs are written atomically and never overwritten unless asked.

A case's outputs are all or nothing: every file is decided before any is written (a DICOM SEG the series
cannot carry is dropped with a note up front), all are written to temporary files, and only then moved into
place together (:func:`doubleunet_segment.data.atomic.atomic_files`). A case that fails at any point leaves no
file of this run in its folder, and a folder it made is removed again. With ``overwrite`` the old files are
replaced only once every new file is complete: a failed run leaves the previous results as they were.

The end-of-run table goes to this module's logger at INFO, one record per line: the CLI shows it on stderr
(:func:`.progress.show_log_on_stderr`), ``monai.bundle run`` through the bundle's
``configs/logging.conf``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..catalog import ModelSpec
from ..data.atomic import OutputExistsError, atomic_files, atomic_write_text, refuse_overwrite
from ..data.cases import Case, discover
from ..data.image_io import Volume
from ..data.nifti_io import write_nifti
from ..data.overlay import blend, mask_png, orthogonal_views, save_png
from . import protocol
from .batching import prefetch
from .geometry import ModelGrid
from .predictor import Prediction, Predictor
from .progress import Reporter
from .whole_head import segment_whole_head, should_localize, whole_head_spec

__all__ = [
    "FORMATS",
    "CaseResult",
    "check_output_location",
    "label_rule",
    "log_summary",
    "exit_if_failed",
    "failure_message",
    "parse_formats",
    "planned_outputs",
    "run_case",
    "write_whole_head_outputs",
    "segment_cases",
    "segment_inputs",
    "summary_lines",
    "write_outputs",
]

logger = logging.getLogger(__name__)

FORMATS = ("nifti", "dicom-seg", "png", "seg-nrrd")
ExtraWriter = Callable[[Path, dict[str, Path]], None]  # (temporary target, every staged target) -> None
SEG_REFERENCES = ("dicom-sr",)  # output kinds that reference the DICOM SEG: not written when the SEG is not


def parse_formats(text: str | Sequence[str] | None) -> set[str]:
    """The output formats of ``--format``.

    Args:
        text: comma-separated names from :data:`FORMATS` (or a list of them: ``monai.bundle run --formats a,b``
            hands over a tuple), or None for all of them.

    Raises:
        ValueError: an unknown name, or none at all.
    """
    if text is None:
        return set(FORMATS)
    names = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    chosen = {f.strip() for f in names if f.strip()}
    unknown = chosen - set(FORMATS)
    if unknown or not chosen:
        raise ValueError(f"unknown --format {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    return chosen


@dataclass
class CaseResult:
    """How one case went.

    Attributes:
        case: the case.
        ok: every output was written.
        seconds: wall time from reading to the last file.
        slices: slices segmented (along the model's slice axis; 1 for a 2D image).
        voxels: foreground voxels in the label map.
        outputs: kind (``segments``, ``nifti``, ``dicom-seg``, ...) -> path written.
        message: ``ExceptionType: message`` of a failed case.
        report: the volumetry of a whole-head case (:class:`doubleunet_segment.reporting.case_report.CaseReport`).
        stages: seconds per stage of a whole-head case: ``read``, ``registration``, ``inference``, ``write``.
    """

    case: Case
    ok: bool
    seconds: float = 0.0
    slices: int = 0
    voxels: int = 0
    outputs: dict[str, str] = field(default_factory=dict)
    message: str = ""
    report: Any = None
    stages: dict[str, float] = field(default_factory=dict)


def planned_outputs(
    case_dir: Path, volume: Volume, formats: set[str], save_probs: bool
) -> tuple[dict[str, Path], list[str]]:
    """Every output of a case, decided before any is written, and notes on formats that do not apply.

    Returns:
        kind -> path (``segments`` last: its presence means the case is done), and notes such as why the
        DICOM SEG is left out.
    """
    out: dict[str, Path] = {}
    notes: list[str] = []
    if "nifti" in formats:
        out["nifti"] = case_dir / "segmentation.nii.gz"
    if "seg-nrrd" in formats and not volume.is_2d_image:
        out["seg-nrrd"] = case_dir / "segmentation.seg.nrrd"
    if "dicom-seg" in formats and volume.series is not None:
        # the reader-side check (when data.dicom_seg provides it) turns a SEG the series cannot carry into a
        # note instead of a failed case; without it a failing SEG writer still leaves nothing behind
        from ..data import dicom_seg  # highdicom: imported only for DICOM input

        check = getattr(dicom_seg, "seg_writable", None)
        reason = check(volume.series) if check is not None else None
        if reason is None:
            out["dicom-seg"] = case_dir / "seg.dcm"
        else:
            notes.append(f"DICOM SEG not written: {reason}")
    if "png" in formats:
        if volume.is_2d_image:
            out["mask"] = case_dir / "mask.png"
            out["overlay"] = case_dir / "overlay.png"
        else:
            out["views"] = case_dir / "views.png"
    if save_probs:
        out["probabilities"] = case_dir / "probabilities.nii.gz"
    out["segments"] = case_dir / "segments.json"
    return out, notes


def label_rule(spec: ModelSpec, postprocessing: object = None) -> dict[str, object]:
    """How probabilities became labels, as ``segments.json`` records it.

    A binary model (one output channel) labels a pixel foreground where its probability is ``>=`` the
    threshold: ``{"threshold": 0.5, "label_rule": "threshold"}`` with the value actually applied (the
    postprocessing's own threshold when it has one, so ``--threshold`` and the Slicer slider count). A
    multi-class model takes the most probable class, background included, and has no threshold:
    ``{"threshold": None, "label_rule": "argmax"}``.

    Args:
        spec: the model.
        postprocessing: the predictor's probabilities -> labels transform (None: the spec's threshold).
    """
    if spec.out_channels == 1:
        threshold = getattr(postprocessing, "threshold", None)
        return {"threshold": float(spec.threshold if threshold is None else threshold), "label_rule": "threshold"}
    return {"threshold": None, "label_rule": "argmax"}


def _write_files(
    volume: Volume,
    seg: Prediction,
    spec: ModelSpec,
    targets: dict[str, Path],
    names: dict[str, str],
    rule: dict[str, object],
    prebuilt: dict[str, Path],
    extra: dict[str, ExtraWriter],
) -> None:
    """Write each output to ``targets`` (fresh temporary paths); ``names`` are the final file names for
    ``segments.json``'s ``files``; ``prebuilt`` holds outputs already written elsewhere (the DICOM SEG);
    ``extra`` writes the kinds the runner does not know itself (the volumetry report)."""
    segments = spec.segment_infos()
    if "nifti" in targets:
        write_nifti(seg.labels, volume.affine, targets["nifti"])
    if "probabilities" in targets:
        write_nifti(seg.probabilities, volume.affine, targets["probabilities"])
    if "seg-nrrd" in targets:
        from ..data.nifti_io import write_seg_nrrd

        write_seg_nrrd(seg.labels, volume.affine, segments, targets["seg-nrrd"])
    if "dicom-seg" in targets:
        os.replace(prebuilt["dicom-seg"], targets["dicom-seg"])  # built (and checked) before the set began
    if "mask" in targets:
        save_png(mask_png(seg.labels[:, :, 0]), targets["mask"])
        save_png(blend(volume.array[:, :, :, 0], seg.labels[:, :, 0], segments), targets["overlay"])
    if "views" in targets:
        save_png(orthogonal_views(volume.array, seg.labels, segments), targets["views"])
    for kind, writer in extra.items():
        if kind in targets:
            writer(targets[kind], targets)  # after the SEG: a report may reference the staged SEG
    info = {
        "model": spec.name,
        "software": f"DoubleU-Net Segment {__version__}",
        "device": seg.device,
        "device_reason": seg.device_reason,
        **rule,
        "largest_component": spec.largest_component,
        "shape": list(seg.labels.shape),
        "segments": [s.to_dict() for s in segments],
        "voxels": {s.name: int((seg.labels == s.value).sum()) for s in segments},
        "files": {k: name for k, name in names.items() if k != "segments"},
    }
    atomic_write_text(targets["segments"], json.dumps(info, indent=1) + "\n")


def write_outputs(
    case_dir: Path,
    volume: Volume,
    seg: Prediction,
    spec: ModelSpec,
    planned: dict[str, Path],
    overwrite: bool,
    rule: dict[str, object] | None = None,
    extra: dict[str, ExtraWriter] | None = None,
) -> list[str]:
    """Every planned file, all or nothing: the files appear together, or none written by this call remains.

    The DICOM SEG is built first, into a hidden temporary file: if building it raises (a source the SEG
    cannot carry: no Modality, an old-style StudyTime, ...), it is dropped from ``planned`` (which is
    changed in place) with a note, together with the outputs that reference it (:data:`SEG_REFERENCES`: the
    DICOM SR), and the other outputs are still written.

    Every file is first written beside its target under a temporary name; only when all are complete are
    they moved into place in ``planned``'s order (``segments.json`` last, so its presence means done). If a
    writer fails, the temporary files are removed, and ``case_dir`` too when this call made it and nothing
    else is in it. With ``overwrite`` an existing file is replaced only at the end, and put back if moving
    the new set into place fails: a failed case leaves the previous results as they were.

    Args:
        case_dir: the case's output folder (made when missing).
        volume: the input, its ``array`` (C, X, Y, Z) and ``affine`` (4x4, RAS mm) giving the output grid.
        seg: the prediction, ``labels`` (X, Y, Z) on the input's grid.
        spec: the model (segment names, colours and codes; threshold).
        planned: kind -> path, as planned for the case (see :func:`planned_outputs`); must hold ``segments``.
        overwrite: replace existing files.
        rule: the labelling rule ``segments.json`` records (default: :func:`label_rule` of ``spec``).
        extra: kind -> writer for planned kinds this module does not write itself; each is called, after the
            others, with its temporary target and every kind's temporary target (``dicom-seg``: the finished
            SEG, for a report that references it).

    Returns:
        Notes for the user (``DICOM SEG not written: <reason>``).

    Raises:
        FileExistsError: a file exists and ``overwrite`` is False.
        ValueError, OSError, ...: whatever a writer raises (a DICOM SEG the series cannot carry, a full
            disk), after the cleanup.
    """
    made = not case_dir.exists()
    notes: list[str] = []
    prebuilt: dict[str, Path] = {}
    try:
        for path in planned.values():
            refuse_overwrite(path, overwrite)
        if "dicom-seg" in planned:
            from ..data.dicom_seg import write_dicom_seg

            target = planned["dicom-seg"]
            target.parent.mkdir(parents=True, exist_ok=True)
            prebuilt["dicom-seg"] = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp.dcm"
            try:
                write_dicom_seg(
                    volume.series,
                    seg.labels,
                    spec.segment_infos(),
                    prebuilt["dicom-seg"],
                    algorithm_version=__version__,
                    overwrite=True,
                )
            except Exception as err:  # a SEG the source cannot carry is a note, not a failed case
                prebuilt.pop("dicom-seg").unlink(missing_ok=True)
                del planned["dicom-seg"]
                notes.append(f"DICOM SEG not written: {type(err).__name__}: {err}")
                for kind in SEG_REFERENCES:  # what references the SEG goes with it
                    if planned.pop(kind, None) is not None:
                        notes.append(f"{kind.upper().replace('-', ' ')} not written: it references the SEG")
        names = {k: p.name for k, p in planned.items()}
        with atomic_files(planned, overwrite=overwrite) as staged:
            _write_files(volume, seg, spec, staged, names, rule or label_rule(spec), prebuilt, extra or {})
    except BaseException:
        for path in prebuilt.values():
            path.unlink(missing_ok=True)
        if made:
            try:
                case_dir.rmdir()  # only when empty: never a file someone else put there meanwhile
            except OSError:
                pass
        raise
    finally:
        for path in prebuilt.values():
            path.unlink(missing_ok=True)
    return notes


def check_output_location(output: Path, inputs: list[str]) -> bool:
    """Refuse an output folder inside (or equal to) an input folder (inputs are never written to), or one
    that is a file or cannot be created; make it when missing, so this shows before any case runs.

    Args:
        output: the output folder (need not exist).
        inputs: the input paths; only folders among them count.

    Returns:
        True when this call made the folder (the caller may remove it again on a later usage error).

    Raises:
        ValueError: ``output`` lies inside an input folder, is an existing file, or cannot be created.
    """
    out = output.expanduser().resolve()
    for item in inputs:
        src = Path(item).expanduser().resolve()
        folder = src if src.is_dir() else src.parent
        if src.is_dir() and (out == folder or folder in out.parents):
            raise ValueError(f"output folder {out} lies inside input folder {folder}; choose another -o")
    if out.is_dir():
        return False
    if out.exists():
        raise ValueError(f"-o {output} is an existing file, not a folder; choose another -o")
    try:
        out.mkdir(parents=True)
    except FileExistsError:
        if out.is_dir():  # made meanwhile by someone else
            return False
        raise ValueError(f"-o {output} is an existing file, not a folder; choose another -o") from None
    except OSError as err:
        raise ValueError(f"-o {output}: the output folder cannot be created ({err.strerror or err})") from None
    return True


def run_case(
    case: Case, predictor: Predictor, args: argparse.Namespace, formats: set[str], reporter: Reporter
) -> CaseResult:
    """Read, segment and write one case; any error is caught and reported in the result.

    Args:
        case: the case to segment.
        predictor: the loaded model.
        args: ``output`` (folder), ``overwrite`` and ``save_probabilities``.
        formats: the outputs to write (see :func:`parse_formats`).
        reporter: receives the case's notes and progress.
    """
    start = time.monotonic()
    case_dir = args.output / case.name
    try:
        volume = case.load()
        planned, plan_notes = planned_outputs(case_dir, volume, formats, args.save_probabilities)
        for note in volume.warnings + plan_notes:
            reporter.event(event=protocol.NOTE, case=case.name, message=note)
        for path in planned.values():
            refuse_overwrite(path, args.overwrite)
        localize = getattr(args, "localize", "auto")
        if not volume.is_2d_image and should_localize(localize, predictor.spec, volume.array.shape[1:], volume.affine):
            read = time.monotonic() - start
            return _run_whole_head(case, volume, predictor, args, formats, planned, reporter, start, read)
        # the model's orientation and voxel size (a spec without them: the volume as given)
        clock = {"read": time.monotonic() - start}
        grid = ModelGrid(predictor.spec)
        moved = grid.to_model(volume.array, volume.affine) if grid.active else None
        clock["preprocess"] = time.monotonic() - start - sum(clock.values())
        array = np.asarray(moved["image"]) if moved is not None else volume.array
        axis = predictor.slice_axis_for(array)
        n = array.shape[axis + 1]
        reporter.start_case(case, n)
        seg = predictor.segment(
            array,
            lambda done, total: reporter.progress(case, done, total),
            args.save_probabilities,
            # frames without patient geometry (a cine loop) are separate pictures, each normalised alone
            independent_slices=bool(volume.series is not None and volume.series.independent_frames),
        )
        clock["inference"] = time.monotonic() - start - sum(clock.values())
        if moved is not None:
            seg.labels = grid.labels_back(moved, seg.labels)
            if seg.probabilities is not None:
                seg.probabilities = grid.back(moved, seg.probabilities)
        clock["postprocess"] = time.monotonic() - start - sum(clock.values())
        for note in seg.notes + ([f"{seg.skipped} empty slice(s) labelled background"] if seg.skipped else []):
            reporter.event(event=protocol.NOTE, case=case.name, message=note)
        rule = label_rule(predictor.spec, getattr(predictor, "postprocessing", None))
        for note in write_outputs(case_dir, volume, seg, predictor.spec, planned, args.overwrite, rule):
            reporter.event(event=protocol.NOTE, case=case.name, message=note)
        clock["write"] = time.monotonic() - start - sum(clock.values())
        _note_stage_times(reporter, case, clock)
        voxels = int((seg.labels > 0).sum())
        return CaseResult(case, True, time.monotonic() - start, n, voxels, {k: str(v) for k, v in planned.items()})
    except Exception as err:  # one bad case must not stop the batch
        return CaseResult(case, False, time.monotonic() - start, message=failure_message(err, case))


def _note_stage_times(reporter: Reporter, case: Case, seconds: dict[str, float]) -> None:
    """One note with each stage's wall time in s, e.g. ``stage times: read 0.5 s, inference 6.1 s``."""
    times = ", ".join(f"{stage} {value:.1f} s" for stage, value in seconds.items())
    reporter.event(event=protocol.NOTE, case=case.name, message=f"stage times: {times}")


def _run_whole_head(
    case: Case,
    volume: Volume,
    predictor: Predictor,
    args: argparse.Namespace,
    formats: set[str],
    planned: dict[str, Path],
    reporter: Reporter,
    start: float,
    read_seconds: float,
) -> CaseResult:
    """A whole-head study through localisation (:mod:`.whole_head`): left and right labels, and the volumetry
    report's files written with the label map, all or nothing."""
    reporter.event(event=protocol.NOTE, case=case.name, message="whole-head study: localising each hippocampus")
    reporter.start_case(case, 2)
    head = segment_whole_head(
        predictor,
        volume.array,
        volume.affine,
        lambda done, total: reporter.progress(case, done, total),
        uncertainty=True,  # the quality check weighs the stages' disagreement; the map is written on request
    )
    _note_stage_times(reporter, case, {"read": read_seconds, **head.seconds})
    written = time.monotonic()
    seg = Prediction(None, head.labels, str(predictor.device), predictor.device_reason, notes=head.notes)
    uncertainty = getattr(args, "uncertainty", False)
    plan, notes, report = write_whole_head_outputs(
        volume, seg, predictor.spec, head.registration, head.disagreement, formats, planned, args.overwrite, uncertainty
    )
    stages = {"read": read_seconds, **head.seconds, "write": time.monotonic() - written}
    for note in notes:
        reporter.event(event=protocol.NOTE, case=case.name, message=note)
    voxels = int((head.labels > 0).sum())
    outputs = {k: str(v) for k, v in plan.items()}
    return CaseResult(case, True, time.monotonic() - start, 2, voxels, outputs, report=report, stages=stages)


def write_whole_head_outputs(
    volume: Volume,
    seg: Prediction,
    spec: ModelSpec,
    registration: Any,
    disagreement: np.ndarray | None,
    formats: set[str],
    planned: dict[str, Path],
    overwrite: bool,
    uncertainty: bool,
) -> tuple[dict[str, Path], list[str], Any]:
    """A whole-head case's files, all or nothing: the label map's (``planned``) and the volumetry report's
    (:class:`doubleunet_segment.reporting.case_report.CaseReport`): volumes, report.png, SR, uncertainty map.

    Args:
        volume: the input study.
        seg: its left/right label map (values 1-4) on the input's grid.
        spec: the crop-trained model; written with the left/right segment set.
        registration: the study's registration to the template (eTIV, plausibility).
        disagreement: (X, Y, Z) stage disagreement map on the input's grid, or None (not checked, not written).
        formats: the output formats (:func:`parse_formats`).
        planned: the label map's planned files (:func:`planned_outputs`).
        overwrite: replace existing files.
        uncertainty: also write the disagreement map.

    Returns:
        (every file written: kind -> path, notes for the user (the QC verdict first), the case report).

    Raises:
        FileExistsError: a file exists and ``overwrite`` is False.
    """
    from ..reporting.case_report import CaseReport

    spec = whole_head_spec(spec)
    report = CaseReport.build(volume, seg.labels, spec.segment_infos(), registration, disagreement)
    qc = report.qc
    notes = [f"QC {qc['verdict']}" + (f": {qc['reason']}" if qc["reason"] else "")]
    case_dir = planned["segments"].parent
    extra = report.outputs(case_dir, formats, planned, uncertainty)
    for path in extra.values():
        refuse_overwrite(path, overwrite)
    plan = {**{k: v for k, v in planned.items() if k != "segments"}, **extra, "segments": planned["segments"]}
    writers = {kind: (lambda target, staged, kind=kind: report.write(kind, target, staged)) for kind in extra}
    notes += write_outputs(case_dir, volume, seg, spec, plan, overwrite, label_rule(spec), writers)
    return plan, notes, report


def failure_message(err: Exception, case: Case) -> str:
    """``ExceptionType: message`` for the summary, naming the input and, for an existing output, ``--overwrite``.

    The library's message says ``overwrite=True`` (right for a Python caller); the runner serves the command
    line and the bundle's config, where the switch is spelled ``--overwrite``. A message that does not name
    the input (e.g. a channel-count mismatch found by the model) gets it prefixed: the case's folder name
    alone may not tell the user which of their files failed.
    """
    if isinstance(err, OutputExistsError):
        return f"{type(err).__name__}: {err.path} already exists; kept (use --overwrite to replace it)"
    text = str(err)
    source = str(case.source)
    if source and source not in text and Path(source).name not in text:
        text = f"{source}: {text}"
    return f"{type(err).__name__}: {text}"


def summary_lines(results: list[CaseResult]) -> list[str]:
    """The end-of-run table: a header, one row per case, and ``N of M case(s) segmented, F failed``."""
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
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    failed = sum(not r.ok for r in results)
    return [*lines, f"{len(results) - failed} of {len(results)} case(s) segmented, {failed} failed"]


def log_summary(results: list[CaseResult]) -> None:
    """Log :func:`summary_lines` at INFO, one record per line (so a log format's prefix keeps the columns)."""
    for line in summary_lines(results):
        logger.info("%s", line)


def exit_if_failed(results: list[CaseResult]) -> list[CaseResult]:
    """``results`` unchanged when every case succeeded; the bundle's inference config ends with this.

    ``monai.bundle run inference`` then exits with status 1 when any case failed, as ``doubleunet-segment``
    does, after every case ran and the summary was logged. SystemExit rather than an exception: a failed case
    is an outcome to report (one line naming each failed case and its input), not a bug to trace back, and
    MONAI's expression evaluator would wrap an exception in a page of traceback.

    Raises:
        SystemExit: status 1 with ``N of M case(s) failed: name (input): error; ...`` when any case failed.
    """
    failed = [r for r in results if not r.ok]
    if failed:
        names = "; ".join(f"{r.case.name} ({r.case.source}): {r.message}" for r in failed)
        raise SystemExit(f"{len(failed)} of {len(results)} case(s) failed: {names}")
    return results


def segment_inputs(
    inputs: list[str],
    output: str | Path,
    predictor: Predictor,
    formats: str | None = None,
    overwrite: bool = False,
    save_probabilities: bool = False,
    progress: str = "bar",
) -> list[CaseResult]:
    """Segment every case of ``inputs`` into ``output``; the bundle's inference config calls this.

    Args:
        inputs: DICOM folders (searched recursively), volume files or 2D images.
        output: the output folder; one subfolder per case.
        predictor: the loaded model.
        formats: comma-separated :data:`FORMATS`, or None for all that apply.
        overwrite: replace existing outputs.
        save_probabilities: also write ``probabilities.nii.gz``.
        progress: ``bar``, ``json`` (protocol events on stdout) or ``none``.

    Returns:
        One result per case; a failed case does not stop the others.

    Raises:
        ValueError: ``output`` lies inside an input folder, an input file is neither a volume nor an
            image, or ``formats`` names an unknown format.
        FileNotFoundError: an input does not exist, or a folder holds no DICOM series, volume or 2D image.
    """
    check_output_location(Path(output), inputs)
    cases, notes = discover(inputs)
    options = argparse.Namespace(
        output=Path(output),
        format=formats,
        overwrite=overwrite,
        save_probabilities=save_probabilities,
        progress=progress,
    )
    return segment_cases(cases, notes, predictor, options)


VOLUMES_SUMMARY = "volumes_summary.csv"


def _write_volumes_summary(results: list[CaseResult], options: argparse.Namespace, reporter: Reporter) -> None:
    """The batch's volumetry, one row per whole-head case, as ``volumes_summary.csv`` in the output folder."""
    rows = [(r.case.name, r.report.volumetry, r.report.qc) for r in results if r.ok and r.report is not None]
    if not rows:
        return
    from ..reporting.volumetry import write_batch_summary

    path = Path(options.output) / VOLUMES_SUMMARY
    try:
        write_batch_summary(rows, path, overwrite=options.overwrite)
    except FileExistsError:
        reporter.event(event=protocol.NOTE, message=f"{path} exists; kept (use --overwrite to replace it)")
        return
    reporter.event(event=protocol.NOTE, message=f"volumes of {len(rows)} case(s): {path}")


def segment_cases(
    cases: list[Case],
    notes: list[str],
    predictor: Predictor,
    options: argparse.Namespace,
    results: list[CaseResult] | None = None,
) -> list[CaseResult]:
    """Segment ``cases``; ``options`` carries the command line's output, format, overwrite,
    save_probabilities and progress.

    Progress and notes go to a :class:`Reporter`; unless ``progress`` is ``json``, the table of
    :func:`summary_lines` is logged at the end (:func:`log_summary`).

    Args:
        cases: the cases, as :func:`doubleunet_segment.data.cases.discover` found them.
        notes: discovery's notes, reported first.
        predictor: the loaded model.
        options: ``output``, ``format``, ``overwrite``, ``save_probabilities``, ``progress``.
        results: a list to append each finished case's result to (so a caller interrupted part-way
            knows how many finished); default a new one.

    Returns:
        One result per case.

    Raises:
        ValueError: ``options.format`` names an unknown format.
    """
    progress = options.progress
    chosen = parse_formats(options.format)
    reporter = Reporter(progress, len(cases))
    reporter.event(event=protocol.DEVICE, device=str(predictor.device), reason=predictor.device_reason)
    reporter.event(event=protocol.NOTE, message=f"fast path: {predictor.path_reason}")
    for note in notes:
        reporter.event(event=protocol.NOTE, message=note)
    results = [] if results is None else results
    for case in prefetch(cases):  # the next case is read while this one is segmented
        result = run_case(case, predictor, options, chosen, reporter)
        reporter.end_case(result)
        results.append(result)
    _write_volumes_summary(results, options, reporter)
    reporter.close()
    if progress != "json":
        log_summary(results)
    return results
