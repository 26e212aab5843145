"""A persistent segmentation process: load the model once, then segment one request per stdin line.

Loading DoubleU-Net (29 M parameters) and importing torch takes several seconds, segmenting one slice
well under one. The 3D Slicer effect's "Preview" keeps this process running so a slice comes back in
about a second on a CPU. It reuses the CLI's case runner and output writer, so files and JSON events are
exactly those of ``doubleunet-segment --progress json``; every event carries the request's ``id``.

Protocol (one JSON object per line; events, fields and request keys are defined in :mod:`.protocol`):

- start: ``python -m doubleunet_segment.inference.worker --model NAME_OR_PATH --device auto``; it answers
  ``{"event": "device", ...}`` and then ``{"event": "ready", "model": ..., "slice_axis": ..., "segments": [...]}``.
- request: ``{"id": "1", "input": "vol.nii.gz", "output": "OUTDIR", "name": "case", "slices": [k0, k1],
  "threshold": 0.5, "save_probabilities": true}``; ``slices`` (optional) segments only slices
  ``k0 <= k < k1`` along the model's slice axis and writes them on their own (shifted) grid.
- answer: ``start``/``progress``/``done``/``error`` events as the CLI writes them, then
  ``{"event": "idle", "id": ...}``.
- ``{"command": "quit"}`` or end of input stops the process (exit status 0).

A whole-head study for a crop-trained model (the hippocampus model; see :mod:`.whole_head`) is localised and
segmented once per volume, the first time any of its slices is asked for; later requests for the same file (the
effect's Preview slice after slice, then Apply) are answered from that result: the slab's left/right labels and
class probabilities, without the network.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..catalog import resolve_model
from ..data.cases import Case, safe_name
from ..data.image_io import Volume, read_volume_file
from ..transforms import ProbabilitiesToLabels
from . import protocol
from .predictor import Prediction, Predictor
from .progress import Reporter
from .runner import CaseResult, failure_message, label_rule, planned_outputs, run_case, write_outputs
from .whole_head import WholeHeadResult, segment_whole_head, should_localize, whole_head_spec


class RequestReporter(Reporter):
    """The CLI's JSON reporter, tagging every event with the request it answers."""

    def __init__(self, request_id: str, stream: TextIO) -> None:
        super().__init__("json", 1)
        self.request_id = request_id
        self.stream = stream

    def event(self, **data: Any) -> None:
        self.stream.write(protocol.encode({**data, protocol.REQUEST_ID: self.request_id}) + "\n")
        self.stream.flush()


class VolumeCache:
    """Keeps the last volume read, and its whole-head result once made: Preview asks for slice after slice of
    the same file."""

    def __init__(self) -> None:
        self._key: tuple[str, int, int] | None = None
        self._volume: Volume | None = None
        self.whole_head: WholeHeadResult | None = None  # of the cached volume

    def load(self, path: Path) -> Volume:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key != self._key or self._volume is None:
            self._volume = read_volume_file(path)
            self._key = key
            self.whole_head = None
        return self._volume


def crop_slices(volume: Volume, axis: int, start: int, stop: int) -> Volume:
    """Slices ``start:stop`` along ``axis`` with the affine moved so they stay where they were in space."""
    n = volume.array.shape[axis + 1]
    if not 0 <= start < stop <= n:
        raise ValueError(f"slices [{start}, {stop}) outside the volume's {n} slices along axis {axis}")
    shift = np.eye(4)
    shift[axis, 3] = start
    return Volume(_slab(volume.array, axis, start, stop), volume.affine @ shift, warnings=volume.warnings)


