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


def test_atomic_files_publishes_all_or_none(tmp_path: Path) -> None:
    from doubleunet_segment.data.atomic import atomic_files

    targets = {"a": tmp_path / "case" / "a.nii.gz", "b": tmp_path / "case" / "b.json"}
    with pytest.raises(RuntimeError), atomic_files(targets) as staged:
        staged["a"].write_text("first")
        raise RuntimeError("second writer failed")
    assert list((tmp_path / "case").iterdir()) == []
    with atomic_files(targets) as staged:
        assert staged["a"].name.endswith(".nii.gz") and staged["a"].parent == targets["a"].parent
        for key, path in staged.items():
            path.write_text(key)
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == ["a.nii.gz", "b.json"]


def test_atomic_files_rolls_back_a_failed_publish_and_keeps_old_files(tmp_path: Path) -> None:
    """With overwrite, files replaced before a later one fails to move are put back."""
    from doubleunet_segment.data.atomic import OutputExistsError, atomic_files

    old = tmp_path / "a.txt"
    old.write_text("old result")
    blocker = tmp_path / "b.txt"
    with pytest.raises(FileNotFoundError), atomic_files({"a": old, "b": blocker}, overwrite=True) as staged:
        staged["a"].write_text("new result")  # b is never written: publishing it fails after a was replaced
    assert old.read_text() == "old result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    with pytest.raises(OutputExistsError) as info, atomic_files({"a": old}) as staged:
        pass
    assert info.value.path == old and "overwrite=True" in str(info.value)
