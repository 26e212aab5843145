"""Per-case, per-class evaluation: Dice, IoU, precision, recall, HD95 and (for volumes) volume difference.

MONAI's MetricsSaver cannot lay out confusion-matrix metrics per case, and none of its handlers
reports volumes in mL, so one handler computes every figure from the evaluator's outputs with
monai.metrics and writes ``per_case.csv`` and ``summary.csv`` (mean, median, std and the mean's 95% bootstrap
confidence interval per column).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data.utils import affine_to_spacing
from monai.metrics import compute_hausdorff_distance

from ..data.atomic import atomic_write_text

__all__ = ["METRICS", "CaseMetricsSaver", "bootstrap_ci", "case_metrics"]

logger = logging.getLogger(__name__)

METRICS = ("dice", "iou", "precision", "recall", "hd95")


def case_metrics(pred: np.ndarray, label: np.ndarray, spacing: np.ndarray | None = None) -> dict[str, float]:
    """Figures for one binary mask pair; empty-vs-empty counts as perfect, HD95 in spacing units.

    Dice = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN), precision = TP / (TP + FP), recall =
    TP / (TP + FN); HD95 is the 95th-percentile symmetric Hausdorff distance of
    ``monai.metrics.compute_hausdorff_distance``. A precision or recall with an empty denominator is 1
    when the other error count is 0 too, else 0; HD95 is NaN when exactly one mask is empty.

    Args:
        pred: predicted mask, (X, Y) or (X, Y, Z); nonzero is foreground.
        label: reference mask of the same shape.
        spacing: voxel size per axis in mm, or None for voxel units.

    Returns:
        ``dice``, ``iou``, ``precision``, ``recall`` and ``hd95`` (mm, or voxels without spacing); for 3D
        spacing also ``volume_pred_ml``, ``volume_true_ml`` and ``volume_diff_ml`` (predicted minus
        reference, mL).
    """
    p, g = pred.astype(bool), label.astype(bool)
    tp, fp, fn = float((p & g).sum()), float((p & ~g).sum()), float((~p & g).sum())
    both_empty = tp + fp + fn == 0
    out = {
        "dice": 1.0 if both_empty else 2 * tp / (2 * tp + fp + fn),
        "iou": 1.0 if both_empty else tp / (tp + fp + fn),
        "precision": (1.0 if fn == 0 else 0.0) if tp + fp == 0 else tp / (tp + fp),
        "recall": (1.0 if fp == 0 else 0.0) if tp + fn == 0 else tp / (tp + fn),
    }
    if p.any() and g.any():
        hd = compute_hausdorff_distance(
            torch.as_tensor(p)[None, None],
            torch.as_tensor(g)[None, None],
            percentile=95,
            spacing=None if spacing is None else [float(s) for s in spacing],
        )
        out["hd95"] = float(hd.item())
    else:
        out["hd95"] = 0.0 if both_empty else math.nan
    if spacing is not None and len(spacing) == 3:
        voxel_ml = float(np.prod(spacing)) / 1000.0
        out["volume_pred_ml"] = p.sum() * voxel_ml
        out["volume_true_ml"] = g.sum() * voxel_ml
        out["volume_diff_ml"] = out["volume_pred_ml"] - out["volume_true_ml"]
    return out


def bootstrap_ci(values: list[float] | np.ndarray, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of per-case figures (cases resampled).

    ``scipy.stats.bootstrap`` with 10,000 resamples and a fixed seed, so a summary is reproducible (Efron and
    Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13). NaNs (an HD95 with one empty mask) are
    left out first.

    Args:
        values: one figure per case.
        level: the confidence level.
        seed: the resampling seed.

    Returns:
        (low, high); both NaN with fewer than two values, both the value itself when all values are equal.
    """
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return math.nan, math.nan
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = bootstrap((x,), np.mean, confidence_level=level, n_resamples=10_000, method="percentile", random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _spacing(tensor: torch.Tensor) -> np.ndarray | None:
    affine = getattr(tensor, "affine", None)
    if affine is None:
        return None
    a = np.asarray(affine, dtype=np.float64)
    # a zero column (singular affine) stays 0 mm, as before, instead of MONAI's default of 1
    return affine_to_spacing(a, r=a.shape[0] - 1, dtype=np.float64, suppress_zeros=False)


class CaseMetricsSaver:
    """Ignite handler: one CSV row per case and class, plus a summary, written atomically at the end.

    Each iteration's outputs are one-hot/probability tensors (C, X, Y) or (C, X, Y, Z), cut at 0.5;
    volumes take their spacing from the label's affine. At the end of the epoch the per-class means
    are logged at INFO.

    Args:
        output_dir: folder for ``per_case.csv`` and ``summary.csv``.
        class_names: names of the foreground classes (label values 1..K-1, or the one binary class).
    """

    def __init__(self, output_dir: str | Path, class_names: list[str]) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        """Register on the evaluator: reset at epoch start, collect per iteration, write at epoch end."""
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _iteration(self, engine: Engine) -> None:
        for item in engine.state.output:
            pred, label = item["pred"], item["label"]
            meta = getattr(item["image"], "meta", {}) or {}
            name = str(meta.get("filename_or_obj", f"case_{len(self.rows)}"))
            spacing = _spacing(label) if pred.ndim == 4 else None
            pred_np, label_np = np.asarray(pred.detach().cpu()), np.asarray(label.detach().cpu())
            binary = pred_np.shape[0] == 1
            for k, cls in enumerate(self.class_names, start=0 if binary else 1):
                row = {"case": name, "class": cls}
                row.update(case_metrics(pred_np[k] > 0.5, label_np[k] > 0.5, spacing))
                self.rows.append(row)

    def summary(self) -> list[dict]:
        """Mean, median and std (NaN-ignoring) of every figure, and the mean's 95% bootstrap confidence interval
        (:func:`bootstrap_ci`, statistics ``ci95_low`` and ``ci95_high``), per class.

        Returns:
            One dict per class and statistic: ``class``, ``statistic``, ``cases`` and the figures.
        """
        out = []
        for cls in self.class_names:
            rows = [r for r in self.rows if r["class"] == cls]
            statistics = (
                ("mean", np.nanmean),
                ("median", np.nanmedian),
                ("std", np.nanstd),
                ("ci95_low", lambda v: bootstrap_ci(v)[0]),
                ("ci95_high", lambda v: bootstrap_ci(v)[1]),
            )
            for stat, fn in statistics:
                entry = {"class": cls, "statistic": stat, "cases": len(rows)}
                for key in rows[0] if rows else []:
                    if key not in ("case", "class"):
                        entry[key] = float(fn([r[key] for r in rows]))
                out.append(entry)
        return out

    def _write(self, engine: Engine) -> None:
        if not self.rows:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for name, rows in (("per_case.csv", self.rows), ("summary.csv", self.summary())):
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(self.output_dir / name, buf.getvalue(), overwrite=True)
        for entry in self.summary():
            if entry["statistic"] == "mean":
                figures = ", ".join(f"{k} {entry[k]:.4f}" for k in METRICS if k in entry)
                logger.info("%s: %s (%d cases)", entry["class"], figures, entry["cases"])
