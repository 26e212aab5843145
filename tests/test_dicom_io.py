"""DICOM series reading on real files (dcmqi CT, pydicom test data) and on series synthesised from real MR."""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_synth import SynthSeries, ras_affine, slice_dataset, write_series
from doubleunet_segment.data.dicom_io import (
    DicomSeriesError,
    SeriesRef,
    _Notes,
    _numbers,
    find_dicom_series,
    load_series,
    lps_to_ras,
)
from helpers import DATA
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

CT3 = DATA / "dcmqi-ct3slice-seg" / "ct-3slice"
HIPPO = DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
PYDICOM_TESTS = Path(get_testdata_file("CT_small.dcm")).parent
DICOMDIR_TESTS = PYDICOM_TESTS / "dicomdirtests"


def sitk_reference(files: list[Path] | None = None, folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's RAS affine and (X, Y, Z) array; a folder is ordered the way SimpleITK users do it."""
    names = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))) if folder else [str(f) for f in files]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    image = reader.Execute()
    lps = np.eye(4)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    array = sitk.GetArrayFromImage(image)  # (Z, Y, X) or (Z, Y, X, C)
    return lps_to_ras(lps), array.transpose(2, 1, 0, *range(3, array.ndim))


@pytest.fixture(scope="module")
def hippo() -> np.ndarray:
    """A real MR volume (MSD hippocampus case 001), values as float."""
    return np.asarray(nib.load(HIPPO).get_fdata(), dtype=np.float64)


# ---------------------------------------------------------------------------------------------- real CT


