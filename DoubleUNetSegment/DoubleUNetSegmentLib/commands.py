"""The command lines and environment that run the engine in Slicer's Python.

Slicer's own interpreter (``PythonSlicer``) runs the engine out of process, so the UI never freezes and a
crash or a cancel cannot take Slicer down. The command is the documented CLI, so a user can paste it into a
terminal to reproduce what the extension did.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class EngineOptions:
    """What the panel or the effect lets the user choose."""

    model: str = "polyp"
    device: str = "auto"
    threshold: float | None = None  # None: the model's own
    tta: bool = False
    batch_size: int = 4
    save_probabilities: bool = False

    def validate(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie between 0 and 1, got {self.threshold}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")


def _common(options: EngineOptions) -> list[str]:
    args = ["--model", options.model, "--device", options.device, "--batch-size", str(options.batch_size)]
    if options.tta:
        args.append("--tta")
    return args


def cli_command(python: str, input_path: Path, output_dir: Path, options: EngineOptions) -> list[str]:
    """``python -m doubleunet_segment.cli`` for one volume, JSON progress, NIfTI output only."""
    options.validate()
    cmd = [python, "-m", "doubleunet_segment.cli", str(input_path), "-o", str(output_dir), *_common(options)]
    cmd += ["--format", "nifti", "--progress", "json", "--overwrite"]
    if options.threshold is not None:
        cmd += ["--threshold", f"{options.threshold:g}"]
    if options.save_probabilities:
        cmd.append("--save-probabilities")
    return cmd


def worker_command(python: str, options: EngineOptions) -> list[str]:
    """``python -m doubleunet_segment.inference.worker``: the model stays loaded between Preview requests."""
    options.validate()
    return [python, "-m", "doubleunet_segment.inference.worker", *_common(options)]


def engine_environment(bundle_root: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (Slicer's startup environment) with the bundle first on PYTHONPATH and unbuffered output.

    Unbuffered stdout makes each progress line arrive when it is printed, not when a buffer fills.
    """
    env = dict(os.environ if base is None else base)
    paths = [str(bundle_root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    return env
