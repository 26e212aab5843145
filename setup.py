"""Build step that puts the MONAI bundles' data inside the wheel; everything else is in pyproject.toml.

Each model's bundle keeps MONAI's layout (``monai_bundle/<model>/configs``, ``.../models``) beside the package,
which setuptools' package data cannot reach. A wheel therefore carries a copy as ``doubleunet_segment/bundles/``,
where :func:`doubleunet_segment.paths.bundles_root` finds it when the package is installed normally. Editable
installs skip the copy: they read the checkout's own ``monai_bundle/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLE = Path(__file__).resolve().parent / "monai_bundle"
# What a run needs, per bundle: the model's spec and weights, the configs (inference.json, datalist,
# logging.conf) and the licences. The TorchScript export (model.ts) stays out: nothing in the package reads it.
BUNDLE_FILES = (
    "*/LICENSE",
    "*/large_files.yml",
    "*/configs/*.json",
    "*/configs/logging.conf",
    "*/docs/data_license.txt",
    "*/models/model.json",
    "*/models/metrics.json",
    "*/models/*.pt",
)


class BuildPyWithBundle(build_py):
    """``build_py`` that also copies :data:`BUNDLE_FILES` into ``doubleunet_segment/bundles/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "doubleunet_segment" / "bundles"
        for pattern in BUNDLE_FILES:
            for source in sorted(BUNDLE.glob(pattern)):
                destination = target / source.relative_to(BUNDLE)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination)


setup(cmdclass={"build_py": BuildPyWithBundle})
