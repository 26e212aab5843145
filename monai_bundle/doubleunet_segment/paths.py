"""Every location the package reads or writes, and the environment variables that move them, defined once.

- The **bundle root** holds ``configs/`` and ``models/`` (catalog and weights). In a source checkout it is
  ``monai_bundle/``; an installed wheel carries a copy inside the package (``doubleunet_segment/bundle/``,
  see ``setup.py``); ``$DOUBLEUNET_BUNDLE`` points at any other bundle folder, as it does for the 3D Slicer
  extension.
- The **sample data** (Kvasir-SEG, MSD hippocampus, ...) is never copied into the repository: it is read from
  ``$DOUBLEUNET_SAMPLES``, by default ``../shared/data`` beside the checkout.
- The bundle's **large_files.yml** (MONAI model-zoo format) lists its weight files with their sha256 and
  download location; loading a listed file checks its hash (:mod:`doubleunet_segment.networks.weights`).
- The **cache** keeps per-weights decisions and exported ONNX models: ``$DOUBLEUNET_CACHE``, by default
  ``$XDG_CACHE_HOME/doubleunet-segment`` (``~/.cache/doubleunet-segment``).

Functions, not constants, so a changed environment (a test, Slicer's process settings) takes effect.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "BUNDLE_ENV",
    "CACHE_ENV",
    "CATALOG_NAME",
    "LARGE_FILES_NAME",
    "SAMPLES_ENV",
    "bundle_root",
    "cache_dir",
    "catalog_path",
    "configs_dir",
    "is_bundle_root",
    "large_files_path",
    "models_dir",
    "sample_data",
]

BUNDLE_ENV = "DOUBLEUNET_BUNDLE"
SAMPLES_ENV = "DOUBLEUNET_SAMPLES"
CACHE_ENV = "DOUBLEUNET_CACHE"
CATALOG_NAME = "catalog.json"
LARGE_FILES_NAME = "large_files.yml"

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_BUNDLE = PACKAGE_DIR.parent  # monai_bundle/ of a source checkout (or site-packages/ once installed)
INSTALLED_BUNDLE = PACKAGE_DIR / "bundle"  # the copy a wheel carries (setup.py's build step writes it)


def is_bundle_root(path: Path) -> bool:
    """True for a folder with a model catalog, ``models/catalog.json``."""
    return (path / "models" / CATALOG_NAME).is_file()


def bundle_root() -> Path:
    """The bundle folder: ``$DOUBLEUNET_BUNDLE``, the source checkout's ``monai_bundle/``, or the wheel's copy.

    Raises:
        FileNotFoundError: ``$DOUBLEUNET_BUNDLE`` names a folder without ``models/catalog.json``, or no
            bundle was found at all (a broken install).
    """
    override = os.environ.get(BUNDLE_ENV)
    if override:
        root = Path(override).expanduser().resolve()
        if not is_bundle_root(root):
            raise FileNotFoundError(f"${BUNDLE_ENV}={override} is not a DoubleU-Net bundle: no models/{CATALOG_NAME}")
        return root
    for root in (SOURCE_BUNDLE, INSTALLED_BUNDLE):
        if is_bundle_root(root):
            return root
    raise FileNotFoundError(
        f"no DoubleU-Net bundle found (looked in {SOURCE_BUNDLE} and {INSTALLED_BUNDLE}); "
        f"set {BUNDLE_ENV} to a bundle folder or reinstall the package"
    )


def models_dir() -> Path:
    """``<bundle>/models``: the catalog and the shipped weights."""
    return bundle_root() / "models"


def configs_dir() -> Path:
    """``<bundle>/configs``: the MONAI bundle configs and datalists."""
    return bundle_root() / "configs"


def catalog_path() -> Path:
    """``<bundle>/models/catalog.json``: the shipped models' specs (see :mod:`doubleunet_segment.catalog`)."""
    return models_dir() / CATALOG_NAME


def large_files_path() -> Path:
    """``<bundle>/large_files.yml``: the shipped weight files' paths, download URLs and sha256 hashes."""
    return bundle_root() / LARGE_FILES_NAME


def sample_data() -> Path:
    """The labelled sample data folder: ``$DOUBLEUNET_SAMPLES`` or ``../shared/data`` beside the checkout.

    The folder may not exist (an installed package, a machine without the data); callers check.
    """
    override = os.environ.get(SAMPLES_ENV)
    if override:
        return Path(override).expanduser()
    return SOURCE_BUNDLE.parent.parent / "shared" / "data"


def cache_dir() -> Path:
    """Where precision/backend decisions and exported ONNX models are kept (``$DOUBLEUNET_CACHE`` overrides)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "doubleunet-segment"
