"""Robustness harness: real files of every supported format, and variants of them, through the command line.

Each variant in :data:`VARIANTS` builds one input from the sample data and states ONE expected outcome:

* ``WORKS``: exit 0, the stated number of cases, and each case's ``segmentation.nii.gz`` on the input's
  geometry: shape and RAS affine equal to SimpleITK's reading of the input (LPS converted to RAS) for volumes
  and DICOM, and ``(width, height, 1)`` with an identity affine for 2D pictures (the documented convention
  for images without patient geometry).
* ``REFUSED``: a non-zero exit, no Python traceback in the output, the input file named in it, no file
  written under the output folder.

For both, the input's bytes are unchanged (hashed before and after). A new kind of input is one new line in
the table. A variant whose fix is still missing elsewhere carries ``xfail=...`` (strict: it fails the run
once it passes, so the mark is removed then). The cases run in-process through :func:`cli.main` with the
small random-weight polyp model of ``conftest.py`` (one Predictor shared by all, fp32, torch backend), and
the inputs are small: the whole module runs in well under a minute on two cores.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from doubleunet_segment import cli
from helpers import DATA, make_model, make_reliability_case, needs_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

pytestmark = needs_data

CT = DATA / "dcmqi-ct3slice-seg" / "ct-3slice"
HIPPO = DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
NRRD = DATA / "pyradiomics-3d" / "prostate_phantom_subvolume.nrrd"
PNG = DATA / "cvc-clinicdb" / "images" / "1.png"
JPEG = DATA / "kvasir-seg" / "images" / "cju0qoxqj9q6s0835b43399p4.jpg"

WORKS, REFUSED = "works", "refused clearly"


# ---------------------------------------------------------------- input makers: (folder) -> input path


def _copy_ct(folder: Path, edit: Callable[[pydicom.Dataset, int], None] | None = None, n: int = 3) -> Path:
    """The 3-slice CT series (512x512 int16) copied, each slice optionally edited (``edit(ds, index)``)."""
    out = folder / "study-ct"
    out.mkdir()
    for k, src in enumerate(sorted(CT.iterdir())[:n]):
        ds = pydicom.dcmread(src)
        if edit is not None:
            edit(ds, k)
        ds.save_as(out / src.name)
    return out


def _delete(*keywords: str) -> Callable[[pydicom.Dataset, int], None]:
    def edit(ds: pydicom.Dataset, k: int) -> None:
        for keyword in keywords:
            if keyword in ds:
                delattr(ds, keyword)

    return edit


def _truncated_dicom(folder: Path) -> Path:
    path = folder / "cut.dcm"
    data = (CT / "01.dcm").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _enhanced_ct(folder: Path) -> Path:
    """The CT slices as one Legacy Converted Enhanced CT multi-frame instance (highdicom)."""
    from highdicom.legacy import LegacyConvertedEnhancedCTImage
    from pydicom.uid import generate_uid

    slices = [pydicom.dcmread(p) for p in sorted(CT.iterdir())]
    image = LegacyConvertedEnhancedCTImage(slices, generate_uid(), 99, generate_uid(), 1)
    out = folder / "enhanced"
    out.mkdir()
    image.save_as(out / "enhanced.dcm")
    return out


def _reliability_case(name: str, sub: str = "") -> Callable[[Path], Path]:
    """A ``reliability-cases/<name>/make.py`` input (its output folder, or the ``sub`` folder of it)."""

    def make(folder: Path) -> Path:
        out = folder / name
        make_reliability_case(name, folder / name)
        return out / sub if sub else out

    return make


def _nifti(
    crop: tuple[slice, ...] = (slice(8, 28), slice(10, 34), slice(16, 19)),
    dtype: str | None = None,
    affine: np.ndarray | None = None,
    frames: int = 0,
) -> Callable[[Path], Path]:
    """A crop of the hippocampus MR (uint8, 35x51x35, 1 mm) with its own affine, optionally recast."""

    def make(folder: Path) -> Path:
        src = nib.load(HIPPO)
        data = np.asarray(src.dataobj)[crop]
        if dtype is not None:
            data = data.astype(dtype)
        if frames:
            data = np.stack([data] * frames, axis=-1)
        path = folder / "vol.nii.gz"
        nib.save(nib.Nifti1Image(data, src.affine if affine is None else affine), path)
        return path

    return make


def _oblique_permuted() -> np.ndarray:
    """Axes permuted (i -> A, j -> L) and a 10 degree tilt, anisotropic spacing: an unusual but valid affine."""
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    tilt = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    permuted = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = tilt @ permuted @ np.diag([0.9, 1.2, 2.0])
    affine[:3, 3] = [30.0, 12.0, -7.0]
    return affine


def _truncated(make: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """The same file with its second half cut off (a download or copy that stopped)."""

    def cut(folder: Path) -> Path:
        path = make(folder)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path

    return cut


def _sitk_volume(suffix: str, pixel: int | None = None, size: tuple[int, ...] = (24, 20, 3)) -> Callable[[Path], Path]:
    """A crop of the prostate phantom NRRD (uint16, oriented), written by SimpleITK as ``suffix``."""

    def make(folder: Path) -> Path:
        image = sitk.ReadImage(str(NRRD))
        image = image[: size[0], : size[1], 5 : 5 + size[2]] if len(size) == 3 else image[: size[0], : size[1], 6]
        if pixel is not None:
            image = sitk.Cast(image, pixel)
        path = folder / f"vol{suffix}"
        sitk.WriteImage(image, str(path))
        return path

    return make


def _nrrd_2d(folder: Path) -> Path:
    import nrrd

    grey = np.asarray(Image.open(PNG).convert("L"))
    path = folder / "flat.nrrd"
    header = {"type": "uchar", "dimension": 2, "kinds": ["domain", "domain"], "encoding": "gzip"}
    nrrd.write(str(path), np.ascontiguousarray(grey.T), header, index_order="F")
    return path


def _picture(
    source: Path, suffix: str, mode: str | None = None, size: tuple[int, int] | None = None, **save: object
) -> Callable[[Path], Path]:
    """A real picture, optionally converted (PIL ``mode``) and cropped to ``size`` (w, h), saved as ``suffix``."""

    def make(folder: Path) -> Path:
        with Image.open(source) as img:
            img = img.convert("RGB")
            if size is not None:
                img = img.crop((0, 0, *size))
            if mode is not None:
                img = img.convert(mode)
            path = folder / f"pic{suffix}"
            img.save(path, **save)
        return path

    return make


def _png16(folder: Path) -> Path:
    grey = np.asarray(Image.open(PNG).convert("L")).astype(np.uint16) * 257
    path = folder / "pic16.png"
    Image.fromarray(grey).save(path)
    return path


def _exif_rotated(folder: Path) -> Path:
    """A JPEG stored sideways with EXIF Orientation 6 (rotate 90 degrees clockwise to view)."""
    with Image.open(JPEG) as img:
        stored = img.convert("RGB").crop((0, 0, 301, 200)).transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
        path = folder / "rotated.jpg"
        stored.save(path, exif=exif.tobytes())
    return path


def _multipage_tiff(folder: Path) -> Path:
    frames = [
        Image.open(DATA / "cvc-clinicdb" / "images" / f"{i}.png").convert("RGB").crop((0, 0, 64, 48)) for i in (1, 2, 3)
    ]
    path = folder / "pages.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


def _not_an_image(folder: Path) -> Path:
    path = folder / "notes.png"
    path.write_bytes(b"this is a text file that only claims to be a PNG\n")
    return path


def _gzip_bomb_header(folder: Path) -> Path:
    """A .nii.gz whose gzip stream is valid but holds no NIfTI header."""
    path = folder / "empty.nii.gz"
    path.write_bytes(gzip.compress(b"\0" * 100))
    return path


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Variant:
    """One input situation and the outcome it must have.

    Attributes:
        id: the test id.
        make: builds the input in a given folder and returns the path to pass on the command line.
        outcome: :data:`WORKS` or :data:`REFUSED`.
        cases: the number of cases a working input gives.
        args: extra command-line arguments.
        xfail: why it still fails (a fix in another module not yet in), or None.
        reference: the input whose SimpleITK reading gives the expected geometry, when SimpleITK misreads
            this one (None: the input itself).
    """

    id: str
    make: Callable[[Path], Path]
    outcome: str
    cases: int = 1
    args: tuple[str, ...] = ()
    xfail: str | None = None
    reference: Path | None = None


V = Variant
VARIANTS = [
    # DICOM, classic single-frame series
    V("dicom-ct-3slice", lambda f: _copy_ct(f), WORKS),
    V("dicom-single-slice", lambda f: _copy_ct(f, n=1), WORKS),
    V("dicom-missing-type2", lambda f: _copy_ct(f, _delete("PatientBirthDate", "PatientSex", "StudyID")), WORKS),
    V("dicom-comma-spacing", _reliability_case("ds-comma-spacing", "comma-delimiter"), WORKS),
    # GDCM reads "0,810547" as 810547 mm: the clean series is the reference
    V("dicom-decimal-comma", _reliability_case("ds-comma-spacing", "decimal-comma"), WORKS, reference=CT),
    # 1 mm pixels assumed with a note; no SEG (its geometry would be a guess)
    V("dicom-no-pixel-spacing", lambda f: _copy_ct(f, _delete("PixelSpacing")), WORKS),
    V("dicom-truncated-file", _truncated_dicom, REFUSED),
    # DICOM, multi-frame
    V("dicom-enhanced-ct", _enhanced_ct, WORKS),
    V("dicom-us-multiframe-nofor", _reliability_case("us-multiframe-nofor"), WORKS, cases=1),
    # NIfTI
    V("nifti-crop", _nifti(), WORKS),
    V("nifti-single-slice", _nifti(crop=(slice(0, 20), slice(0, 24), slice(17, 18))), WORKS),
    V("nifti-1px-wide", _nifti(crop=(slice(17, 18), slice(0, 24), slice(16, 19))), WORKS),
    V("nifti-odd-sizes", _nifti(crop=(slice(3, 20), slice(5, 28), slice(16, 19))), WORKS),
    V("nifti-uint16", _nifti(dtype="uint16"), WORKS),
    V("nifti-int8", _nifti(dtype="int8"), WORKS),
    V("nifti-float64", _nifti(dtype="float64"), WORKS),
    V("nifti-oblique-permuted", _nifti(affine=_oblique_permuted()), WORKS),
    V("nifti-4d-frames", _nifti(frames=2), REFUSED),
    V("nifti-truncated", _truncated(_nifti()), REFUSED),
    V("nifti-no-header", _gzip_bomb_header, REFUSED),
    # NRRD
    V("nrrd-crop", _sitk_volume(".nrrd"), WORKS),
    V("nrrd-float64", _sitk_volume(".nrrd", sitk.sitkFloat64), WORKS),
    V("nrrd-2d", _nrrd_2d, WORKS),
    V("nrrd-truncated", _truncated(_sitk_volume(".nrrd")), REFUSED),
    # MetaImage
    V("mha-crop", _sitk_volume(".mha"), WORKS),
    V("mha-int8", _sitk_volume(".mha", sitk.sitkInt8), WORKS),
    V("mha-truncated", _truncated(_sitk_volume(".mha")), REFUSED),
    # PNG
    V("png-rgb", lambda f: Path(shutil.copy(PNG, f / "1.png")), WORKS),
    V("png-rgba", _picture(PNG, ".png", "RGBA"), WORKS),
    V("png-grey-uint16", _png16, WORKS),
    V("png-bool-1bit", _picture(PNG, ".png", "1"), WORKS),
    V("png-palette", _picture(PNG, ".png", "P"), WORKS),
    V("png-1px-wide", _picture(PNG, ".png", size=(1, 40)), WORKS),
    V("png-odd-size", _picture(PNG, ".png", size=(33, 17)), WORKS),
    V("png-truncated", _truncated(_picture(PNG, ".png")), REFUSED),
    V("png-not-an-image", _not_an_image, REFUSED),
    # JPEG
    V("jpeg-rgb", lambda f: Path(shutil.copy(JPEG, f / "k.jpg")), WORKS),
    V("jpeg-grey", _picture(JPEG, ".jpg", "L"), WORKS),
    V("jpeg-cmyk", _picture(JPEG, ".jpg", "CMYK", size=(120, 90)), WORKS),
    V("jpeg-exif-orientation-6", _exif_rotated, WORKS),
    V("jpeg-truncated", _truncated(_picture(JPEG, ".jpg")), REFUSED),
    # TIFF
    V("tiff-rgb", _picture(PNG, ".tif"), WORKS),
    V("tiff-float32", _picture(PNG, ".tif", "F", size=(50, 40)), WORKS),
    V("tiff-multipage", _multipage_tiff, WORKS),
    V("tiff-truncated", _truncated(_picture(PNG, ".tif")), REFUSED),
]


# ---------------------------------------------------------------- running and checking


_PREDICTORS: dict[tuple, object] = {}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """conftest's polyp model at 32x32 (every slice is resized to it): geometry, not accuracy, is tested."""
    spec = {"normalization": "median", "inplane": "resize", "roi_size": [32, 32], "segments": "polyp"}
    return make_model(tmp_path_factory.mktemp("models"), "polyp_tiny", 3, 1, spec)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: on two shared cores, two threads per process slow the small passes down many-fold."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fast_cli(monkeypatch, tiny_model, one_thread, tmp_path):
    """``cli.main`` with one shared Predictor (building one per call would cost more than the cases)."""
    monkeypatch.setenv("DOUBLEUNET_CACHE", str(tmp_path / "cache"))
    real = cli.Predictor

    def shared(spec, **kwargs):
        key = (str(spec.weights), spec.threshold, spec.largest_component, *sorted(kwargs.items()))
        if key not in _PREDICTORS:
            _PREDICTORS[key] = real(spec, **kwargs)
        return _PREDICTORS[key]

    monkeypatch.setattr(cli, "Predictor", shared)

    def run(inputs: list[Path], out: Path, *extra: str) -> int:
        args = [*map(str, inputs), "-o", str(out), "--model", str(tiny_model), "--progress", "none"]
        args += ["--precision", "fp32", "--backend", "torch", *extra]
        try:
            return cli.main(args)
        except SystemExit as exit_info:  # usage errors exit 2 through argparse
            return int(exit_info.code or 0)

    return run


