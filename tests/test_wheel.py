"""A normal (non-editable) wheel works on its own: the bundles (configs, model specs, weights) travel inside it.

The wheel is built from a clean copy of the sources (no stale ``build/`` can leak in), installed into a fresh
virtual environment that borrows only the third-party packages of the test environment, and run from
another folder: ``--help``, then one real Kvasir-SEG frame, whose mask must equal the checkout's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import DATA, REPO, needs_data

SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE")
FRAME = DATA / "kvasir-seg" / "images" / "cju0qoxqj9q6s0835b43399p4.jpg"
# fp32 through PyTorch: the automatic bf16/ONNX choice is checked on validation images that an installed
# package may not find, so both sides are pinned to the same path.
EXACT = ["--precision", "fp32", "--backend", "torch", "--progress", "none", "--format", "nifti"]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd[:4]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "monai_bundle",
        src / "monai_bundle",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.ts", "runs"),
    )
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), "."], src)
    (path,) = out.glob("doubleunet_segment-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel; third-party packages come from this environment's site-packages."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], venv)
    python = venv / "bin" / "python"
    site = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], venv).stdout.strip()
    )
    # A plain path line: the test venv's own .pth files (its editable install of this package) are not run.
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        venv,
    )
    return venv


def test_wheel_carries_the_bundle_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    needed_files = ("models/model.json", "models/model.pt", "configs/inference.json", "configs/metadata.json")
    for bundle in ("polyp", "hippocampus"):
        for needed in (*needed_files, "large_files.yml"):  # the loader checks the weights against it
            assert f"doubleunet_segment/bundles/{bundle}/{needed}" in names
    assert not any(name.endswith(".ts") for name in names)  # the TorchScript export is not needed to run
    packages = {name.rsplit("/", 1)[0] for name in names if name.endswith("/__init__.py")}
    for sub in ("networks", "data", "inference", "training", "release"):
        assert f"doubleunet_segment/{sub}" in packages


@needs_data
def test_installed_wheel_runs_help_and_a_real_case(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOUBLEUNET_")}
    env["DOUBLEUNET_CACHE"] = str(tmp_path / "cache")
    where = run(
        [
            str(installed / "bin" / "python"),
            "-c",
            "import doubleunet_segment, doubleunet_segment.paths as p; print(doubleunet_segment.__file__); "
            "print(p.bundles_root())",
        ],
        tmp_path,
        env,
    ).stdout.split()
    assert all(Path(line).is_relative_to(installed) for line in where), where  # not the checkout's copy

    cli = str(installed / "bin" / "doubleunet-segment")
    helped = run([cli, "--help"], tmp_path, env).stdout
    assert "--model" in helped and "polyp" in helped and "hippocampus" in helped

    run([cli, str(FRAME), "-o", str(tmp_path / "wheel"), *EXACT], tmp_path, env)
    run([sys.executable, "-m", "doubleunet_segment.cli", str(FRAME), "-o", str(tmp_path / "checkout"), *EXACT], REPO)
    case = FRAME.name.split(".")[0]
    info = json.loads((tmp_path / "wheel" / case / "segments.json").read_text())
    assert info["model"] == "polyp"
    ours, theirs = (nib.load(tmp_path / side / case / "segmentation.nii.gz") for side in ("wheel", "checkout"))
    assert np.asarray(ours.dataobj).any()
    assert np.array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))


def test_bundles_env_names_the_bundles_the_engine_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from doubleunet_segment import paths
    from doubleunet_segment.catalog import read_catalog

    copy = tmp_path / "polyp"
    (copy / "models").mkdir(parents=True)
    (copy / "configs").mkdir()
    source = paths.bundle_dir("polyp")
    spec = json.loads((source / "models" / "model.json").read_text())
    (copy / "models" / "model.json").write_text(json.dumps({**spec, "description": "a copied bundle"}))
    (copy / "configs" / "metadata.json").write_text((source / "configs" / "metadata.json").read_text())
    monkeypatch.setenv(paths.BUNDLES_ENV, str(tmp_path))
    assert paths.bundles_root() == tmp_path.resolve()
    assert list(read_catalog()) == ["polyp"]
    spec = read_catalog()["polyp"]
    assert spec.description == "a copied bundle" and spec.weights.parent == copy.resolve() / "models"
    monkeypatch.setenv(paths.BUNDLES_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="DOUBLEUNET_BUNDLES"):
        paths.bundles_root()
