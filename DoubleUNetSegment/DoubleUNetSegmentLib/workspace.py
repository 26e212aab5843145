"""Temporary folders for the volume handed to the engine and the files it writes back.

A volume written for the engine can hold patient data, so it must not outlive the run: each run gets its own
folder, removed when the result has been read, on cancel and on error. Windows may still hold a file open
for a moment after the engine exits, hence the retries; folders a crash left behind are swept on next use.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

PREFIX = "DoubleUNetSegment-"


def make_workspace(base: str | Path | None = None) -> Path:
    """A new empty folder under ``base`` (Slicer's temporary directory) for one run."""
    if base is not None:
        Path(base).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))


def remove_workspace(path: str | Path, attempts: int = 5, delay: float = 0.2) -> bool:
    """Delete a run's folder; True when it is gone."""
    path = Path(path)
    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return True
        time.sleep(delay)
    return not path.exists()


def sweep_stale(base: str | Path, older_than_s: float = 24 * 3600.0) -> list[Path]:
    """Remove run folders older than ``older_than_s`` (left by a crash); returns what was removed."""
    removed = []
    now = time.time()
    for folder in Path(base).glob(PREFIX + "*"):
        if folder.is_dir() and now - folder.stat().st_mtime > older_than_s and remove_workspace(folder, attempts=1):
            removed.append(folder)
    return removed