def _slab(array: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    """Slices ``start:stop`` along ``axis`` (0-2 of X, Y, Z) of a (..., X, Y, Z) array, contiguous."""
    index = [slice(None)] * array.ndim
    index[array.ndim - 3 + axis] = slice(start, stop)
    return np.ascontiguousarray(array[tuple(index)])


class Worker:
    """One loaded predictor answering requests; the default threshold is the model's own."""

    def __init__(self, predictor: Predictor, out: TextIO = sys.stdout) -> None:
        self.predictor = predictor
        self.out = out
        self.cache = VolumeCache()
        self.default_threshold = predictor.spec.threshold

    def emit(self, **data: Any) -> None:
        """One protocol event (``event=`` names its kind); raises ValueError for one the protocol lacks."""
        self.out.write(protocol.encode(data) + "\n")
        self.out.flush()

    def _set_threshold(self, threshold: float | None) -> None:
        value = self.default_threshold if threshold is None else float(threshold)
        if not 0.0 < value < 1.0:
            raise ValueError(f"threshold must lie between 0 and 1, got {value}")
        self.predictor.spec.threshold = value
        self.predictor.threshold = value
        self.predictor.postprocessing = ProbabilitiesToLabels(value)

    def handle(self, request: dict[str, Any]) -> bool:
        """Answer one request; False when asked to stop."""
        if request.get("command") == protocol.QUIT["command"]:
            return False
        request_id = str(request.get(protocol.REQUEST_ID, ""))
        try:
            source = Path(request["input"]).expanduser()
            output = Path(request["output"]).expanduser()
            name = safe_name(str(request.get("name") or "case"))
            slices = request.get("slices")
            self._set_threshold(request.get("threshold"))
        except (KeyError, TypeError, ValueError) as err:
            self.emit(event=protocol.ERROR, id=request_id, message=f"bad request: {type(err).__name__}: {err}")
            self.emit(event=protocol.IDLE, id=request_id)
            return True
        axis = self.predictor.inferer.slice_axis
        reporter = RequestReporter(request_id, self.out)
        try:
            head = self._whole_head(source)
        except Exception:  # an unreadable file: the case runner below reports it as it always does
            head = None
        if head is not None:
            self._answer_from_whole_head(head, name, output, slices, axis, request, reporter)
            self.emit(event=protocol.IDLE, id=request_id)
            return True

        def load() -> Volume:
            volume = self.cache.load(source)
            return crop_slices(volume, axis, int(slices[0]), int(slices[1])) if slices else volume

        args = argparse.Namespace(
            output=output,
            save_probabilities=bool(request.get("save_probabilities", True)),
            overwrite=bool(request.get("overwrite", True)),
        )
        result = run_case(Case(name, str(source), "volume", load), self.predictor, args, {"nifti"}, reporter)
        reporter.end_case(result)
        self.emit(event=protocol.IDLE, id=request_id)
        return True

    def _whole_head(self, source: Path) -> tuple[Volume, WholeHeadResult] | None:
        """The whole-head result of ``source`` (made once per volume), or None when it is no whole head for
        this model (:func:`.whole_head.should_localize` with ``auto``)."""
        volume = self.cache.load(source)
        shape = volume.array.shape[1:]
        if volume.is_2d_image or not should_localize("auto", self.predictor.spec, shape, volume.affine):
            return None
        if self.cache.whole_head is None:
            self.cache.whole_head = segment_whole_head(
                self.predictor, volume.array, volume.affine, keep_probabilities=True
            )
        return volume, self.cache.whole_head

    def _answer_from_whole_head(
        self,
        head: tuple[Volume, WholeHeadResult],
        name: str,
        output: Path,
        slices: list[int] | None,
        axis: int,
        request: dict[str, Any],
        reporter: RequestReporter,
    ) -> None:
        """Write the requested slab of a whole-head result as the case runner would (label map, probabilities,
        ``segments.json`` with the left/right segments) and report it."""
        volume, result = head
        start = time.monotonic()
        case = Case(name, str(request["input"]), "volume", lambda: volume)
        try:
            labels, probabilities = result.labels, result.probabilities
            if slices:
                k0, k1 = int(slices[0]), int(slices[1])
                volume = crop_slices(volume, axis, k0, k1)
                labels, probabilities = _slab(labels, axis, k0, k1), _slab(probabilities, axis, k0, k1)
            save_probabilities = bool(request.get("save_probabilities", True))
            spec = whole_head_spec(self.predictor.spec)
            seg = Prediction(
                probabilities if save_probabilities else None,
                labels,
                str(self.predictor.device),
                self.predictor.device_reason,
            )
            planned, _ = planned_outputs(output / name, volume, {"nifti"}, save_probabilities)
            reporter.start_case(case, 1)
            write_outputs(
                output / name, volume, seg, spec, planned, bool(request.get("overwrite", True)), label_rule(spec)
            )
            outputs = {k: str(v) for k, v in planned.items()}
            outcome = CaseResult(case, True, time.monotonic() - start, 1, int((labels > 0).sum()), outputs)
        except Exception as err:  # reported like any failed case; the worker keeps serving
            outcome = CaseResult(case, False, time.monotonic() - start, message=failure_message(err, case))
        reporter.end_case(outcome)

    def serve(self, lines: TextIO) -> None:
        for line in lines:
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except json.JSONDecodeError as err:
                self.emit(event=protocol.ERROR, message=f"bad request: not JSON ({err})")
                continue
            if not isinstance(request, dict):
                self.emit(event=protocol.ERROR, message="bad request: expected a JSON object")
                continue
            if not self.handle(request):
                break


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="doubleunet-segment-worker", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="shipped model name, bundle folder or .pt (default polyp)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=4, help="slices per forward pass")
    p.add_argument("--tta", action="store_true", help="test-time augmentation with flips")
    args = p.parse_args(argv)
    try:
        predictor = Predictor(resolve_model(args.model), device=args.device, batch_size=args.batch_size, tta=args.tta)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        p.exit(2, f"doubleunet-segment-worker: error: {err}\n")
    worker = Worker(predictor)
    worker.emit(event=protocol.DEVICE, device=str(predictor.device), reason=predictor.device_reason)
    worker.emit(
        event=protocol.READY,
        model=predictor.spec.name,
        slice_axis=predictor.inferer.slice_axis,
        threshold=predictor.spec.threshold,
        segments=[s.to_dict() for s in predictor.spec.segment_infos()],
    )
    worker.serve(sys.stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
