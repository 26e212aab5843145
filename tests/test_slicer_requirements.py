"""The extension's Python requirements against what 3D Slicer ships, release by release.

``Resources/slicer_releases.json`` records each Slicer release's Python and the packages it ships (from Slicer's
SuperBuild files). Every requirement on a package Slicer ships must be met by the shipped version of the minimum
release we name, so that installing the engine never replaces a package Slicer's DICOM module or another
extension imports; and no older release may qualify, or the named minimum would be wrong.
"""

from __future__ import annotations

import json

import pytest
import tomllib
from DoubleUNetSegmentLib import requirements
from helpers import REPO
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

RESOURCES = REPO / "DoubleUNetSegment" / "Resources"
RELEASES = requirements.load_slicer_releases(RESOURCES / "slicer_releases.json")
REQS = requirements.load_requirements(RESOURCES / "requirements.txt")


def test_release_data_is_complete_and_ordered() -> None:
    data = json.loads((RESOURCES / "slicer_releases.json").read_text())
    assert "SuperBuild" in data["source"] and data["minimum_why"]
    versions = [r.version for r in RELEASES.releases]
    assert versions == sorted(versions, key=Version) and len(set(versions)) == len(versions)
    assert {"5.8.1", "5.10.0", "5.12.0"} <= set(versions)
    for release in RELEASES.releases:
        Version(release.python)
        for name in ("numpy", "scipy", "pillow", "pydicom", "SimpleITK"):  # what every release ships
            assert release.shipped(name), (release.version, name)
    # the facts the minimum rests on, as read from Slicer's CMakeLists.txt and SuperBuild files
    assert RELEASES.release("5.8.1").python.startswith("3.9.")
    assert (
        RELEASES.release("5.10.0").python.startswith("3.12.")
        and RELEASES.release("5.10.0").shipped("pydicom") == "2.4.4"
    )
    five12 = RELEASES.release("5.12.0")
    assert five12.shipped("pydicom") == "3.0.2" and five12.shipped("simpleitk") == "2.5.5"
    assert five12.shipped("highdicom") == "0.27.0"


def test_python_requirement_is_the_projects() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert RELEASES.python_requires == SpecifierSet(project["requires-python"])


def test_named_minimum_ships_what_every_requirement_needs() -> None:
    minimum = RELEASES.release(RELEASES.minimum)
    assert RELEASES.python_requires.contains(minimum.python)
    shipped = [r for r in REQS if minimum.shipped(r.name)]
    assert {canonicalize_name(r.name) for r in shipped} >= {"numpy", "scipy", "pydicom", "simpleitk", "pillow"}
    for req in shipped:
        assert req.specifier.contains(minimum.shipped(req.name), prereleases=True), (req, minimum.shipped(req.name))
    assert requirements.replaced_by(REQS, minimum) == []
    for later in RELEASES.releases:  # nothing after the minimum breaks it again
        if Version(later.version) >= Version(minimum.version):
            assert requirements.unsupported_because(later, REQS, RELEASES.python_requires) == [], later.version


def test_named_minimum_is_the_first_release_that_qualifies() -> None:
    assert requirements.minimum_release(RELEASES.releases, REQS, RELEASES.python_requires).version == RELEASES.minimum
    why = {
        r.version: requirements.unsupported_because(r, REQS, RELEASES.python_requires)
        for r in RELEASES.releases
        if Version(r.version) < Version(RELEASES.minimum)
    }
    assert why and all(why.values())
    assert any("Python >=3.10" in w for w in why["5.8.1"])
    assert why["5.10.0"] == ["pydicom>=3.0 (Slicer 5.10.0 ships 2.4.4)"]


def test_the_engine_really_needs_pydicom_3() -> None:
    """Why 5.10 is not enough: the worker imports pydicom.pixels (new in pydicom 3.0) at start-up."""
    # If the engine stops importing pydicom 3 API on the Slicer path, 5.10 may qualify: revisit the minimum.
    source = (REPO / "monai_bundle/doubleunet_segment/data/dicom_io.py").read_text()
    assert "from pydicom.pixels import" in source, "the engine no longer needs pydicom 3: revisit the minimum Slicer"
    image_io = (REPO / "monai_bundle/doubleunet_segment/data/image_io.py").read_text()
    assert "\nfrom .dicom_io import" in image_io, "the engine no longer needs pydicom 3: revisit the minimum Slicer"
    assert [str(r.specifier) for r in REQS if r.name == "pydicom"] == [">=3.0"]


def test_exact_pins_would_have_replaced_slicers_packages() -> None:
    """The old requirements.txt pinned pydicom==3.0.2: fine on 5.12.0 by chance, a replacement on any other."""
    pinned = [Requirement("pydicom==3.0.2"), Requirement("numpy==2.4.6")]
    fake = requirements.SlicerRelease("9.0.0", "3.12.10", {"pydicom": "3.0.3", "numpy": "2.5.0"})
    assert len(requirements.replaced_by(pinned, fake)) == 2
    assert requirements.replaced_by(REQS, fake) == []


def test_slicer_too_old_names_the_minimum() -> None:
    assert requirements.slicer_too_old("5.12", "5.12.0") is None
    assert requirements.slicer_too_old("5.13", "5.12.0") is None
    message = requirements.slicer_too_old("5.10", "5.12.0", python="3.12.10")
    assert message and "5.12.0 or later" in message and "5.10" in message and "download.slicer.org" in message


def test_constraints_hold_slicers_packages_at_their_installed_versions() -> None:
    release = RELEASES.release(RELEASES.minimum)
    installed = {"numpy": "2.4.6", "pydicom": "3.0.2", "simpleitk": "2.5.5"}
    lines = requirements.constraints(release, lambda name: installed.get(name.lower()), skip=["numpy"])
    assert sorted(lines) == ["pydicom==3.0.2", "simpleitk==2.5.5"]
    assert requirements.constraints(None) == []
    for line in requirements.constraints(release):  # this interpreter: every line is a valid exact pin
        assert [s.operator for s in Requirement(line).specifier] == ["=="], line


@pytest.mark.parametrize("name", ["numpy", "NumPy", "simple_itk", "SimpleITK"])
def test_shipped_compares_names_as_pip_does(name: str) -> None:
    release = RELEASES.release(RELEASES.minimum)
    if canonicalize_name(name) == "simple-itk":
        assert release.shipped(name) is None  # another project's name
    else:
        assert release.shipped(name)
