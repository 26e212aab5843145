"""Every location the package reads or writes, and the environment variables that move them, defined once.

- The **bundles root** holds one MONAI bundle per shipped model (``polyp/``, ``hippocampus/``), each with
  ``configs/`` (metadata, train, evaluate and inference configs, datalist), ``models/`` (``model.json``, the
  model's spec, and its weights), ``docs/`` and ``large_files.yml``. In a source checkout it is
  ``monai_bundle/``; an installed wheel carries a copy inside the package (``doubleunet_segment/bundles/``,
  see ``setup.py``); ``$DOUBLEUNET_BUNDLES`` points at any other such folder, as it does for the 3D Slicer
  extension.
- The **sample data** (Kvasir-SEG, MSD hippocampus, ...) is never copied into the repository: it is read from
  ``$DOUBLEUNET_SAMPLES``, by default ``../shared/data`` beside the checkout.
- A bundle's **large_files.yml** (MONAI model-zoo format) lists its weight files with their sha256 and
  download location; loading a listed file checks its hash (:mod:`doubleunet_segment.networks.weights`).
- The **cache** keeps per-weights decisions and exported ONNX models: ``$DOUBLEUNET_CACHE``, by default
  ``$XDG_CACHE_HOME/doubleunet-segment`` (``~/.cache/doubleunet-segment``).

Functions, not constants, so a changed environment (a test, Slicer's process settings) takes effect.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "BUNDLES_ENV",
    "CACHE_ENV",
    "LARGE_FILES_NAME",
    "MODEL_SPEC_NAME",
    "SAMPLES_ENV",
    "bundle_dir",
    "bundle_names",
    "bundles_root",
    "cache_dir",
    "is_bundle",
    "sample_data",
]

BUNDLES_ENV = "DOUBLEUNET_BUNDLES"
SAMPLES_ENV = "DOUBLEUNET_SAMPLES"
CACHE_ENV = "DOUBLEUNET_CACHE"
MODEL_SPEC_NAME = "model.json"  # <bundle>/models/model.json: the model's spec (see doubleunet_segment.catalog)
LARGE_FILES_NAME = "large_files.yml"

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_BUNDLES = PACKAGE_DIR.parent  # monai_bundle/ of a source checkout (or site-packages/ once installed)
INSTALLED_BUNDLES = PACKAGE_DIR / "bundles"  # the copy a wheel carries (setup.py's build step writes it)


def is_bundle(path: Path) -> bool:
    """True for a DoubleU-Net bundle folder: one with ``models/model.json`` and ``configs/metadata.json``."""
    return (path / "models" / MODEL_SPEC_NAME).is_file() and (path / "configs" / "metadata.json").is_file()


def bundle_names(root: Path) -> list[str]:
    """The bundle folders directly inside ``root``, sorted by name (empty when ``root`` does not exist)."""
    return sorted(p.name for p in root.iterdir() if is_bundle(p)) if root.is_dir() else []


def bundles_root() -> Path:
    """The folder of the shipped bundles: ``$DOUBLEUNET_BUNDLES``, the checkout's ``monai_bundle/``, or the
    wheel's copy.

    Raises:
        FileNotFoundError: ``$DOUBLEUNET_BUNDLES`` names a folder without any bundle, or no bundle was found
            at all (a broken install).
    """
    override = os.environ.get(BUNDLES_ENV)
    if override:
        root = Path(override).expanduser().resolve()
        if not bundle_names(root):
            raise FileNotFoundError(
                f"${BUNDLES_ENV}={override} holds no DoubleU-Net bundle (a folder with models/{MODEL_SPEC_NAME})"
            )
        return root
    for root in (SOURCE_BUNDLES, INSTALLED_BUNDLES):
        if bundle_names(root):
            return root
    raise FileNotFoundError(
        f"no DoubleU-Net bundles found (looked in {SOURCE_BUNDLES} and {INSTALLED_BUNDLES}); "
        f"set {BUNDLES_ENV} to their folder or reinstall the package"
    )


def bundle_dir(name: str) -> Path:
    """``<bundles root>/<name>``: the bundle of shipped model ``name`` (it may not exist; callers check)."""
    return bundles_root() / name


def sample_data() -> Path:
    """The labelled sample data folder: ``$DOUBLEUNET_SAMPLES`` or ``../shared/data`` beside the checkout.

    The folder may not exist (an installed package, a machine without the data); callers check.
    """
    override = os.environ.get(SAMPLES_ENV)
    if override:
        return Path(override).expanduser()
    return SOURCE_BUNDLES.parent.parent / "shared" / "data"


def cache_dir() -> Path:
    """Where precision/backend decisions and exported ONNX models are kept (``$DOUBLEUNET_CACHE`` overrides)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "doubleunet-segment"
