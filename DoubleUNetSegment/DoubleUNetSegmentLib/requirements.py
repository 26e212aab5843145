"""Which Python packages Slicer's interpreter still needs before the engine can run there.

Missing or conflicting packages are the most common complaint with AI extensions for Slicer. The check runs
in Slicer's own process without importing anything heavy, names exactly what is missing, and separates
torch (installed through the PyTorch extension, which picks a CUDA build matching the GPU driver) from the
rest (pip, pinned as in the project's pyproject.toml).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

TORCH = "torch"


def load_requirements(path: str | Path) -> list[Requirement]:
    """``requirements.txt`` lines as Requirements (comments, blanks and pip options skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text and not text.startswith("-"):
            out.append(Requirement(text))
    return out


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Unmet:
    requirement: Requirement
    installed: str | None

    def describe(self) -> str:
        spec = str(self.requirement.specifier) or "any version"
        have = f"version {self.installed} is installed" if self.installed else "not installed"
        return f"{self.requirement.name} {spec}: {have}"


def unmet(requirements: list[Requirement], version_of: Callable[[str], str | None] = installed_version) -> list[Unmet]:
    """The requirements this interpreter does not satisfy (markers for other platforms ignored)."""
    out = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate():
            continue
        have = version_of(req.name)
        if have is None or (req.specifier and not req.specifier.contains(have, prereleases=True)):
            out.append(Unmet(req, have))
    return out


def split_torch(requirements: list[Requirement]) -> tuple[Requirement | None, list[Requirement]]:
    """(torch requirement, everything else): torch goes through PyTorchUtils where Slicer has it."""
    torch = [r for r in requirements if canonicalize_name(r.name) == TORCH]
    rest = [r for r in requirements if canonicalize_name(r.name) != TORCH]
    return (torch[0] if torch else None), rest


def torch_version_requirement(requirement: Requirement | None) -> str | None:
    """The ``torchVersionRequirement`` PyTorchUtils takes, e.g. ``==2.13.0``; the local build tag is ignored."""
    return str(requirement.specifier) if requirement is not None and requirement.specifier else None


def install_failure_message(what: str, error: BaseException) -> str:
    """A message that tells a user what to do, not just that pip failed."""
    return (
        f"Installing {what} into 3D Slicer's Python failed:\n{error}\n\n"
        "What usually helps: check the internet connection (and proxy settings: pip honours HTTPS_PROXY); "
        "restart 3D Slicer and try again (a package already loaded cannot be replaced while Slicer runs); "
        "on a managed computer install into Slicer's Python from the Python console with "
        "slicer.util.pip_install('<package>'). The Use in 3D Slicer section of the README lists more."
    )
