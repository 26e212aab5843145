"""Figures for the model card: training curves from a run's ``metrics.csv``."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path, title: str) -> Path:
    """Training loss and validation Dice per epoch, side by side."""
    rows = list(csv.DictReader(Path(metrics_csv).open()))
    if not rows:
        raise ValueError(f"{metrics_csv} holds no epochs")
    metric = [k for k in rows[0] if k.startswith("val_")][0]
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Plot a training run's loss and validation curves.")
    parser.add_argument("metrics_csv")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--title", default="DoubleU-Net training")
    args = parser.parse_args(argv)
    print(plot_training_curves(args.metrics_csv, args.output, args.title))


if __name__ == "__main__":
    main()
