"""Which Python packages Slicer's interpreter still needs before the engine can run there.

Missing or conflicting packages are the most common complaint with AI extensions for Slicer. The check runs
in Slicer's own process without importing anything heavy, names exactly what is missing, and separates
torch (installed through the PyTorch extension, which picks a CUDA build matching the GPU driver) from the
rest (pip).

Requirements are lower bounds that the packages Slicer ships already satisfy: Slicer's DICOM module and other
extensions import numpy, pydicom, SimpleITK... and replacing one under them breaks them. What each Slicer release
ships is data (``Resources/slicer_releases.json``, from Slicer's SuperBuild files); :func:`minimum_release`
derives the first release that runs the engine without replacing anything, and :func:`constraints` pins the
shipped packages at their installed versions so that pip cannot replace them as someone's dependency either.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

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


# --- what Slicer ships ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlicerRelease:
    """One 3D Slicer release: its Python and the Python packages it ships (name -> version)."""

    version: str
    python: str
    packages: dict[str, str] = field(default_factory=dict)
    ref: str = ""

    def shipped(self, name: str) -> str | None:
        """The version of ``name`` this release ships (names compared as pip does), or None."""
        wanted = canonicalize_name(name)
        return next((v for k, v in self.packages.items() if canonicalize_name(k) == wanted), None)


@dataclass(frozen=True)
class SlicerReleases:
    """``slicer_releases.json``: the releases (oldest first), our Python requirement and the minimum we name."""

    releases: list[SlicerRelease]
    python_requires: SpecifierSet
    minimum: str
    index_branches: list[str]

    def release(self, version: str) -> SlicerRelease:
        return next(r for r in self.releases if r.version == version)


def load_slicer_releases(path: str | Path) -> SlicerReleases:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    releases = [
        SlicerRelease(r["version"], r["python"], dict(r["packages"]), r.get("ref", "")) for r in data["releases"]
    ]
    releases.sort(key=lambda r: Version(r.version))
    return SlicerReleases(
        releases, SpecifierSet(data["python_requires"]), data["minimum"], list(data["extensions_index_branches"])
    )


def replaced_by(requirements: Iterable[Requirement], release: SlicerRelease) -> list[str]:
    """The requirements pip would meet by replacing a package ``release`` ships (empty: none would be)."""
    out = []
    for req in requirements:
        have = release.shipped(req.name)
        if have is not None and not req.specifier.contains(have, prereleases=True):
            out.append(f"{req.name}{req.specifier} (Slicer {release.version} ships {have})")
    return out


def unsupported_because(
    release: SlicerRelease, requirements: Iterable[Requirement], python_requires: SpecifierSet
) -> list[str]:
    """Why the engine cannot run in ``release`` as shipped; empty when it can."""
    why = []
    if not python_requires.contains(release.python):
        why.append(f"Python {python_requires} (Slicer {release.version} has Python {release.python})")
    return why + replaced_by(requirements, release)


def minimum_release(
    releases: Iterable[SlicerRelease], requirements: list[Requirement], python_requires: SpecifierSet
) -> SlicerRelease | None:
    """The oldest release whose Python and shipped packages satisfy ``requirements`` without replacing any."""
    ordered = sorted(releases, key=lambda r: Version(r.version))
    return next((r for r in ordered if not unsupported_because(r, requirements, python_requires)), None)


def slicer_too_old(running: str, minimum: str, python: str | None = None) -> str | None:
    """A message when the running Slicer (``"5.10.0"`` or ``"5.10"``) is older than ``minimum``; else None."""
    if Version(running) >= Version(minimum):
        return None
    python = python or platform.python_version()
    return (
        f"DoubleU-Net Segment needs 3D Slicer {minimum} or later; this is 3D Slicer {running} (Python {python}). "
        "Its engine needs Python 3.10 or later (torch, MONAI) and pydicom 3, which older Slicer releases do not "
        "ship, and installing them would replace packages Slicer's own DICOM module uses. "
        f"Install 3D Slicer {minimum} or later from https://download.slicer.org."
    )


def constraints(
    release: SlicerRelease | None, version_of: Callable[[str], str | None] = installed_version, skip: Iterable[str] = ()
) -> list[str]:
    """``name==version`` for each package Slicer ships, at the version installed here, for pip's ``-c``.

    The names come from ``release`` (what Slicer ships); the versions from this interpreter, so a package the
    user upgraded on purpose stays as it is too. ``skip``: names left free (torch is not Slicer's).
    """
    if release is None:
        return []
    skipped = {canonicalize_name(s) for s in skip}
    out = []
    for name in release.packages:
        have = version_of(name)
        if have is not None and canonicalize_name(name) not in skipped:
            out.append(f"{name}=={have}")
    return out