def _hashes(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _reference(source: Path) -> sitk.Image:
    """SimpleITK's reading of the input: the geometry a correct reader must reproduce."""
    if source.is_dir():
        reader = sitk.ImageSeriesReader()
        files = reader.GetGDCMSeriesFileNames(str(source))
        if len(files) > 1:
            reader.SetFileNames(files)
            return reader.Execute()
        if not files:  # no Frame of Reference: GDCM's series grouping skips it
            files = [str(p) for p in sorted(source.rglob("*")) if p.is_file()]
        return sitk.ReadImage(files[0])
    return sitk.ReadImage(str(source))


def _ras_affine(image: sitk.Image) -> tuple[tuple[int, ...], np.ndarray]:
    """(size as a 3-tuple, 4x4 RAS affine) of a SimpleITK image (2D images get a unit third axis)."""
    dim = image.GetDimension()
    lps = np.eye(4)
    lps[:dim, :dim] = np.array(image.GetDirection()).reshape(dim, dim) * np.array(image.GetSpacing())
    lps[:dim, 3] = image.GetOrigin()
    size = tuple(image.GetSize()) + (1,) * (3 - dim)
    return size, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _check_geometry(source: Path, nifti: Path) -> None:
    out = nib.load(nifti)
    if source.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif", ".tiff"}:
        with Image.open(source) as img:
            from PIL import ImageOps

            width, height = ImageOps.exif_transpose(img).size  # what a viewer shows
        assert out.shape == (width, height, 1)
        np.testing.assert_array_equal(out.affine, np.eye(4))
        return
    size, affine = _ras_affine(_reference(source))
    assert out.shape == size
    if size[2] == 1:  # one slice: its thickness is a convention (SliceThickness or 1), the plane is not
        np.testing.assert_allclose(out.affine[:3, [0, 1, 3]], affine[:3, [0, 1, 3]], atol=1e-3)
    else:
        np.testing.assert_allclose(_corners(out.shape, out.affine), _corners(size, affine), atol=1e-3)


def _corners(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """The grid's 8 corner voxel centres in mm, sorted: equal for grids that differ only in axis direction
    (a reader may store slices in either order, with the affine to match)."""
    index = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    points = (affine @ index.T).T[:, :3]
    return points[np.lexsort(np.round(points, 3).T)]


def _params():
    for v in VARIANTS:
        marks = [pytest.mark.xfail(strict=True, reason=v.xfail)] if v.xfail else []
        yield pytest.param(v, id=v.id, marks=marks)


@pytest.mark.parametrize("variant", _params())
def test_input_variant(variant: Variant, tmp_path, fast_cli, capfd):
    src_folder = tmp_path / "in"
    src_folder.mkdir()
    source = variant.make(src_folder)
    before = _hashes(source)
    out = tmp_path / "out"
    capfd.readouterr()
    status = fast_cli([source], out, *variant.args)
    captured = capfd.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text, text
    assert _hashes(source) == before, "the input was modified"
    written = sorted(p for p in out.rglob("*") if p.is_file()) if out.exists() else []
    if variant.outcome == REFUSED:
        assert status != 0, text
        assert source.name in text, f"the input {source.name} is not named:\n{text}"
        assert written == [], f"a refused input left files: {written}"
        return
    assert status == 0, text
    cases = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(cases) == variant.cases, [p.name for p in cases]
    for case in cases:
        assert (case / "segments.json").is_file()
        if variant.cases == 1:
            _check_geometry(variant.reference or source, case / "segmentation.nii.gz")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=st.integers(1, 48),
    height=st.integers(1, 48),
    mode=st.sampled_from(["RGB", "L", "RGBA", "I;16", "1", "P"]),
    suffix=st.sampled_from([".png", ".tif"]),
)
def test_any_crop_and_mode_of_a_real_picture_works(width, height, mode, suffix, tmp_path_factory, fast_cli):
    """Any crop of a real frame in any common pixel mode segments on the picture's own grid."""
    folder = tmp_path_factory.mktemp("pic")
    with Image.open(PNG) as img:
        crop = img.convert("RGB").crop((7, 5, 7 + width, 5 + height))
        picture = crop.convert("L").convert(mode) if mode == "I;16" else crop.convert(mode)
    path = folder / f"crop{suffix}"
    picture.save(path)
    assert fast_cli([path], folder / "out") == 0
    _check_geometry(path, folder / "out" / "crop" / "segmentation.nii.gz")


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.tuples(st.integers(1, 24), st.integers(1, 24), st.integers(1, 3)),
    dtype=st.sampled_from(["uint8", "int16", "uint16", "float32", "float64", "int8"]),
)
def test_any_crop_and_dtype_of_a_real_volume_works(shape, dtype, tmp_path_factory, fast_cli):
    """Any crop of the real MR volume in any common voxel type keeps its shape and affine."""
    folder = tmp_path_factory.mktemp("vol")
    src = nib.load(HIPPO)
    data = np.asarray(src.dataobj)[5 : 5 + shape[0], 5 : 5 + shape[1], 15 : 15 + shape[2]].astype(dtype)
    path = folder / "crop.nii.gz"
    nib.save(nib.Nifti1Image(data, src.affine), path)
    assert fast_cli([path], folder / "out") == 0
    out = nib.load(folder / "out" / "crop" / "segmentation.nii.gz")
    assert out.shape == data.shape
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-6)


def test_several_inputs_give_one_case_each(tmp_path, fast_cli):
    """A mixed batch: each input its own case, in one run."""
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = [_picture(PNG, ".png", size=(40, 30))(folder), _nifti()(folder), _copy_ct(folder)]
    assert fast_cli(inputs, tmp_path / "out") == 0
    assert len([p for p in (tmp_path / "out").iterdir() if p.is_dir()]) == 3
