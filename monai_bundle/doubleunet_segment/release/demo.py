"""``make demo``: the shipped models on the shipped sample data, with pictures to look at.

Reads the samples from ``$DOUBLEUNET_SAMPLES`` (default ``../shared/data`` beside the repository),
never copies them, and writes into ``outputs/demo``: polyp overlays on validation frames the model
never trained on (with the ground truth beside them), and a radiologist's whole-head study: the MNI152 T1
template that ships inside nilearn, written as an axial MR DICOM series with a made-up identity marked as
synthetic, segmented into left and right anterior and posterior hippocampus, with its DICOM SEG, its DICOM SR
(TID 1500) of the volumes and the one-page volumetry report.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .. import paths
from ..catalog import read_catalog
from ..data.overlay import blend, save_png
from ..inference.predictor import Predictor
from ..inference.progress import show_log_on_stderr
from ..inference.runner import segment_inputs
from ..training.evaluation import case_metrics

__all__ = ["main", "mni152_study", "polyp_grid", "validation_items"]

REPO = paths.SOURCE_BUNDLES.parent


def validation_items(name: str, samples: Path, dataset: str, count: int) -> list[dict]:
    """The first ``count`` validation items of bundle ``name``'s ``configs/datalist.json`` from ``dataset``.

    Returns:
        ``{"image": path, "label": path}`` dicts, absolute under ``samples``.

    Raises:
        FileNotFoundError: the datalist does not exist.
    """
    datalist = json.loads((paths.bundle_dir(name) / "configs" / "datalist.json").read_text())
    items = [d for d in datalist["validation"] if d.get("dataset", dataset) == dataset]
    return [{k: str(samples / v) for k, v in d.items() if k in ("image", "label")} for d in items[:count]]


def polyp_grid(results_dir: Path, items: list[dict], out: Path) -> list[float]:
    """Rows of frame | prediction | ground truth, so a person can judge the model at a glance.

    Args:
        results_dir: the batch run's output folder, holding ``<frame>/mask.png`` per item.
        items: the frames' ``image`` and ``label`` paths.
        out: the picture to write.

    Returns:
        The Dice of each frame's prediction against its ground truth.
    """
    spec = read_catalog()["polyp"]
    segs = spec.segment_infos()
    rows, dices = [], []
    for item in items:
        case = results_dir / Path(item["image"]).stem
        frame = np.asarray(Image.open(item["image"]).convert("RGB"), dtype=np.float32)
        image = np.moveaxis(frame, -1, 0).swapaxes(1, 2)  # (C, X, Y) as the predictor sees it
        pred = (np.asarray(Image.open(case / "mask.png")) > 127).T.astype(np.uint8)
        truth = (np.asarray(Image.open(item["label"]).convert("L")) > 127).T.astype(np.uint8)
        dices.append(case_metrics(pred, truth)["dice"])
        tiles = [blend(image, np.zeros_like(pred), segs), blend(image, pred, segs), blend(image, truth, segs)]
        tiles = [np.asarray(Image.fromarray(t).resize((320, 256))) for t in tiles]
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], 1))
    save_png(np.concatenate(rows, axis=0), out, overwrite=True)
    return dices


def mni152_study(folder: Path) -> Path:
    """The MNI152 T1 template (nilearn's, 1 mm) as an axial MR DICOM series in ``folder``; made-up identity,
    marked synthetic (:func:`doubleunet_segment.data.dicom_export.write_volume_as_series`).

    Returns:
        ``folder``.
    """
    from nilearn.datasets import load_mni152_template

    from ..data.dicom_export import write_volume_as_series

    template = load_mni152_template(resolution=1)
    array = np.asarray(template.dataobj, dtype=np.float32)
    write_volume_as_series(array, template.affine, folder, series_description="MNI152 T1", overwrite=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    """``make demo``: segment the samples with both shipped models and print what to look at.

    Returns:
        0 when at least one picture was made, 1 when there were no weights or samples to make one.
    """
    show_log_on_stderr()  # the batch runs' end-of-run tables
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=None, help="sample data folder (default $DOUBLEUNET_SAMPLES)")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "outputs" / "demo")
    parser.add_argument("--images", type=int, default=4, help="polyp validation frames to segment")
    args = parser.parse_args(argv)
    samples = args.samples or paths.sample_data()
    catalog = read_catalog()
    out = args.output
    pictures: list[Path] = []
    missing = [name for name, spec in catalog.items() if not spec.weights.is_file()]
    if missing:
        print(f"no trained weights for {missing}: train them with `python -m monai.bundle run training ...`")
    if not samples.is_dir():
        print(
            f"sample data folder {samples} not found: point the demo at one with "
            "`DOUBLEUNET_SAMPLES=/path/to/data make demo` (the polyp part needs kvasir-seg/ inside)"
        )
    if "polyp" not in missing and samples.is_dir():
        items = validation_items("polyp", samples, "kvasir-seg", args.images)
        predictor = Predictor(catalog["polyp"], device="auto")
        print(f"polyp model on {len(items)} Kvasir-SEG validation frames ({predictor.device_reason})")
        segment_inputs([d["image"] for d in items], out / "polyp", predictor, "nifti,png", overwrite=True)
        dices = polyp_grid(out / "polyp", items, out / "polyp_overlays.png")
        print(f"Dice per frame: {', '.join(f'{d:.3f}' for d in dices)}")
        pictures.append(out / "polyp_overlays.png")
    if "hippocampus" not in missing:
        predictor = Predictor(catalog["hippocampus"], device="auto")
        with tempfile.TemporaryDirectory() as tmp:
            study = mni152_study(Path(tmp) / "mni152-dicom")
            print("hippocampus model on a whole-head MR study: the MNI152 template as a synthetic axial DICOM series")
            segment_inputs([str(study)], out / "hippocampus", predictor, "nifti,dicom-seg,png", overwrite=True)
        for volumes in sorted((out / "hippocampus").glob("*/volumes.json")):
            data = json.loads(volumes.read_text())
            sides = ", ".join(f"{side} {ml:.2f} mL" for side, ml in data["sides"].items())
            print(f"hippocampal volumes: {sides}; QC {data['qc']['verdict']}")
        pictures += sorted((out / "hippocampus").glob("*/report.png"))
        pictures += sorted((out / "hippocampus").glob("*/sr.dcm"))
    if not pictures:
        return 1
    print("\nlook at:")
    for p in pictures:
        print(f"  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
