"""Case discovery and the non-DICOM readers, through the command line: folders are batches (DICOM, images,
volumes, mixed, nested), case names are unique and stable, 2D images in volume files are 2D images, JPEGs are
read upright, and truncated or corrupt files fail alone with a clear message and nothing written."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from doubleunet_segment.cli import main
from doubleunet_segment.data.cases import discover
from doubleunet_segment.data.image_io import read_volume_file
from helpers import DATA, make_reliability_case, needs_cases, needs_data
from PIL import Image

pytestmark = needs_data

CVC = DATA / "cvc-clinicdb" / "images"
KVASIR = DATA / "kvasir-seg" / "images"
MSD = DATA / "msd-hippocampus" / "imagesTr"
CT = DATA / "dcmqi-ct3slice-seg" / "ct-3slice"


def run(inputs: list[Path], out: Path, model: Path, *extra: str) -> int:
    return main([*map(str, inputs), "-o", str(out), "--model", str(model), "--progress", "none", *extra])


def case_dirs(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if p.is_dir()}


def copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(src, dst))


# ------------------------------------------------------------------------------------- folders are batches


def test_folder_of_png_frames(tmp_path, polyp_model):
    folder = tmp_path / "frames"
    for name in ("1.png", "2.png", "3.png"):
        copy(CVC / name, folder / name)
    copy(KVASIR / "cju0qoxqj9q6s0835b43399p4.jpg", folder / "kvasir.jpg")
    assert run([folder], tmp_path / "out", polyp_model) == 0
    assert case_dirs(tmp_path / "out") == {"1", "2", "3", "kvasir"}
    with Image.open(CVC / "2.png") as src, Image.open(tmp_path / "out" / "2" / "mask.png") as mask:
        assert mask.size == src.size


def test_nested_folders_of_nifti_volumes(tmp_path, hippo_model):
    folder = tmp_path / "study"
    places = {"001": folder, "003": folder / "sub", "004": folder / "sub" / "deeper"}
    for name, place in places.items():
        place.mkdir(parents=True, exist_ok=True)
        src = nib.load(MSD / f"hippocampus_{name}.nii.gz")
        nib.save(src.slicer[:, :, :6], place / f"hippocampus_{name}.nii.gz")  # 6 slices keep the test quick
    assert run([folder], tmp_path / "out", hippo_model, "--format", "nifti") == 0
    assert case_dirs(tmp_path / "out") == {"hippocampus_001", "hippocampus_003", "hippocampus_004"}
    for name, place in places.items():
        out = nib.load(tmp_path / "out" / f"hippocampus_{name}" / "segmentation.nii.gz")
        src = nib.load(place / f"hippocampus_{name}.nii.gz")
        assert out.shape == src.shape
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-6)


def test_mixed_folder_dicom_images_volumes_and_other_files(tmp_path, polyp_model):
    folder = tmp_path / "mixed"
    shutil.copytree(CT, folder / "ct")
    copy(CVC / "1.png", folder / "frame.png")
    copy(MSD / "hippocampus_001.nii.gz", folder / "vol" / "hippocampus_001.nii.gz")
    (folder / "README.txt").write_text("notes")
    (folder / "meta.json").write_text("{}")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    (folder / "junk.bin").write_bytes(b"neither DICOM nor an image")
    before = sorted((p.relative_to(folder), p.read_bytes()) for p in folder.rglob("*") if p.is_file())

    cases, notes = discover([str(folder)])
    assert [c.kind for c in cases] == ["dicom", "image", "volume"]
    assert [n for n in notes if "junk.bin" in n]  # a note, not a failure
    assert not [n for n in notes if "README" in n or "meta.json" in n or "DS_Store" in n]  # quietly

    assert run([folder], tmp_path / "out", polyp_model, "--format", "nifti,png") == 0
    assert case_dirs(tmp_path / "out") == {cases[0].name, "frame", "hippocampus_001"}
    assert (tmp_path / "out" / "frame" / "mask.png").is_file()
    assert sorted((p.relative_to(folder), p.read_bytes()) for p in folder.rglob("*") if p.is_file()) == before


def test_folder_without_anything_to_segment_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "empty"), "-o", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "no DICOM series, volumes or 2D images found" in capsys.readouterr().err


def test_same_file_reached_twice_is_one_case(tmp_path):
    copy(MSD / "hippocampus_001.nii.gz", tmp_path / "a" / "sub" / "x.nii.gz")
    cases, notes = discover([str(tmp_path / "a"), str(tmp_path / "a" / "sub"), str(tmp_path / "a/sub/x.nii.gz")])
    assert [c.name for c in cases] == ["x"]
    assert len([n for n in notes if "more than once" in n]) == 2


# ------------------------------------------------------------------------------------------------- naming


@needs_cases
def test_colliding_names_get_their_own_folders(tmp_path, hippo_model):
    folder = make_reliability_case("case-name-collision", tmp_path / "in")
    inputs = [folder / "a" / "scan.nii.gz", folder / "b" / "scan.nii.gz", folder / "c" / "scan_2.nii.gz"]
    out = tmp_path / "out"
    assert run(inputs, out, hippo_model, "--format", "nifti", "--overwrite") == 0
    assert case_dirs(out) == {"a_scan", "b_scan", "scan_2"}
    for name, src in (("a_scan", inputs[0]), ("b_scan", inputs[1]), ("scan_2", inputs[2])):
        assert nib.load(out / name / "segmentation.nii.gz").shape == nib.load(src).shape


@needs_cases
def test_names_do_not_depend_on_argument_order(tmp_path):
    folder = make_reliability_case("case-name-collision", tmp_path / "in")
    inputs = [str(folder / "a" / "scan.nii.gz"), str(folder / "b" / "scan.nii.gz"), str(folder / "c/scan_2.nii.gz")]
    named = set()
    for order in itertools.permutations(inputs):
        cases, _ = discover(list(order))
        named.add(frozenset((c.source, c.name) for c in cases))
    assert len(named) == 1
    assert {name for _, name in next(iter(named))} == {"a_scan", "b_scan", "scan_2"}
    cases, _ = discover([str(folder)])  # the same files found by scanning the folder get the same names
    assert frozenset((c.source, c.name) for c in cases) == next(iter(named))


def test_generated_names_never_take_another_inputs_name(tmp_path):
    for rel in ("a/scan.nii.gz", "b/scan.nii.gz", "x/a_scan.nii.gz", "y/B/scan.nii.gz", "z/Scan.nii.gz"):
        copy(MSD / "hippocampus_001.nii.gz", tmp_path / "in" / rel)
    cases, _ = discover([str(tmp_path / "in")])
    names = {Path(c.source).relative_to(tmp_path / "in").as_posix(): c.name for c in cases}
    assert names["x/a_scan.nii.gz"] == "a_scan"  # collides with nothing: keeps its own name
    assert len({n.casefold() for n in names.values()}) == len(names)  # unique even on case-insensitive disks
    # k=1 gives a_scan (another input's name) and b_scan ~ B_scan: so the whole group takes two folders
    assert names["a/scan.nii.gz"] == "in_a_scan" and names["b/scan.nii.gz"] == "in_b_scan"
    assert names["y/B/scan.nii.gz"] == "y_B_scan" and names["z/Scan.nii.gz"] == "in_z_Scan"


def test_dicom_and_unique_names_keep_todays_names(tmp_path):
    cases, _ = discover([str(CT), str(MSD / "hippocampus_001.nii.gz"), str(CVC / "1.png")])
    assert [c.name for c in cases] == ["99000_2", "hippocampus_001", "1"]  # as in version 0.2.0
    # a file named like the series: both are told apart by their folders
    copy(CVC / "1.png", tmp_path / "x" / "99000_2.png")
    cases, _ = discover([str(tmp_path / "x"), str(CT)])
    assert [c.name for c in cases] == ["x_99000_2", "ct-3slice_99000_2"]


# ------------------------------------------------------------------------------------ 2D images in volumes


@needs_cases
def test_2d_nrrd_is_segmented_as_an_image(tmp_path, polyp_model):
    path = make_reliability_case("nrrd-2d", tmp_path / "in") / "grey2d.nrrd"
    assert run([path], tmp_path / "out", polyp_model) == 0
    case = tmp_path / "out" / "grey2d"
    with Image.open(CVC / "1.png") as src, Image.open(case / "mask.png") as mask:
        assert mask.size == src.size
    assert (case / "overlay.png").is_file() and not (case / "views.png").exists()
    seg = sitk.ReadImage(str(case / "segmentation.nii.gz"))
    assert seg.GetSize() == (*src.size, 1) and seg.GetSpacing()[:2] == (0.5, 0.5)


def test_2d_mha_gives_the_same_mask_as_the_png(tmp_path, polyp_model):
    rgb = np.asarray(Image.open(CVC / "1.png").convert("RGB"))
    image = sitk.GetImageFromArray(rgb, isVector=True)
    image.SetSpacing((0.8, 0.8))
    sitk.WriteImage(image, str(tmp_path / "frame.mha"))
    copy(CVC / "1.png", tmp_path / "frame.png")
    assert run([tmp_path / "frame.mha"], tmp_path / "mha", polyp_model) == 0
    assert run([tmp_path / "frame.png"], tmp_path / "png", polyp_model) == 0
    with Image.open(tmp_path / "mha" / "frame" / "mask.png") as a, Image.open(tmp_path / "png/frame/mask.png") as b:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("shape", [(40, 30), (40, 30, 1)])
def test_2d_and_one_slice_nifti_read_as_images(tmp_path, shape):
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.int16).reshape(shape), np.diag([2, 3, 4, 1])), path)
    volume = read_volume_file(path)
    assert volume.is_2d_image and volume.array.shape == (1, 40, 30, 1)
    assert not read_volume_file(MSD / "hippocampus_001.nii.gz").is_2d_image


# --------------------------------------------------------------------------------------------------- EXIF


@needs_cases
def test_exif_rotated_jpeg_is_read_upright(tmp_path, polyp_model):
    folder = make_reliability_case("jpeg-exif-orientation", tmp_path / "in")
    assert run([folder], tmp_path / "out", polyp_model) == 0
    with Image.open(folder / "upright.jpg") as shown:
        size = shown.size
    masks = {}
    for name in ("exif6", "upright"):
        case = tmp_path / "out" / name
        with Image.open(case / "mask.png") as mask, Image.open(case / "overlay.png") as overlay:
            assert mask.size == overlay.size == size  # as viewers show it, not as stored (401x597)
            masks[name] = np.asarray(mask)
    np.testing.assert_array_equal(masks["exif6"], masks["upright"])


# ------------------------------------------------------------------------------- files that lie about themselves


def _full_file(kind: str, folder: Path) -> Path:
    """A complete, valid file of ``kind`` made from the sample data."""
    hippo = MSD / "hippocampus_001.nii.gz"
    if kind == "nii.gz":
        return copy(hippo, folder / "bad.nii.gz")
    if kind == "nii":
        nib.save(nib.load(hippo), folder / "bad.nii")
        return folder / "bad.nii"
    if kind in ("nrrd", "nrrd-gzip", "mha"):
        path = folder / ("bad.mha" if kind == "mha" else "bad.nrrd")
        sitk.WriteImage(sitk.ReadImage(str(hippo)), str(path), kind == "nrrd-gzip")
        return path
    frame = Image.open(CVC / "1.png").convert("RGB")
    path = folder / f"bad.{kind}"
    frame.save(path)
    return path


@pytest.mark.parametrize("kind", ["nii.gz", "nii", "nrrd", "nrrd-gzip", "mha", "png", "jpg", "tif"])
def test_truncated_file_fails_alone_with_a_clear_message(tmp_path, kind, polyp_model, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    path = _full_file(kind, folder)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    good = copy(CVC / "2.png", folder / "good.png")
    out = tmp_path / "out"
    assert run([path, good], out, polyp_model, "--format", "nifti,png") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "FAILED" in line]
    assert str(path) in line and "ValueError" in line and ("truncated" in line or "corrupt" in line)
    assert not (out / "bad").exists() or not any((out / "bad").rglob("*"))  # nothing written for it
    assert (out / "good" / "mask.png").is_file()  # the other case is done
    assert path.read_bytes() == data[: len(data) // 2]  # input untouched


def test_metaimage_header_promising_more_data_than_the_file_holds(tmp_path):
    header = "ObjectType = Image\nNDims = 3\nDimSize = 10 10 20\nElementType = MET_SHORT\nElementDataFile = LOCAL\n"
    path = tmp_path / "short.mha"
    path.write_bytes(header.encode() + np.zeros((10, 10, 10), np.int16).tobytes())
    with pytest.raises(ValueError, match="short.mha: truncated or corrupt: the header promises 4000 bytes.*2000"):
        read_volume_file(path)
    raw = tmp_path / "split.mhd"
    raw.write_text(header.replace("LOCAL", "split.raw"))
    (tmp_path / "split.raw").write_bytes(np.zeros(100, np.int16).tobytes())
    with pytest.raises(ValueError, match="split.mhd: .*promises 4000 bytes.*200"):
        read_volume_file(raw)
    (tmp_path / "split.raw").write_bytes(np.zeros((20, 10, 10), np.int16).tobytes())
    assert read_volume_file(raw).array.shape == (1, 10, 10, 20)  # complete: read as before


def test_truncated_image_fails_even_where_pil_was_told_to_pad(tmp_path, monkeypatch):
    from doubleunet_segment.data.image_io import read_image_2d
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some libraries set it globally
    data = (CVC / "1.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png: unreadable image file"):
        read_image_2d(tmp_path / "cut.png")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is left as it was


def test_symlinked_subfolder_is_followed_and_loops_end(tmp_path):
    pngs = tmp_path / "elsewhere"
    pngs.mkdir()
    for name in ("1.png", "2.png"):
        shutil.copy(CVC / name, pngs / name)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "patient1").symlink_to(pngs, target_is_directory=True)
    (pngs / "loop").symlink_to(folder, target_is_directory=True)  # a link back up: must not recurse forever
    cases, _ = discover([str(folder)])
    assert sorted(c.name for c in cases) == ["1", "2"]


def test_fifo_in_folder_is_skipped_promptly(tmp_path):
    import os
    import time

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(CVC / "1.png", folder / "1.png")
    os.mkfifo(folder / "stray_pipe")
    start = time.monotonic()
    cases, notes = discover([str(folder)])
    assert time.monotonic() - start < 10
    assert [c.name for c in cases] == ["1"]
    assert [n for n in notes if "stray_pipe" in n and "not a regular file" in n]
