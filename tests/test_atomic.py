"""Atomic writes: existing files kept unless overwrite, nothing left behind by a failed write, umask honoured."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from doubleunet_segment.data.atomic import atomic_path, atomic_write_text, refuse_overwrite
from doubleunet_segment.data.nifti_io import write_nifti


def test_refuse_overwrite_keeps_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "result.nii.gz"
    target.write_bytes(b"previous result")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_nifti(np.zeros((2, 2, 2), np.uint8), np.eye(4), target)
    assert target.read_bytes() == b"previous result"
    refuse_overwrite(tmp_path / "new.nii", overwrite=False)  # absent: fine
    write_nifti(np.ones((2, 2, 2), np.uint8), np.eye(4), target, overwrite=True)
    assert np.asarray(nib.load(target).dataobj).sum() == 8
    assert [p.name for p in tmp_path.iterdir()] == ["result.nii.gz"]


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"half": ')
        assert tmp.parent == target.parent and tmp.name.endswith(".json")
        raise RuntimeError("crash while writing")
    assert list(target.parent.iterdir()) == []


def test_target_appearing_during_write_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    with pytest.raises(FileExistsError), atomic_path(target) as tmp:
        tmp.write_text("mine")
        target.write_text("someone else's")
    assert target.read_text() == "someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_text_permissions_follow_umask(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "x.txt", "hello")
    assert path.read_text() == "hello"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
