"""Where the MONAI bundle lives beside the extension, and which models it ships.

The extension runs the bundle's package (``doubleunet_segment``) in Slicer's Python as a subprocess, so it
needs the folder to put on ``PYTHONPATH``. The catalog is read as plain JSON here because Slicer's own
process may not have torch yet (it is installed at first use), and listing models must not need it.
Names follow the engine's twins: a catalog entry is a :class:`ModelSpec` here as in ``doubleunet_segment.catalog``,
and ``BUNDLE_ENV`` is ``doubleunet_segment.paths.BUNDLE_ENV`` (``tests/test_slicer_protocol.py`` checks they agree).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "doubleunet_segment"
CATALOG = Path("models") / "catalog.json"
INSTALLED_BUNDLE_DIR = "DoubleUNetBundle"  # the bundle's copy inside an installed extension (see CMakeLists.txt)
BUNDLE_ENV = "DOUBLEUNET_BUNDLE"


@dataclass(frozen=True)
class ModelSpec:
    """One choice of the model selector: the part of the engine's ``ModelSpec`` Slicer's process reads without torch.

    The engine reads the rest (channels, normalisation, segments...) from the same catalog entry when it runs.
    """

    name: str  # what --model gets: a catalog name or a folder/file path
    label: str  # what the user reads
    description: str
    available: bool  # weights present on disk
    weights: Path | None = None


def is_bundle_root(path: Path) -> bool:
    """A folder holding the ``doubleunet_segment`` package and a model catalog."""
    return (path / PACKAGE / "__init__.py").is_file() and (path / CATALOG).is_file()


def find_bundle_root(module_dir: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> Path:
    """The bundle folder: ``$DOUBLEUNET_BUNDLE``, the installed copy, or ``monai_bundle/`` of a source checkout."""
    module_dir = Path(module_dir).resolve()
    candidates = []
    if environ.get(BUNDLE_ENV):
        candidates.append(Path(environ[BUNDLE_ENV]).expanduser())
    candidates += [module_dir / INSTALLED_BUNDLE_DIR, module_dir.parent / "monai_bundle"]
    for candidate in candidates:
        if is_bundle_root(candidate):
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"DoubleU-Net bundle not found (looked in {tried}); set {BUNDLE_ENV} to its folder")


def read_catalog(bundle_root: Path) -> tuple[str, list[ModelSpec]]:
    """(default model name, shipped models) from ``models/catalog.json``."""
    models_dir = bundle_root / CATALOG.parent
    data = json.loads((bundle_root / CATALOG).read_text(encoding="utf-8"))
    entries = []
    for name, spec in data["models"].items():
        weights = models_dir / spec["weights"]
        available = weights.is_file()
        label = name if available else f"{name} (weights not installed)"
        entries.append(ModelSpec(name, label, spec.get("description", ""), available, weights))
    return data["default"], entries


def custom_model_spec(path: str | os.PathLike) -> ModelSpec:
    """A user-chosen bundle folder or ``.pt`` file as a selector entry (the engine validates it when run)."""
    path = Path(path).expanduser()
    if path.is_dir():
        ok = (path / CATALOG).is_file() or (path / CATALOG.name).is_file()
        return ModelSpec(str(path), f"{path.name} (folder)", f"bundle folder {path}", ok)
    return ModelSpec(str(path), path.name, f"weights file {path}", path.is_file(), path)


def choose_custom_model(ask_folder: Callable[[], str], ask_file: Callable[[], str]) -> ModelSpec | None:
    """The user's own model, as the panel and the effect both ask for it: a bundle folder, else a weights file.

    ``ask_folder`` and ``ask_file`` are the two dialogs (Qt's file dialogs in Slicer); each returns the chosen
    path, or "" when cancelled. The file dialog opens only when no folder was chosen. None: both cancelled.
    """
    path = ask_folder() or ask_file()
    return custom_model_spec(path) if path else None
