"""The bundle's inference as a standard MONAI workflow: a dataset of cases, dictionary transforms, an inferer and
an evaluator, with the one :class:`~.predictor.Predictor` underneath.

``configs/inference.json`` of each bundle wires these parts into a ``SupervisedEvaluator``:

- :func:`inference_cases` finds the cases of the user's inputs (DICOM series, volumes, 2D images), as the CLI does;
- :class:`CaseDataset` applies the preprocessing case by case: :class:`LoadCased` reads a case into a
  (C, X, Y, Z) ``MetaTensor`` with its RAS affine, the model's geometry (:func:`.geometry.model_grid_transforms`)
  and intensity normalisation follow as dictionary transforms;
- :class:`PredictorInferer` runs the predictor (batching, precision, 2.5D context) on the model's grid; a
  whole-head study for a crop-trained model goes through localisation (:mod:`.whole_head`) as in the CLI;
- the postprocessing turns probabilities into labels, inverts the geometry (``Invertd``) and :class:`SaveCased`
  writes the CLI's outputs (NIfTI, DICOM SEG, PNGs, ``segments.json``) through :func:`.runner.write_outputs`.

As in the CLI, a case that cannot be read or written is reported and the others still run: an
:class:`InferenceRun` collects every case's result, and :meth:`InferenceRun.finish` logs the CLI's end-of-run
table and exits with status 1 naming each failed case.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import IterableDataset, MetaTensor
from monai.inferers import Inferer
from monai.transforms import MapTransform, apply_transform

from ..data.cases import Case, discover
from ..data.image_io import Volume
from ..transforms import Normalize
from .geometry import ModelGrid
from .predictor import Prediction, Predictor
from .runner import (
    CaseResult,
    check_output_location,
    exit_if_failed,
    failure_message,
    label_rule,
    log_summary,
    parse_formats,
    planned_outputs,
    write_outputs,
    write_whole_head_outputs,
)
from .whole_head import WholeHeadResult, segment_whole_head, should_localize

__all__ = [
    "CaseDataset",
    "InferenceRun",
    "LoadCased",
    "PredictorInferer",
    "SaveCased",
    "as_float_tensor",
    "inference_cases",
]

logger = logging.getLogger(__name__)


def inference_cases(inputs: str | Sequence[str], output_dir: str | Path) -> list[dict]:
    """The datalist of an inference run: ``[{"image": Case}, ...]``, one item per case of ``inputs``.

    Args:
        inputs: a path or paths: DICOM folders (searched recursively), volume files or 2D images.
        output_dir: where results will go; refused when inside an input folder (inputs are never written to).

    Raises:
        FileNotFoundError: an input does not exist, or a folder holds nothing to segment.
        ValueError: ``output_dir`` lies inside an input folder, or an input file is neither a volume nor an image.
    """
    inputs = [str(inputs)] if isinstance(inputs, (str, Path)) else [str(i) for i in inputs]
    check_output_location(Path(output_dir), inputs)
    cases, notes = discover(inputs)
    for note in notes:
        logger.info("%s", note)
    return [{"image": case} for case in cases]


class InferenceRun:
    """What one bundle inference run shares between its parts: the cases loaded and not yet written, and the
    result of every case.

    MONAI's ``decollate_batch`` passes only tensors, arrays, numbers and strings through the evaluator, so the
    loaded case (its DICOM series for the SEG, its source grid) waits here under its name; loading must run in
    the evaluator's process (``num_workers`` 0).
    """

    def __init__(self) -> None:
        self.pending: dict[str, tuple[Case, Volume, float]] = {}  # name -> (case, volume, start time)
        self.whole_head: dict[str, WholeHeadResult] = {}  # name -> localised result, until written
        self.results: list[CaseResult] = []

    def fail(self, case: Case, err: Exception, start: float) -> None:
        """Record ``case`` as failed with ``err`` (the message names the input), and log it."""
        self.pending.pop(case.name, None)
        result = CaseResult(case, False, time.monotonic() - start, message=failure_message(err, case))
        logger.error("%s: FAILED: %s", case.name, result.message)
        self.results.append(result)

    def finish(self) -> list[CaseResult]:
        """Log the end-of-run table (:func:`.runner.log_summary`); the results when every case succeeded.

        Raises:
            SystemExit: status 1 naming each failed case and its input (:func:`.runner.exit_if_failed`).
        """
        log_summary(self.results)
        return exit_if_failed(self.results)


class CaseDataset(IterableDataset):
    """The cases of a run, each preprocessed when the evaluator asks for it; a case whose preprocessing fails
    (a corrupt file, an unreadable series) is recorded in ``run`` and skipped, so the others still run.

    Args:
        data: the datalist of :func:`inference_cases`.
        transform: the preprocessing (its first step :class:`LoadCased`).
        run: where failures are recorded.
    """

    def __init__(self, data: Iterable[dict], transform: Callable, run: InferenceRun) -> None:
        super().__init__(data=data, transform=transform)
        self.run = run

    def __iter__(self) -> Iterator[dict]:
        for item in self.data:
            start = time.monotonic()
            try:
                yield apply_transform(self.transform, item)
            except Exception as err:  # one bad case must not stop the batch
                self.run.fail(item["image"], _reader_error(err), start)


def _reader_error(err: Exception) -> Exception:
    """The error a reader raised, out of the ``RuntimeError("applying transform ...")`` layers MONAI wraps it in
    (the reader's own message names the file and the reason)."""
    while isinstance(err, RuntimeError) and isinstance(err.__cause__, Exception) and "applying transform" in str(err):
        err = err.__cause__
    return err


class LoadCased(MapTransform):
    """Read each key's :class:`~doubleunet_segment.data.cases.Case` into a (C, X, Y, Z) float32 ``MetaTensor``
    whose affine maps voxels to RAS mm.

    Besides the image, the data gets ``case`` (the case's name) and ``independent_frames`` (True for frames
    without patient geometry, a cine loop, whose slices are normalised one by one). The case and its loaded
    :class:`~doubleunet_segment.data.image_io.Volume` wait in ``run`` for :class:`SaveCased`.

    Args:
        keys: the items holding a case.
        run: the run's shared state.

    Raises:
        ValueError, FileNotFoundError: the case cannot be read; the message names the file and the reason.
    """

    def __init__(self, keys: Sequence[Hashable], run: InferenceRun) -> None:
        super().__init__(keys)
        self.run = run

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        """A copy of ``data`` with each key's case loaded."""
        d = dict(data)
        for key in self.key_iterator(d):
            case: Case = d[key]
            start = time.monotonic()
            volume = case.load()
            for warning in volume.warnings:
                logger.info("%s: %s", case.name, warning)
            d[key] = MetaTensor(
                torch.as_tensor(volume.array), affine=torch.as_tensor(volume.affine, dtype=torch.float64)
            )
            self.run.pending[case.name] = (case, volume, start)
            d[key].meta["case"] = case.name  # for the inferer: a whole head is localised on its own grid
            d["case"] = case.name
            d["independent_frames"] = bool(volume.series is not None and volume.series.independent_frames)
        return d


class PredictorInferer(Inferer):
    """A MONAI inferer that runs :meth:`Predictor.predict` on each (C, X, Y, Z) image of a batch.

    The predictor brings its own network (PyTorch or ONNX Runtime), precision and batch of slices, so the
    ``network`` the evaluator passes is not used. Intensity normalisation has happened in the dictionary
    preprocessing: build the predictor with ``preprocessing=`` :func:`as_float_tensor`.

    With ``run``, a whole-head study for a crop-trained model (:func:`.whole_head.should_localize`) is segmented as
    the CLI does it, on the loaded study itself: registered, each hippocampus box segmented with the model's
    own normalisation, labels 1-4 pasted back. Its class probabilities (background, then labels 1-4) come back
    moved to the model's grid like the image, and the result waits in ``run`` for :class:`SaveCased`.

    Args:
        predictor: the loaded model.
        run: the run's shared state (the loaded studies); None: no localisation.
        localize: ``auto``, ``on`` or ``off`` (see :func:`.whole_head.should_localize`).
    """

    def __init__(self, predictor: Predictor, run: InferenceRun | None = None, localize: str = "auto") -> None:
        super().__init__()
        self.predictor = predictor
        self.run = run
        self.localize = localize

    def __call__(self, inputs: torch.Tensor, network: object = None, *args: object, **kwargs: object) -> torch.Tensor:
        """(B, C, X, Y, Z) -> (B, K, X, Y, Z) float32 probabilities (a 2D image is (B, C, X, Y, 1))."""
        probabilities = []
        for image in inputs:
            head = self._whole_head(image)
            probabilities.append(head if head is not None else self.predictor.predict(np.asarray(image.detach().cpu())))
        return torch.as_tensor(np.stack(probabilities))

    def _whole_head(self, image: torch.Tensor) -> np.ndarray | None:
        """The localised probabilities of a whole-head study on ``image``'s (the model's) grid, else None."""
        if self.run is None:
            return None
        name = getattr(image, "meta", {}).get("case")
        if name not in self.run.pending:
            return None
        _, volume, _ = self.run.pending[name]
        spec = self.predictor.spec
        if volume.is_2d_image or not should_localize(self.localize, spec, volume.array.shape[1:], volume.affine):
            return None
        saved = self.predictor.preprocessing
        self.predictor.preprocessing = Normalize(spec.normalization)  # each box is normalised as the CLI does
        try:
            head = segment_whole_head(
                self.predictor, volume.array, volume.affine, uncertainty=True, keep_probabilities=True
            )
        finally:
            self.predictor.preprocessing = saved
        self.run.whole_head[name] = head
        moved = np.asarray(ModelGrid(spec).to_model(head.probabilities, volume.affine)["image"])
        if moved.shape[1:] != tuple(image.shape[1:]):
            raise ValueError(f"{name}: localised result of shape {moved.shape[1:]} for an image of {image.shape[1:]}")
        return moved


def as_float_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The predictor's preprocessing when the dictionary transforms have normalised already: a float32 tensor."""
    return torch.as_tensor(image, dtype=torch.float32)


class SaveCased(MapTransform):
    """Write each case's outputs as the command line does (:func:`.runner.write_outputs`), all or nothing, and
    record its result in ``run``; a case that cannot be written (an existing output, a full disk) is recorded
    as failed and the run goes on.

    Args:
        keys: the (1, X, Y, Z) label map on the input's grid (after ``Invertd``).
        run: the run's shared state (the case and its volume wait there).
        predictor: the model that made it (segment names, threshold, device for ``segments.json``).
        output_dir: one subfolder per case.
        formats: output formats (:data:`.runner.FORMATS`), comma-separated or a list; None for all that apply.
        overwrite: replace existing outputs.

    Raises:
        ValueError: ``formats`` names an unknown format.
    """

    def __init__(
        self,
        keys: Sequence[Hashable],
        run: InferenceRun,
        predictor: Predictor,
        output_dir: str | Path,
        formats: str | Sequence[str] | None = None,
        overwrite: bool = False,
    ) -> None:
        super().__init__(keys)
        self.run = run
        self.predictor = predictor
        self.output_dir = Path(output_dir)
        self.formats = parse_formats(formats)
        self.overwrite = overwrite

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        """``data`` unchanged; the case's files are written and its result recorded."""
        d = dict(data)
        case, volume, start = self.run.pending.pop(d["case"])
        head = self.run.whole_head.pop(d["case"], None)
        report = None
        for key in self.key_iterator(d):
            try:
                if head is not None:  # the localised labels on the study's own grid, exactly as the CLI writes them
                    labels = head.labels
                else:
                    labels = np.rint(np.asarray(torch.as_tensor(d[key]).detach().cpu())[0]).astype(np.uint8)
                case_dir = self.output_dir / case.name
                planned, notes = planned_outputs(case_dir, volume, self.formats, save_probs=False)
                spec = self.predictor.spec
                seg = Prediction(None, labels, str(self.predictor.device), self.predictor.device_reason)
                if head is not None:
                    args = (volume, seg, spec, head.registration, head.disagreement, self.formats, planned)
                    planned, more, report = write_whole_head_outputs(*args, self.overwrite, uncertainty=False)
                    notes += more
                else:
                    rule = label_rule(spec, self.predictor.postprocessing)
                    notes += write_outputs(case_dir, volume, seg, spec, planned, self.overwrite, rule)
            except Exception as err:  # one bad case must not stop the batch
                self.run.fail(case, err, start)
                continue
            for note in notes:
                logger.info("%s: %s", case.name, note)
            voxels = int((labels > 0).sum())
            slices = int(labels.shape[self.predictor.slice_axis_for(labels[None])])
            outputs = {k: str(v) for k, v in planned.items()}
            result = CaseResult(case, True, time.monotonic() - start, slices, voxels, outputs, report=report)
            self.run.results.append(result)
        return d