def test_real_ct_matches_simpleitk(tmp_path: Path) -> None:
    folder = shutil.copytree(CT3, tmp_path / "ct")
    refs, skipped = find_dicom_series(folder)
    assert len(refs) == 1 and not skipped
    series = load_series(refs[0])
    affine, array = sitk_reference(folder=folder)
    np.testing.assert_allclose(series.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(series.array[0], array)
    assert series.array.shape == (1, 512, 512, 3) and series.array.dtype == np.float32
    assert [p.name for p in series.files] == ["03.dcm", "02.dcm", "01.dcm"]  # ascending along the normal
    assert series.modality == "CT" and not series.is_rgb and series.warnings == []
    assert series.patient_id and series.name.startswith(series.patient_id)
    assert "PixelData" not in series.datasets[0]  # headers only once pixels are taken


def test_real_ct_hounsfield_rescale(tmp_path: Path) -> None:
    series = load_series(sorted(CT3.glob("*.dcm")))
    ds = pydicom.dcmread(series.files[0])
    expected = ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(series.array[0, :, :, 0], expected)
    assert series.array.min() < -500  # air in HU


def test_folder_mixing_series_reports_errors_and_skips(tmp_path: Path) -> None:
    """pydicom's dicomdirtests: CT/MR/CR series, localizers with mixed orientations, DICOMDIRs."""
    folder = shutil.copytree(DICOMDIR_TESTS, tmp_path / "mixed")
    refs, skipped = find_dicom_series(folder)
    # TINY_ALPHA: CT headers without pixels; MR2 and MR700: localizers split by orientation
    reasons = ("DICOMDIR", "not a readable DICOM", "holds no image", "orientations (a localizer): split into")
    assert skipped and all(any(reason in message for reason in reasons) for message in skipped)
    assert any(m.startswith(str(folder / "DICOMDIR")) for m in skipped)
    by_dir = {ref.files[0].parent.name: ref for ref in refs if len({f.parent for f in ref.files}) == 1}
    mr700 = [ref for ref in refs if ref.files[0].parent.name == "MR700"]
    assert [ref.part for ref in mr700] == [
        "coronal", "coronal_2", "coronal_3", "sagittal", "sagittal_2", "sagittal_3", "sagittal_4"
    ]  # fmt: skip
    assert any("MR700" in m and "7 orientations" in m for m in skipped)
    for ref in mr700:  # radial series: every slice has its own orientation, so each is a case of its own
        assert load_series(ref).array.shape == (1, 16, 16, 1)
    ct = load_series(by_dir["CT5N"])
    affine, array = sitk_reference(folder=folder / "98892001" / "CT5N")
    np.testing.assert_allclose(ct.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(ct.array[0], array)
    with pytest.raises(DicomSeriesError, match="differing ImageOrientationPatient") as error:
        load_series([f for ref in mr700 for f in ref.files])  # files handed in as one series are not split
    assert "4467" in str(error.value)
    with pytest.raises(DicomSeriesError, match="missing slices") as error:
        load_series(by_dir["CT2"])  # 4 slices, 3 contiguous and one 200 mm away
    assert "17106" in str(error.value) and "17136" in str(error.value)


def test_projection_radiograph_without_geometry(tmp_path: Path) -> None:
    path = next((DICOMDIR_TESTS / "77654033" / "CR1").iterdir())
    series = load_series([path])
    affine, array = sitk_reference(files=[path])
    np.testing.assert_allclose(series.affine, affine, atol=1e-6)  # ImagerPixelSpacing, origin 0
    np.testing.assert_allclose(series.array[0], array, rtol=1e-6)
    assert any("identity orientation" in w for w in series.warnings)
    assert series.array.max() > 1600  # MONOCHROME1 inverted as SimpleITK does


# -------------------------------------------------------------------------------- pydicom's real files


@pytest.mark.parametrize(
    "compressed, reference",
    [
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR_small_bigendian.dcm", "MR_small.dcm"),
    ],
)
def test_compressed_transfer_syntaxes(compressed: str, reference: str) -> None:
    series = load_series([get_testdata_file(compressed)])
    expected = load_series([get_testdata_file(reference)])
    np.testing.assert_array_equal(series.array, expected.array)
    np.testing.assert_allclose(series.affine, expected.affine)


def test_single_slice_geometry_matches_simpleitk() -> None:
    """One slice: in-plane axes and origin as SimpleITK; third axis SpacingBetweenSlices/SliceThickness."""
    for name in ("CT_small.dcm", "MR_small.dcm", "693_J2KI.dcm"):
        path = get_testdata_file(name)
        series = load_series([path])
        affine, array = sitk_reference(files=[Path(path)])
        assert series.array.shape[-1] == 1
        np.testing.assert_allclose(series.affine[:, [0, 1, 3]], affine[:, [0, 1, 3]], atol=1e-6)
        np.testing.assert_array_equal(series.array[0], array)
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    assert "SpacingBetweenSlices" not in ds  # SimpleITK uses 1 mm here; the slab thickness is more honest
    assert load_series([get_testdata_file("MR_small.dcm")]).affine[2, 2] == pytest.approx(float(ds.SliceThickness))


@pytest.mark.parametrize(
    "name",
    ["SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_small_odd.dcm"],
)
def test_rgb_secondary_capture(name: str) -> None:
    series = load_series([get_testdata_file(name)])
    affine, array = sitk_reference(files=[Path(get_testdata_file(name))])
    assert series.is_rgb and series.array.shape[0] == 3
    np.testing.assert_allclose(series.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(series.array.transpose(1, 2, 3, 0), array)
    if name.startswith("SC_rgb_rle"):  # the SC_rgb test image: red band on top, YBR versions are lossy
        np.testing.assert_array_equal(series.array[:, 0, 0, 0], [255, 0, 0])


def test_rgb_multiframe_and_palette() -> None:
    frames = load_series([get_testdata_file("SC_rgb_rle_2frame.dcm")])
    assert frames.array.shape == (3, 100, 100, 2) and frames.slice_sources == [(0, 0), (0, 1)]
    cine = load_series([get_testdata_file("examples_ybr_color.dcm")])  # ultrasound cine, JPEG YBR
    assert cine.array.shape == (3, 320, 240, 30) and cine.is_rgb
    palette = load_series([get_testdata_file("examples_palette.dcm")])
    assert palette.is_rgb and palette.array.shape == (3, 800, 350, 1)
    assert any("PixelSpacing" in w for w in palette.warnings)


def test_non_image_objects_are_skipped(tmp_path: Path) -> None:
    for name in ("test-SR.dcm", "rtstruct.dcm", "liver_1frame.dcm", "CT_small.dcm"):
        shutil.copy(get_testdata_file(name), tmp_path / name)
    (tmp_path / "notes.txt").write_text("not dicom")
    refs, skipped = find_dicom_series(tmp_path)
    assert [r.files for r in refs] == [[tmp_path / "CT_small.dcm"]]
    messages = "\n".join(skipped)
    for name, why in [
        ("test-SR.dcm", "modality SR"),
        ("rtstruct.dcm", "modality RTSTRUCT"),  # a bare dataset without file meta
        ("liver_1frame.dcm", "modality SEG"),
        ("notes.txt", "not a readable DICOM"),
    ]:
        assert f"{tmp_path / name}: skipped" in messages and why in messages
    with pytest.raises(DicomSeriesError, match="SR"):
        load_series([tmp_path / "test-SR.dcm"])


# -------------------------------------------------------------------------------------- synthesised MR


@pytest.mark.parametrize(
    "row_dir, col_dir",
    [
        ((1, 0, 0), (0, 1, 0)),  # axial
        ((0, 1, 0), (0, 0, -1)),  # sagittal
        ((1, 0, 0), (0, 0, -1)),  # coronal
        ((0.8, 0.6, 0.0), (-0.36, 0.48, -0.8)),  # double oblique
    ],
)
def test_synthesised_orientations_match_source_and_simpleitk(
    tmp_path: Path, hippo: np.ndarray, row_dir: tuple, col_dir: tuple
) -> None:
    synth = SynthSeries(
        hippo * 3.0 - 50.0,
        row_dir=row_dir,
        col_dir=col_dir,
        pixel_spacing=(0.9, 1.2),
        slice_spacing=1.5,
        origin=(12.5, -30.25, 41.0),
        slope=0.5,
        intercept=-50.0,
    )
    paths = write_series(synth, tmp_path / "s", seed=1)
    refs, skipped = find_dicom_series(tmp_path / "s")
    assert len(refs) == 1 and skipped == []
    series = load_series(refs[0])
    assert series.files == paths  # sorted by position, not by (random) name or (reversed) InstanceNumber
    np.testing.assert_array_equal(series.array[0], hippo * 3.0 - 50.0)
    np.testing.assert_allclose(series.affine, ras_affine(synth), atol=1e-6)
    affine, array = sitk_reference(folder=tmp_path / "s")
    np.testing.assert_allclose(series.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(series.array[0], array)


def test_synthesised_missing_slice_is_refused(tmp_path: Path, hippo: np.ndarray) -> None:
    paths = write_series(SynthSeries(hippo, slice_spacing=2.0), tmp_path, skip=[10])
    with pytest.raises(DicomSeriesError, match="missing slices") as error:
        load_series(paths)
    assert str(paths[9]) in str(error.value) and str(paths[10]) in str(error.value)


def test_small_position_rounding_is_tolerated(tmp_path: Path, hippo: np.ndarray) -> None:
    synth = SynthSeries(hippo[:, :, :5], slice_spacing=3.0)
    paths = write_series(synth, tmp_path)
    ds = pydicom.dcmread(paths[2])
    ds.ImagePositionPatient = [0, 0, 6.004]  # 4 micrometres off
    ds.save_as(paths[2])
    np.testing.assert_allclose(load_series(paths).affine, ras_affine(synth), atol=1e-9)


def test_synthesised_duplicate_position(tmp_path: Path, hippo: np.ndarray) -> None:
    synth = SynthSeries(hippo[:, :, :4])
    paths = write_series(synth, tmp_path)
    duplicate = tmp_path / "copy.dcm"
    ds = slice_dataset(synth, 2, synth.stored())
    ds.save_as(duplicate, enforce_file_format=True)
    with pytest.raises(DicomSeriesError, match="duplicate slice positions") as error:
        load_series([*paths, duplicate])
    assert str(duplicate) in str(error.value) and str(paths[2]) in str(error.value)


def test_synthesised_mixed_rows(tmp_path: Path, hippo: np.ndarray) -> None:
    synth = SynthSeries(hippo[:, :, :3])
    paths = write_series(synth, tmp_path / "a")
    other = SynthSeries(hippo[:, :20, 3:4], study_uid=synth.study_uid, series_uid=synth.series_uid)
    odd = write_series(other, tmp_path / "b", seed=7)
    refs, _ = find_dicom_series(tmp_path)
    with pytest.raises(DicomSeriesError, match="mixed image sizes") as error:
        load_series(refs[0])
    assert str(odd[0]) in str(error.value) and str(paths[0]) in str(error.value)


def test_unreadable_pixel_data_names_file(tmp_path: Path, hippo: np.ndarray) -> None:
    paths = write_series(SynthSeries(hippo[:, :, :3]), tmp_path)
    ds = pydicom.dcmread(paths[1])
    ds.PixelData = ds.PixelData[:100]  # truncated
    ds.save_as(paths[1])
    with pytest.raises(DicomSeriesError, match="cannot decode") as error:
        load_series(paths)
    assert str(paths[1]) in str(error.value)


def test_folder_with_sr_and_junk_and_two_series(tmp_path: Path, hippo: np.ndarray) -> None:
    first = SynthSeries(hippo[:, :, :6], series_number=2, description="T1")
    second = SynthSeries(hippo[:, :, 6:8], study_uid=first.study_uid, series_number=5, description="T2")
    write_series(first, tmp_path / "x" / "one")
    write_series(second, tmp_path / "x" / "two")
    shutil.copy(get_testdata_file("test-SR.dcm"), tmp_path / "x" / "report.dcm")
    (tmp_path / "x" / "thumbs.db").write_bytes(b"\x00\x01junk")
    refs, skipped = find_dicom_series(tmp_path)
    assert [(r.series_uid, len(r.files)) for r in refs] == [(first.series_uid, 6), (second.series_uid, 2)]
    assert refs[0].name == "SYN-001 20240517 T1/2"
    assert len(skipped) == 2 and any("report.dcm" in m for m in skipped) and any("thumbs.db" in m for m in skipped)
    with pytest.raises(DicomSeriesError, match="several series"):
        load_series([*refs[0].files, *refs[1].files])


def test_single_slice_series(tmp_path: Path, hippo: np.ndarray) -> None:
    synth = SynthSeries(hippo[:, :, 17:18], slice_spacing=2.5, origin=(1, 2, 3))
    series = load_series(write_series(synth, tmp_path))
    assert series.array.shape == (1, 35, 51, 1)
    np.testing.assert_allclose(series.affine, ras_affine(synth))  # SliceThickness (2.5) as third spacing


def test_enhanced_multiframe_equals_classic(tmp_path: Path, hippo: np.ndarray) -> None:
    """Legacy-converted enhanced MR (per-frame functional groups) reads like its single-frame source."""
    synth = SynthSeries(hippo, row_dir=(0, 1, 0), col_dir=(0, 0, -1), pixel_spacing=(1.1, 0.7), slope=2.0)
    paths = write_series(synth, tmp_path / "classic")
    classic = load_series(paths)
    enhanced_path = tmp_path / "enhanced.dcm"
    hd.legacy.LegacyConvertedEnhancedMRImage(
        [pydicom.dcmread(p) for p in paths],
        series_instance_uid=hd.UID(),
        series_number=9,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    ).save_as(enhanced_path)
    enhanced = load_series([enhanced_path])
    assert "PerFrameFunctionalGroupsSequence" in enhanced.datasets[0]
    np.testing.assert_array_equal(enhanced.array, classic.array)
    np.testing.assert_allclose(enhanced.affine, classic.affine, atol=1e-6)
    assert len({index for index, _ in enhanced.slice_sources}) == 1


def test_series_ref_is_lazy(tmp_path: Path, hippo: np.ndarray) -> None:
    write_series(SynthSeries(hippo[:, :, :3]), tmp_path)
    refs, _ = find_dicom_series(tmp_path)
    assert isinstance(refs[0], SeriesRef) and not hasattr(refs[0], "array")
    assert load_series(refs[0].files).series_uid == refs[0].series_uid


def _raw_header(keyword: str, raw: bytes) -> Dataset:
    """A header holding ``raw`` as the stored bytes of ``keyword`` (DS), not yet converted by pydicom."""
    ds = Dataset()
    tag = pydicom.datadict.tag_for_keyword(keyword)
    ds[tag] = RawDataElement(Tag(tag), "DS", len(raw), raw, 0, False, True)
    return ds


@pytest.mark.parametrize(
    "keyword, raw, count, expected",
    [
        ("PixelSpacing", b"0.810547,0.810547 ", 2, [0.810547, 0.810547]),  # comma as the delimiter
        ("PixelSpacing", b"0,810547\\0,810547 ", 2, [0.810547, 0.810547]),  # decimal comma
        ("ImagerPixelSpacing", b"0,2\\0,2", 2, [0.2, 0.2]),
        ("ImagePositionPatient", b"-12,5\\3,25\\100 ", 3, [-12.5, 3.25, 100.0]),
        ("ImagePositionPatient", b"-12.5,3.25,100 ", 3, [-12.5, 3.25, 100.0]),
        ("ImageOrientationPatient", b"1,0,0,0,0,-1", 6, [1, 0, 0, 0, 0, -1]),
        ("SliceThickness", b"2,5 ", 1, [2.5]),
        ("SpacingBetweenSlices", b"3,0 ", 1, [3.0]),
        ("RescaleSlope", b"1,5 ", 1, [1.5]),
        ("RescaleIntercept", b"-1024", 1, [-1024.0]),  # conformant: no note, value untouched
    ],
)
def test_comma_written_geometry_numbers_are_read(keyword: str, raw: bytes, count: int, expected: list) -> None:
    """Every geometry number the reader parses accepts what GDCM accepts, notes it and stores the fixed value."""
    ds = _raw_header(keyword, raw)
    notes = _Notes()
    np.testing.assert_allclose(_numbers(ds, keyword, count, Path("IM1.dcm"), notes), expected)
    if b"," in raw:
        assert notes.lines() and keyword in notes.lines()[0] and "IM1.dcm" in notes.lines()[0]
        value = ds[keyword].value
        np.testing.assert_allclose([float(v) for v in (value if count > 1 else [value])], expected)
    else:
        assert notes.lines() == []


@pytest.mark.parametrize(
    "keyword, raw, count",
    [
        ("PixelSpacing", b"0.81;0.81", 2),
        ("PixelSpacing", b"0,81,0,81", 2),  # both a decimal comma and a comma delimiter: ambiguous
        ("ImagePositionPatient", b"1\\2", 3),
        ("ImageOrientationPatient", b"1\\0\\0\\0\\nan\\0", 6),
        ("SliceThickness", b"thick", 1),
    ],
)
def test_unparseable_geometry_number_names_file_attribute_and_value(keyword: str, raw: bytes, count: int) -> None:
    with pytest.raises(DicomSeriesError) as error:
        _numbers(_raw_header(keyword, raw), keyword, count, Path("/data/IM7.dcm"))
    assert str(error.value).startswith(f"/data/IM7.dcm: {keyword} {raw.decode()!r} is not {count} decimal number")


def test_series_split_by_orientation_loads_each_plane(tmp_path: Path, hippo: np.ndarray) -> None:
    """A tri-plane localizer (one SeriesInstanceUID, three orientations): one SeriesRef per plane, named by
    plane, each loading to its own exact geometry; files handed in together stay one (refused) series."""
    common = {"series_uid": pydicom.uid.generate_uid(), "study_uid": pydicom.uid.generate_uid()}
    planes = {
        "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
        "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
        "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    }
    synth = {p: SynthSeries(hippo[:, :, :3], row_dir=r, col_dir=c, **common) for p, (r, c) in planes.items()}
    for n, series in enumerate(synth.values()):
        write_series(series, tmp_path / "loc", seed=n)
    refs, notes = find_dicom_series(tmp_path)
    assert [ref.part for ref in refs] == ["axial", "coronal", "sagittal"]
    assert notes == [f"{tmp_path / 'loc'}: series {common['series_uid']} holds images in 3 orientations "
                     "(a localizer): split into axial, coronal, sagittal cases"]  # fmt: skip
    for ref in refs:
        series = load_series(ref)
        np.testing.assert_allclose(series.affine, ras_affine(synth[ref.part]), atol=1e-5)
        assert ref.part in series.name and any("several orientations" in w for w in series.warnings)
    with pytest.raises(DicomSeriesError, match="differing ImageOrientationPatient"):
        load_series([f for ref in refs for f in ref.files])


@pytest.mark.skipif(not CT3.is_dir(), reason=f"sample series {CT3} not found")
def test_cut_dicom_copy_is_a_note_not_a_crash(tmp_path, hippo_model, capsys):
    """A copy of a slice cut mid-header (pydicom raises struct.error / BytesLengthException) is skipped with a
    note naming it; the real CT series beside it is still segmented."""
    from doubleunet_segment.cli import main
    from doubleunet_segment.data.cases import discover

    folder = shutil.copytree(CT3, tmp_path / "in")
    first = sorted(CT3.iterdir())[0].read_bytes()
    (folder / "cut152.dcm").write_bytes(first[:152])
    (folder / "cut142.dcm").write_bytes(first[:142])
    refs, notes = find_dicom_series(folder)
    assert len(refs) == 1 and len(refs[0].files) == 3
    for name in ("cut152.dcm", "cut142.dcm"):
        assert any(name in note and "skipped" in note for note in notes), notes
    out = tmp_path / "out"
    code = main([str(folder), "-o", str(out), "--model", str(hippo_model), "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err and "1 of 1 case(s) segmented, 0 failed" in err
    (case,) = [p for p in out.iterdir() if p.is_dir()]
    assert any(case.iterdir())
    _, notes = discover([str(folder)])  # the CLI reports these notes
    assert [n for n in notes if "cut152.dcm" in n] and [n for n in notes if "cut142.dcm" in n]
