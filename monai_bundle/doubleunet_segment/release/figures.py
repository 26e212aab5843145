"""Figures for the model card: training curves from a run's ``metrics.csv``, runs side by side, overlays."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .. import paths  # noqa: E402

__all__ = ["main", "plot_run_comparison", "plot_training_curves", "read_epochs", "validation_figure"]


def read_epochs(metrics_csv: str | Path) -> tuple[list[dict], str]:
    """A run's ``metrics.csv`` rows and the name of its validation metric column.

    Raises:
        ValueError: the file holds no epochs.
    """
    rows = list(csv.DictReader(Path(metrics_csv).open()))
    if not rows:
        raise ValueError(f"{metrics_csv} holds no epochs")
    return rows, [k for k in rows[0] if k.startswith("val_")][0]


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path, title: str) -> Path:
    """Training loss and validation Dice per epoch, side by side.

    Args:
        metrics_csv: a run's ``metrics.csv`` (:class:`doubleunet_segment.training.handlers.EpochLog`).
        out_png: the picture to write.
        title: the figure's title.

    Returns:
        ``out_png``.

    Raises:
        ValueError: the file holds no epochs.
    """
    rows, metric = read_epochs(metrics_csv)
    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(epochs, [float(r["train_loss"]) for r in rows], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss (both stages)", title="loss")
    ax2.plot(epochs, [float(r[metric]) for r in rows], marker="o", color="tab:green")
    best = max(range(len(rows)), key=lambda i: float(rows[i][metric]))
    ax2.annotate(f"best {float(rows[best][metric]):.3f}", (epochs[best], float(rows[best][metric])))
    ax2.set(xlabel="epoch", ylabel=metric.replace("_", " "), title="validation")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def plot_run_comparison(runs: dict[str, str | Path], out_png: str | Path, title: str) -> Path:
    """Validation Dice per epoch of several runs on one axis (an ablation: slice axes, resolutions).

    Args:
        runs: legend label -> that run's ``metrics.csv``.
        out_png: the picture to write.
        title: the figure's title.

    Returns:
        ``out_png``.

    Raises:
        ValueError: a file holds no epochs.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, metrics_csv in runs.items():
        rows, metric = read_epochs(metrics_csv)
        dice = [float(r[metric]) for r in rows]
        ax.plot(
            [int(r["epoch"]) for r in rows],
            dice,
            marker="o",
            label=f"{label}: best {max(dice):.3f} in {len(dice)} epochs",
        )
    ax.set(xlabel="epoch", ylabel="validation mean Dice", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def main(argv: list[str] | None = None) -> None:
    """``python -m doubleunet_segment.release.figures curves|compare|overlays``; prints the picture's path."""
    parser = argparse.ArgumentParser(description="Model-card figures: training curves, validation overlays.")
    sub = parser.add_subparsers(dest="command", required=True)
    curves = sub.add_parser("curves", help="loss and validation Dice per epoch of a run")
    curves.add_argument("metrics_csv")
    curves.add_argument("-o", "--output", required=True)
    curves.add_argument("--title", default="DoubleU-Net training")
    compare = sub.add_parser("compare", help="validation Dice per epoch of several runs, e.g. slice axes")
    compare.add_argument("runs", nargs="+", metavar="LABEL=METRICS_CSV")
    compare.add_argument("-o", "--output", required=True)
    compare.add_argument("--title", default="DoubleU-Net runs compared")
    overlays = sub.add_parser("overlays", help="prediction beside ground truth on validation cases")
    overlays.add_argument("model")
    overlays.add_argument("-o", "--output", required=True)
    overlays.add_argument("--samples", type=Path, default=None)
    overlays.add_argument("--count", type=int, default=4)
    args = parser.parse_args(argv)
    if args.command == "curves":
        print(plot_training_curves(args.metrics_csv, args.output, args.title))
    elif args.command == "compare":
        if not all("=" in run for run in args.runs):
            parser.error("each run is LABEL=METRICS_CSV, e.g. 'axis 0=runs/axes/axis0/metrics.csv'")
        print(plot_run_comparison(dict(run.split("=", 1) for run in args.runs), args.output, args.title))
    else:
        print(validation_figure(args.model, args.samples or paths.sample_data(), Path(args.output), args.count))


def validation_figure(name: str, samples: Path, out_png: Path, count: int = 4) -> Path:
    """Prediction next to ground truth on validation cases of a shipped model, for the model card.

    Polyp: rows of frame | prediction | ground truth (Kvasir-SEG and CVC-ClinicDB alternating).
    Hippocampus: for each case, three orthogonal views of the prediction above those of the ground truth.

    Args:
        name: the shipped model (``polyp`` or ``hippocampus``).
        samples: the sample data folder the model's datalist is relative to.
        out_png: the picture to write.
        count: validation cases to show.

    Returns:
        ``out_png``.

    Raises:
        KeyError: ``name`` is not a shipped model.
        FileNotFoundError: the model's weights, datalist or a sample file is missing.
    """
    import json

    import numpy as np

    from ..catalog import read_catalog
    from ..data.image_io import read_image_2d, read_volume_file
    from ..data.overlay import blend, orthogonal_views, save_png
    from ..inference.predictor import Predictor

    spec = read_catalog()[name]
    segs = spec.segment_infos()
    predictor = Predictor(spec, device="auto")
    datalist = json.loads((spec.bundle / "configs" / "datalist.json").read_text())["validation"]
    rows = []
    if name == "polyp":
        from PIL import Image

        picks = [d for d in datalist if d["dataset"] == "kvasir-seg"][: count // 2]
        picks += [d for d in datalist if d["dataset"] == "cvc-clinicdb"][: count - len(picks)]
        for item in picks:
            image = read_image_2d(samples / item["image"]).array
            pred = predictor.segment(image).labels[:, :, 0]
            truth = (np.asarray(Image.open(samples / item["label"]).convert("L")) > 127).T.astype(np.uint8)
            tiles = [blend(image[..., 0], np.zeros_like(pred), segs), blend(image[..., 0], pred, segs)]
            tiles.append(blend(image[..., 0], truth, segs))
            tiles = [np.asarray(Image.fromarray(t).resize((320, 256))) for t in tiles]
            rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], 1))
    else:
        import nibabel as nib

        for item in datalist[:count]:
            volume = read_volume_file(samples / item["image"])
            pred = predictor.segment(volume.array).labels
            truth = np.asarray(nib.load(samples / item["label"]).dataobj).astype(np.uint8)
            top, bottom = orthogonal_views(volume.array, pred, segs), orthogonal_views(volume.array, truth, segs)
            width = max(top.shape[1], bottom.shape[1])
            pair = [np.pad(v, ((2, 2), (0, width - v.shape[1]), (0, 0)), constant_values=255) for v in (top, bottom)]
            rows.append(np.concatenate(pair, axis=0))
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return save_png(np.concatenate(rows, axis=0), Path(out_png), overwrite=True)


if __name__ == "__main__":
    main()
