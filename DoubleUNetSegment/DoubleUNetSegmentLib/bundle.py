"""Where the MONAI bundles live beside the extension, and which models they ship.

The extension runs the bundles' package (``doubleunet_segment``) in Slicer's Python as a subprocess, so it
needs the folder to put on ``PYTHONPATH``: the bundles root, holding the package and one bundle folder per
model (``polyp/``, ``hippocampus/``). Each bundle's ``models/model.json`` is read as plain JSON here because
Slicer's own process may not have torch yet (it is installed at first use), and listing models must not need
it. Names follow the engine's twins: a model is a :class:`ModelSpec` here as in ``doubleunet_segment.catalog``,
and ``BUNDLES_ENV``, ``MODEL_SPEC`` and ``DEFAULT_MODEL`` are the engine's (``tests/test_slicer_protocol.py``
checks they agree).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "doubleunet_segment"
MODEL_SPEC = Path("models") / "model.json"  # in each bundle folder
INSTALLED_BUNDLE_DIR = "DoubleUNetBundle"  # the bundles' copy inside an installed extension (see CMakeLists.txt)
BUNDLES_ENV = "DOUBLEUNET_BUNDLES"
DEFAULT_MODEL = "polyp"


@dataclass(frozen=True)
class ModelSpec:
    """One choice of the model selector: the part of the engine's ``ModelSpec`` Slicer's process reads without torch.

    The engine reads the rest (channels, normalisation, segments...) from the same ``model.json`` when it runs.
    """

    name: str  # what --model gets: a shipped model's name or a folder/file path
    label: str  # what the user reads
    description: str
    available: bool  # weights present on disk
    weights: Path | None = None
    threshold: float = 0.5  # the model's own foreground threshold (chosen on its validation cases), for the slider


def bundle_names(root: Path) -> list[str]:
    """The bundle folders (those with ``models/model.json``) directly inside ``root``, sorted."""
    return sorted(p.name for p in root.iterdir() if (p / MODEL_SPEC).is_file()) if root.is_dir() else []


def is_bundle_root(path: Path) -> bool:
    """A folder holding the ``doubleunet_segment`` package and at least one bundle."""
    return (path / PACKAGE / "__init__.py").is_file() and bool(bundle_names(path))


def find_bundle_root(module_dir: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> Path:
    """The bundles root: ``$DOUBLEUNET_BUNDLES``, the installed copy, or ``monai_bundle/`` of a source checkout."""
    module_dir = Path(module_dir).resolve()
    candidates = []
    if environ.get(BUNDLES_ENV):
        candidates.append(Path(environ[BUNDLES_ENV]).expanduser())
    candidates += [module_dir / INSTALLED_BUNDLE_DIR, module_dir.parent / "monai_bundle"]
    for candidate in candidates:
        if is_bundle_root(candidate):
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"DoubleU-Net bundles not found (looked in {tried}); set {BUNDLES_ENV} to their folder")


def read_catalog(bundle_root: Path) -> tuple[str, list[ModelSpec]]:
    """(default model name, shipped models): one per bundle folder's ``models/model.json``."""
    entries = []
    for name in bundle_names(bundle_root):
        spec_file = bundle_root / name / MODEL_SPEC
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
        weights = spec_file.parent / spec["weights"]
        available = weights.is_file()
        label = name if available else f"{name} (weights not installed)"
        threshold = float(spec.get("threshold", 0.5))
        entries.append(ModelSpec(name, label, spec.get("description", ""), available, weights, threshold))
    return DEFAULT_MODEL, entries


def custom_model_spec(path: str | os.PathLike) -> ModelSpec:
    """A user-chosen bundle folder or ``.pt`` file as a selector entry (the engine validates it when run)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return ModelSpec(str(path), f"{path.name} (folder)", f"bundle folder {path}", (path / MODEL_SPEC).is_file())
    return ModelSpec(str(path), path.name, f"weights file {path}", path.is_file(), path)


def choose_custom_model(ask_folder: Callable[[], str], ask_file: Callable[[], str]) -> ModelSpec | None:
    """The user's own model, as the panel and the effect both ask for it: a bundle folder, else a weights file.

    ``ask_folder`` and ``ask_file`` are the two dialogs (Qt's file dialogs in Slicer); each returns the chosen
    path, or "" when cancelled. The file dialog opens only when no folder was chosen. None: both cancelled.
    """
    path = ask_folder() or ask_file()
    return custom_model_spec(path) if path else None
