"""Promote a training run's best model to the shipped weights, only if it clearly beats what ships now.

The candidate is stored in half precision (58.6 MB instead of 117 MB) only if its validation Dice equals the
float32 model's to three decimals; it replaces the bundle's ``models/model.pt`` only if its mean validation Dice
is at least :data:`MIN_DICE_GAIN` (0.01) higher than the shipped model's. Each model is evaluated the way it
runs: with its own inputs (slice axis, plane size, 2.5D context and input channels; the shipped one's from its
bundle's ``models/model.json``, the candidate's from the configs and overrides), with the shipped post-processing.
Shipping writes the candidate's inputs into ``models/model.json``, its figures (overall and per dataset folder)
to ``models/metrics.json`` for the model card, and the new file's sha256 into the bundle's ``large_files.yml``
(which the loader checks shipped files against). Shipping also refreshes the bundle's float32 TorchScript export
(``models/model.ts``, which git ignores: ``make export`` builds it), so a local export never lags the weights.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import yaml
from monai.bundle import ConfigParser

from .. import __version__, paths
from ..catalog import ModelSpec, read_catalog
from ..data.atomic import atomic_path, atomic_write_text
from ..networks.weights import file_digest, load_state, stored_in_float16
from .torchscript_export import export_torchscript

__all__ = [
    "FIGURES",
    "INPUTS",
    "as_overrides",
    "candidate_inputs",
    "evaluate",
    "evaluation_overrides",
    "half_precision",
    "install_weights",
    "main",
    "parse_overrides",
    "record_large_file",
    "release_url",
    "shipped_inputs",
    "summarise",
    "update_spec_inputs",
]

FIGURES = ("dice", "iou", "precision", "recall", "hd95", "volume_diff_ml")
# Every weights file committed stays in the history for good (58.6 MB each): a new one ships only for a clear gain.
MIN_DICE_GAIN = 0.01
# How a network must be fed, as it was trained (config key -> model.json key): a 2.5D candidate evaluated or shipped
# without its context would see the grey slice three times instead of its neighbours.
INPUTS = {"slice_axis": "slice_axis", "image_size": "roi_size", "context": "context", "in_channels": "in_channels"}
RELEASES_URL = "https://github.com/doubleunet-segment/DoubleUNetSegment/releases/download"
LARGE_FILES_HEADER = """\
# The bundle's weight files in the MONAI model-zoo format: path (relative to the bundle), url, hash_val, hash_type.
# Loading a listed file checks its hash (doubleunet_segment.networks.weights.verify_listed); shipping new weights
# (python -m doubleunet_segment.release.ship) rewrites their entry, so edit this file only through it.
# url is the planned hosting location: an asset of this project's GitHub release of the bundle version. Until
# releases host them, the files are committed to git beside this list.
"""


def parse_overrides(overrides: list[str]) -> dict:
    """``["--image_size", "[64,48]", "--num_workers", "0"]`` -> ``{"image_size": [64, 48], "num_workers": 0}``.

    Values are Python literals where they parse as one, else kept as strings.

    Raises:
        ValueError: ``overrides`` is not a list of ``--key value`` pairs.
    """
    if len(overrides) % 2 or not all(o.startswith("--") for o in overrides[::2]):
        raise ValueError(f"overrides must be --key value pairs, got {overrides}")
    values = {}
    for key, text in zip(overrides[::2], overrides[1::2]):
        try:
            values[key[2:]] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[key[2:]] = text
    return values


def candidate_inputs(configs: list[str], overrides: list[str]) -> dict:
    """The inputs the candidate was trained with (those of :data:`INPUTS` the configs define): overrides over
    the configs.

    Args:
        configs: the bundle config files, later ones over earlier ones.
        overrides: the training run's ``--key value`` overrides.

    Returns:
        e.g. ``{"slice_axis": 1, "image_size": [48, 48], "context": 1, "in_channels": 3}`` (config keys).

    Raises:
        ValueError: ``overrides`` is not a list of ``--key value`` pairs.
    """
    parser = ConfigParser()
    parser.read_config(configs)
    merged = {k: parser.get(k) for k in INPUTS if parser.get(k) is not None}
    merged.update({k: v for k, v in parse_overrides(overrides).items() if k in INPUTS})
    return merged


def shipped_inputs(spec: ModelSpec, keys: dict) -> dict:
    """The shipped inputs of ``spec`` (see :data:`INPUTS`), under the config keys present in ``keys``."""
    values = {
        "slice_axis": spec.slice_axis_setting,
        "image_size": list(spec.roi_size),
        "context": spec.context,
        "in_channels": spec.in_channels,
    }
    return {k: values[k] for k in keys}


def as_overrides(values: dict) -> list[str]:
    """Back to command-line form; Python literals, as the bundle runner (fire) parses them."""
    return [part for key, value in values.items() for part in (f"--{key}", repr(value))]


def evaluation_overrides(overrides: list[str], inputs: dict, spec: ModelSpec) -> list[str]:
    """The user's overrides with ``inputs`` in place of theirs, plus the shipped model's post-processing."""
    kept = {k: v for k, v in parse_overrides(overrides).items() if k not in INPUTS}
    if spec.largest_component:
        kept["largest_component"] = True
    return as_overrides({**kept, **inputs})


def update_spec_inputs(bundle: Path, inputs: dict) -> None:
    """Write ``inputs`` (config keys, see :data:`INPUTS`) into the bundle's ``models/model.json``, atomically.

    Raises:
        FileNotFoundError: the bundle has no ``models/model.json``.
    """
    path = bundle / "models" / paths.MODEL_SPEC_NAME
    spec = json.loads(path.read_text())
    spec.update({INPUTS[k]: v for k, v in inputs.items()})
    atomic_write_text(path, json.dumps(spec, indent=2) + "\n", overwrite=True)


def half_precision(src: Path, dst: Path) -> Path:
    """Save ``src``'s weights to ``dst`` as shipped: float16 except BatchNorm running statistics.

    Returns:
        ``dst``.

    Raises:
        FileNotFoundError: ``src`` does not exist.
    """
    state = {k: v.half() if stored_in_float16(k, v) else v for k, v in load_state(src).items()}
    torch.save(state, dst)
    return dst


def release_url(root: Path, weights: Path) -> str:
    """Where ``weights`` will be downloadable: an asset of the GitHub release of the bundle's version, named
    ``<bundle>-<file>`` (every bundle's weights are ``model.pt``).

    The version is ``root/configs/metadata.json``'s (the package's when the bundle has none).
    """
    metadata = root / "configs" / "metadata.json"
    version = json.loads(metadata.read_text())["version"] if metadata.is_file() else __version__
    return f"{RELEASES_URL}/v{version}/{root.name}-{weights.name}"  # one release carries every bundle


def record_large_file(root: Path, weights: Path) -> Path:
    """Add or replace the entry of ``weights`` in ``root/large_files.yml`` with its sha256 and release URL.

    Other entries keep their place and values; the file is written atomically.

    Args:
        root: the bundle folder.
        weights: a file inside ``root``.

    Returns:
        The ``large_files.yml`` written.

    Raises:
        ValueError: ``weights`` is not inside ``root``.
    """
    listing = root / paths.LARGE_FILES_NAME
    data = (yaml.safe_load(listing.read_text()) if listing.is_file() else None) or {}
    relative = weights.resolve().relative_to(root.resolve()).as_posix()
    entry = {
        "path": relative,
        "url": release_url(root, weights),
        "hash_val": file_digest(weights, "sha256"),
        "hash_type": "sha256",
    }
    entries = list(data.get("large_files") or [])
    places = [i for i, e in enumerate(entries) if str(e.get("path", "")).removeprefix("./") == relative]
    if places:
        entries[places[0]] = entry
    else:
        entries.append(entry)
    text = yaml.safe_dump({"large_files": entries}, sort_keys=False, default_flow_style=False, width=200)
    atomic_write_text(listing, LARGE_FILES_HEADER + text, overwrite=True)
    return listing


def install_weights(candidate: Path, weights: Path, root: Path) -> None:
    """Replace the shipped ``weights`` by ``candidate`` (atomically) and record its hash in ``large_files.yml``.

    Args:
        candidate: the new weights file.
        weights: the shipped file it replaces (or creates), inside ``root``.
        root: the bundle folder.
    """
    with atomic_path(weights, overwrite=True) as target:
        target.write_bytes(candidate.read_bytes())
    record_large_file(root, weights)


def evaluate(configs: list[str], ckpt: Path, out: Path, overrides: list[str]) -> dict:
    """Run the bundle's evaluate workflow and gather its per-case CSV into figures.

    Args:
        configs: the bundle config files (train.json, extras, evaluate.json).
        ckpt: the weights to evaluate.
        out: folder for the workflow's ``per_case.csv``.
        overrides: ``--key value`` overrides for the workflow.

    Returns:
        :func:`summarise` of the per-case rows.

    Raises:
        subprocess.CalledProcessError: the evaluate workflow failed.
    """
    cmd = [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", str(configs)]
    cmd += ["--ckpt_path", str(ckpt), "--output_dir", str(out), *overrides]
    cmd += ["--bundle_root", str(Path(configs[0]).parent.parent)]  # the configs' own bundle, from any folder
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    return summarise(rows)


def summarise(rows: list[dict]) -> dict:
    """Mean figures per class, per dataset folder and class, and the mean Dice over classes.

    Args:
        rows: ``per_case.csv`` rows of :class:`doubleunet_segment.training.evaluation.CaseMetricsSaver`;
            each ``case`` path is ``.../<dataset>/<images folder>/<file>``.

    Returns:
        ``{"mean_dice": float, "groups": {"all/<class>" or "<dataset>/<class>": {"cases": n, <figure>: mean}}}``
        with NaN-ignoring means of :data:`FIGURES` (HD95 in mm, volume difference in mL).
    """
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        dataset = Path(row["case"]).parts[-3]  # <dataset>/images/<file> or <dataset>/imagesTr/<file>
        groups[f"all/{row['class']}"].append(row)
        groups[f"{dataset}/{row['class']}"].append(row)
    summary = {
        key: {
            "cases": len(items),
            **{f: float(np.nanmean([float(r[f]) for r in items])) for f in FIGURES if f in items[0]},
        }
        for key, items in sorted(groups.items())
    }
    overall = [v["dice"] for k, v in summary.items() if k.startswith("all/")]
    return {"mean_dice": float(np.mean(overall)), "groups": summary}


def main(argv: list[str] | None = None) -> int:
    """``python -m doubleunet_segment.release.ship RUN --name NAME [-- overrides]``; prints each decision.

    Returns:
        0 when the candidate shipped, 1 when it was not (half precision changes the Dice, or the shipped
        model is as good).
    """
    parser = argparse.ArgumentParser(
        usage="%(prog)s RUN --name NAME [--config CONFIG] [-- OVERRIDES ...]",
        description=__doc__,
        epilog="OVERRIDES: bundle overrides after --, e.g. -- --image_size [128,128] --num_workers 0",
    )
    parser.add_argument("run", type=Path, help="training output folder (holds models/model.pt)")
    parser.add_argument("--name", required=True, help="shipped model (bundle) name, e.g. polyp")
    parser.add_argument("--config", action="append", default=[], help="extra config over train.json (repeatable)")
    argv = sys.argv[1:] if argv is None else list(argv)
    # Split at "--" by hand: an argparse REMAINDER after RUN would also swallow a --name written after RUN.
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    overrides = argv[cut + 1 :]
    spec = read_catalog()[args.name]
    configs = [
        str(spec.bundle / "configs" / "train.json"),
        *args.config,
        str(spec.bundle / "configs" / "evaluate.json"),
    ]
    try:
        inputs = candidate_inputs(configs, overrides)
    except ValueError as err:
        parser.error(str(err))
    best = args.run / "models" / "model.pt"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        half = half_precision(best, tmp / "half.pt")
        candidate = evaluation_overrides(overrides, inputs, spec)
        full_fig = evaluate(configs, best, tmp / "fp32", candidate)
        half_fig = evaluate(configs, half, tmp / "fp16", candidate)
        print(f"candidate {inputs}: mean Dice fp32 {full_fig['mean_dice']:.4f}, fp16 {half_fig['mean_dice']:.4f}")
        if round(full_fig["mean_dice"], 3) != round(half_fig["mean_dice"], 3):
            print("half precision changes the Dice at 3 decimals: not shipped")
            return 1
        if spec.weights.is_file():
            current = shipped_inputs(spec, inputs)
            shipped = evaluate(configs, spec.weights, tmp / "shipped", evaluation_overrides(overrides, current, spec))
            print(f"shipped {current}: mean Dice {shipped['mean_dice']:.4f}")
            if half_fig["mean_dice"] < shipped["mean_dice"] + MIN_DICE_GAIN:
                print(f"the candidate does not beat the shipped model by {MIN_DICE_GAIN} Dice: shipped model kept")
                return 1
        install_weights(half, spec.weights, spec.bundle)
    update_spec_inputs(spec.bundle, inputs)
    record = {"source_run": str(args.run), "overrides": candidate, "fp32_mean_dice": full_fig["mean_dice"], **half_fig}
    metrics = spec.weights.with_name("metrics.json")
    atomic_write_text(metrics, json.dumps(record, indent=1) + "\n", overwrite=True)
    print(f"shipped {spec.weights} ({spec.weights.stat().st_size / 1e6:.1f} MB); figures in {metrics}")
    print(f"TorchScript export refreshed: {export_torchscript(args.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
