"""A shipped model's figures on its own split, through the inference path the CLI uses.

Two jobs, kept apart so the test split is not used to choose anything:

- ``--choose-postprocessing`` runs the model on the **validation** cases and tries each label clean-up step
  (the binary threshold, keeping the largest piece, dropping small pieces, filling holes): a step is kept only
  where it raises the mean validation Dice by at least :data:`MIN_GAIN` (greedy, in that order). ``--write``
  stores the choice in the bundle's ``models/model.json``.
- ``--test`` runs it once on the **test** cases with the post-processing ``models/model.json`` names and writes
  validation and test figures with 95% bootstrap confidence intervals to ``models/metrics.json`` (``split``),
  keyed on the weights file's sha256: a second test run of the same weights is refused (``--again`` overrides,
  and says so in the record).

Cases are read as the CLI reads them (``read_image_2d`` / ``read_volume_file``) and segmented by the
:class:`~doubleunet_segment.inference.predictor.Predictor` at float32, so the figures are the product's. A
2D reference mask is foreground where its first channel is above 127 (Kvasir-SEG's JPEG masks, CVC-ClinicDB's
PNGs); a volume's reference holds the class values.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import paths
from ..catalog import ModelSpec, resolve_model
from ..data.atomic import atomic_write_text
from ..data.datalist import is_volume, load_items
from ..data.image_io import read_image_2d, read_volume_file
from ..inference.predictor import Predictor
from ..networks.weights import file_digest
from ..training.evaluation import bootstrap_ci, case_metrics
from ..transforms import ProbabilitiesToLabels
from .ship import summarise

__all__ = [
    "THRESHOLDS",
    "MIN_COMPONENT_FRACTIONS",
    "MIN_GAIN",
    "CaseOutput",
    "PostProcessing",
    "choose_postprocessing",
    "main",
    "predict_section",
    "score",
]

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
# A step must raise the mean validation Dice by this much to be kept. Each step kept is one more thing every front
# door (the bundle's inference workflow, the Slicer effect's threshold slider) must repeat, so gains below one
# case's noise are not taken: on the 80 polyp validation frames 0.001 is one frame's Dice changing by 0.08.
MIN_GAIN = 0.001
MIN_COMPONENT_FRACTIONS = (0.001, 0.0025, 0.005, 0.01)  # of a slice's pixels


@dataclass
class CaseOutput:
    """One case's probabilities and reference.

    Attributes:
        case: the image path; its folder two levels up names the dataset.
        probabilities: (K, X, Y, Z) float32 (a 2D image: Z = 1).
        reference: (X, Y, Z) uint8 class values.
        spacing: voxel size in mm for volumes, None for 2D images (figures in pixels).
        seconds: the predictor's wall time for the case.
    """

    case: str
    probabilities: np.ndarray
    reference: np.ndarray
    spacing: tuple[float, float, float] | None
    seconds: float


@dataclass(frozen=True)
class PostProcessing:
    """The label clean-up settings that ``models/model.json`` stores (see :meth:`ModelSpec.postprocess`)."""

    threshold: float = 0.5
    min_component_fraction: float = 0.0
    fill_holes: bool = False
    largest_component: bool = False

    @classmethod
    def of(cls, spec: ModelSpec) -> PostProcessing:
        """The settings ``spec`` ships with."""
        return cls(spec.threshold, spec.min_component_fraction, spec.fill_holes, spec.largest_component)

    def labels(self, case: CaseOutput, spec: ModelSpec) -> np.ndarray:
        """(X, Y, Z) labels of ``case`` under these settings, as the predictor makes them."""
        labels = ProbabilitiesToLabels(self.threshold)(case.probabilities).astype(np.uint8)
        axis = 2 if case.probabilities.shape[-1] == 1 else spec.slice_axis
        return replace(spec, **asdict(self)).postprocess(labels, axis)


def _read_case(item: dict, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """(C, X, Y, Z) image, (X, Y, Z) uint8 reference and spacing of one datalist item."""
    if is_volume(item["image"]):
        image = read_volume_file(Path(item["image"]))
        label = read_volume_file(Path(item["label"]))
        spacing = tuple(float(s) for s in np.linalg.norm(image.affine[:3, :3], axis=0))
        return image.array, np.rint(label.array[0]).astype(np.uint8), spacing
    image = read_image_2d(Path(item["image"]))
    label = read_image_2d(Path(item["label"]))
    if spec.out_channels == 1:
        reference = (label.array[0] > 127).astype(np.uint8)
    else:
        reference = np.rint(label.array[0]).astype(np.uint8)
    return image.array, reference, None


def predict_section(
    spec: ModelSpec,
    section: str,
    data_dir: Path | None = None,
    limit: int = 0,
    device: str = "cpu",
    tta: bool = False,
    precision: str = "fp32",
) -> list[CaseOutput]:
    """Probabilities for every case of one section of the model's bundle datalist, at float32 (or ``precision``).

    Args:
        spec: a bundle's model (its ``configs/datalist.json`` names the cases).
        section: ``validation`` or ``testing``.
        data_dir: the folder the datalist's paths are relative to (default: the sample data).
        limit: only the first ``limit`` cases (0: all).
        device: ``cpu``, ``cuda`` or ``auto``.
        tta: flip test-time augmentation.
        precision: ``fp32`` (PyTorch) or ``int8`` (ONNX Runtime, as the engine may choose it), to compare.

    Returns:
        One :class:`CaseOutput` per case, in the datalist's order.

    Raises:
        ValueError: the model has no bundle.
        FileNotFoundError: the data folder or a case is missing.
        KeyError, ValueError: the datalist has no such section.
    """
    if spec.bundle is None:
        raise ValueError(f"model {spec.name!r} has no bundle, so no split: pass a bundle's model")
    items = load_items(data_dir or paths.sample_data(), spec.bundle / "configs" / "datalist.json", section, limit)
    backend = "onnx" if precision == "int8" else "torch"
    predictor = Predictor(spec, device, tta=tta, precision=precision, backend=backend, skip_empty=False)
    out = []
    for item in tqdm(items, desc=f"{spec.name} {section}", unit="case"):
        image, reference, spacing = _read_case(item, spec)
        start = time.perf_counter()
        probabilities = predictor.predict(image)
        out.append(CaseOutput(item["image"], probabilities, reference, spacing, time.perf_counter() - start))
    return out


def score(cases: list[CaseOutput], spec: ModelSpec, settings: PostProcessing) -> dict:
    """Figures of ``cases`` under ``settings``: :func:`doubleunet_segment.release.ship.summarise`, plus each
    group's 95% bootstrap confidence interval of the mean Dice (``dice_ci95``).

    Returns:
        ``{"mean_dice": float, "groups": {"all/<class>" | "<dataset>/<class>": {"cases", figures...,
        "dice_ci95": [low, high]}}}``.
    """
    names = [s.name for s in spec.segment_infos()]
    binary = spec.out_channels == 1
    rows = []
    for case in cases:
        labels = settings.labels(case, spec)
        for value, name in enumerate(names, start=1):
            figures = case_metrics(labels == value, case.reference == (1 if binary else value), case.spacing)
            rows.append({"case": case.case, "class": name, **figures})
    summary = summarise(rows)
    for key, group in summary["groups"].items():
        dataset, name = key.split("/", 1)
        dice = [
            r["dice"] for r in rows if r["class"] == name and (dataset == "all" or Path(r["case"]).parts[-3] == dataset)
        ]
        group["dice_ci95"] = list(bootstrap_ci(dice))
    return summary


def choose_postprocessing(cases: list[CaseOutput], spec: ModelSpec) -> tuple[PostProcessing, list[dict]]:
    """Greedy choice on validation cases: threshold (binary models), largest piece, small pieces, holes.

    Each step starts from the settings chosen so far and takes its best candidate only if that raises the mean
    Dice over classes by at least :data:`MIN_GAIN` (else the simpler setting stays: 0.5, off).

    Returns:
        The chosen settings and one row per candidate tried (``step``, ``setting``, ``mean_dice``, ``kept``).
    """
    chosen = PostProcessing(threshold=0.5)
    best = score(cases, spec, chosen)["mean_dice"]
    table = [{"step": "baseline", "setting": "threshold 0.5, no clean-up", "mean_dice": best, "kept": True}]
    steps: list[tuple[str, list]] = []
    if spec.out_channels == 1:
        steps.append(("threshold", [t for t in THRESHOLDS if t != 0.5]))
    steps += [
        ("largest_component", [True]),  # before the small-piece cut, which it subsumes for one-piece structures
        ("min_component_fraction", list(MIN_COMPONENT_FRACTIONS)),
        ("fill_holes", [True]),
    ]
    for field_name, values in steps:
        step_best, step_value = best, None
        for value in values:
            dice = score(cases, spec, replace(chosen, **{field_name: value}))["mean_dice"]
            table.append({"step": field_name, "setting": value, "mean_dice": dice, "kept": False})
            if dice > step_best:
                step_best, step_value = dice, value
        if step_best < best + MIN_GAIN:
            step_value = None
        if step_value is not None:
            chosen, best = replace(chosen, **{field_name: step_value}), step_best
            for row in table:
                if row["step"] == field_name and row["setting"] == step_value:
                    row["kept"] = True
    return chosen, table


def _update_json(path: Path, update: dict, indent: int) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(update)
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n", overwrite=True)


def _print_figures(title: str, summary: dict) -> None:
    print(f"{title}: mean Dice {summary['mean_dice']:.4f}")
    for key, group in summary["groups"].items():
        low, high = group["dice_ci95"]
        print(f"  {key:40s} n={group['cases']:4d}  Dice {group['dice']:.4f}  95% CI [{low:.4f}, {high:.4f}]")


def main(argv: list[str] | None = None) -> int:
    """``python -m doubleunet_segment.release.split_evaluation MODEL (--choose-postprocessing | --test)``.

    Returns:
        0 on success, 1 when a test run of the same weights is already on record (and ``--again`` not given).
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a shipped model (bundle) name, e.g. hippocampus, or a bundle folder")
    job = parser.add_mutually_exclusive_group(required=True)
    job.add_argument("--choose-postprocessing", action="store_true", help="try the clean-up steps on validation")
    job.add_argument("--test", action="store_true", help="validation and test figures, once per weights file")
    parser.add_argument("--write", action="store_true", help="with --choose-postprocessing: store the choice")
    parser.add_argument("--again", action="store_true", help="with --test: run although these weights were tested")
    explore = parser.add_argument_group("with --choose-postprocessing only: compare on validation")
    explore.add_argument("--weights", type=Path, help="other weights (a training run's models/model.pt)")
    explore.add_argument("--views", help="slice axes whose probabilities are averaged, e.g. 1 or 1,0,2")
    explore.add_argument(
        "--context", type=int, choices=(0, 1), help="2.5D weights: 1 gives the slices on each side as channels"
    )
    explore.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    explore.add_argument("--int8", action="store_true", help="the engine's int8 path (ONNX Runtime) instead of fp32")
    parser.add_argument("--data-dir", type=Path, default=None, help="the datalist's base folder (the sample data)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N cases of each section (0: all)")
    args = parser.parse_args(argv)
    try:
        spec = resolve_model(args.model)
    except FileNotFoundError as err:
        parser.error(str(err))
    if spec.bundle is None:
        parser.error(f"{args.model} is not a bundle's model: it has no split")
    spec_file = spec.bundle / "models" / paths.MODEL_SPEC_NAME
    metrics_file = spec.weights.with_name("metrics.json")
    explored = args.weights is not None or args.views is not None or args.context is not None or args.tta or args.int8
    if explored and (args.test or args.write):
        parser.error(
            "--weights, --views, --context, --tta and --int8 compare on validation; --test and --write use the "
            "shipped model"
        )
    if args.weights is not None:
        spec = replace(spec, weights=args.weights.resolve())
    if args.context is not None:  # the network takes 2 * context + 1 slices as its channels (1 or 3)
        spec = replace(
            spec, context=args.context, in_channels=2 * args.context + 1 if args.context else spec.in_channels
        )
    if args.views is not None:
        axes = tuple(int(a) for a in args.views.split(","))
        spec = replace(spec, slice_axis=axes[0], consensus_axes=axes if len(axes) > 1 else ())
    if args.choose_postprocessing:
        precision = "int8" if args.int8 else "fp32"
        cases = predict_section(spec, "validation", args.data_dir, args.limit, tta=args.tta, precision=precision)
        chosen, table = choose_postprocessing(cases, spec)
        for row in table:
            print(f"  {row['step']:24s} {row['setting']!s:28s} {row['mean_dice']:.4f}{'  kept' if row['kept'] else ''}")
        seconds = np.mean([c.seconds for c in cases])
        print(f"chosen on {len(cases)} validation cases ({seconds:.2f} s per case): {asdict(chosen)}")
        if args.write:
            _update_json(spec_file, asdict(chosen), indent=2)  # as ship.update_spec_geometry writes it
            print(f"written to {spec_file}")
        return 0
    digest = file_digest(spec.weights)
    record = json.loads(metrics_file.read_text()).get("split", {}) if metrics_file.is_file() else {}
    if record.get("weights_sha256") == digest and not args.again:
        print(f"{spec.weights} was already tested ({metrics_file}, split): the test cases are used once per weights")
        return 1
    settings = PostProcessing.of(spec)
    figures = {}
    for section in ("validation", "testing"):
        cases = predict_section(spec, section, args.data_dir, args.limit)
        figures[section] = score(cases, spec, settings)
        figures[section]["seconds_per_case"] = float(np.mean([c.seconds for c in cases]))
        _print_figures(section, figures[section])
    split = {
        "weights_sha256": digest,
        "postprocessing": asdict(settings),
        "views": list(spec.views),
        "validation": figures["validation"],
        "test": figures["testing"],
        "tested_again": bool(args.again and record.get("weights_sha256") == digest),
    }
    _update_json(metrics_file, {"split": split}, indent=1)  # as ship writes it
    print(f"figures written to {metrics_file} (split)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
