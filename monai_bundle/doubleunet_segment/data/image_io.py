"""Readers for single files: 2D images (PNG/JPEG/BMP/TIFF) and volumes (NIfTI, NRRD, MHA/MHD).

Both return a :class:`Volume` in the engine's ``(C, X, Y, Z)`` + RAS affine form. A file that is truncated,
corrupt or promises more pixel data than it holds fails with a ``ValueError`` naming the file and the reason
before anything is written, whichever library noticed it (PIL, nibabel, gzip/zlib, SimpleITK).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageFile, ImageOps

from .dicom_io import lps_to_ras
from .nifti_io import read_nifti

if TYPE_CHECKING:
    from .dicom_io import DicomSeries

__all__ = ["Volume", "read_image_2d", "read_volume_file"]


@dataclass
class Volume:
    """A loaded case: pixels, geometry, and the DICOM series it came from (for DICOM SEG output).

    Attributes:
        array: (C, X, Y, Z) float32 in the input's units (HU for CT); a 2D image is (C, X, Y, 1) with X
            along its columns.
        affine: 4x4 voxel index -> RAS mm (identity for PNG/JPEG-like images, the file's geometry for a 2D
            NRRD/MHA/NIfTI).
        is_2d_image: a single 2D image (PNG/JPEG, a one-frame RGB DICOM, or a NRRD/MHA/NIfTI with a 2D
            header or one slice): segmented as an image, written as ``mask.png`` + ``overlay.png``.
        series: the DICOM series, for DICOM input.
        warnings: things about the input a person should know (e.g. uneven slice spacing).
    """

    array: np.ndarray  # (C, X, Y, Z) float32
    affine: np.ndarray  # 4x4 voxel -> RAS mm
    is_2d_image: bool = False
    series: DicomSeries | None = None
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ 2D images

# PIL's switch is module-global; the prefetch thread and the main thread may both read images.
_PIL_FLAG_LOCK = threading.Lock()


def _load_strictly(img: Image.Image) -> None:
    """Decode ``img``, refusing a truncated file even where some library set ``LOAD_TRUNCATED_IMAGES``.

    With that flag PIL pads the missing part grey and says nothing; a segmentation of half an image must
    not pass for a result.
    """
    with _PIL_FLAG_LOCK:
        saved = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            img.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved


def read_image_2d(path: Path) -> Volume:
    """A PNG/JPEG/BMP/TIFF as (C, X, Y, 1) float32 with X along image columns, as MONAI's PIL reader lays it out.

    The image is turned upright by its EXIF/TIFF Orientation tag first (as viewers show it), so masks and
    overlays line up with what a person sees. Single-band grey images (modes L, I;16*, I, F) keep one
    channel and their values, everything else becomes RGB (C = 3). Of a multi-page TIFF or an animated
    PNG/GIF only the first frame is read, with a warning in :attr:`Volume.warnings`. The affine is the
    identity (pixels, no geometry).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable image, or is truncated or corrupt; the message names the
            file and the reason.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            frames = int(getattr(img, "n_frames", 1) or 1)
            _load_strictly(img)
            upright = ImageOps.exif_transpose(img)  # a copy, turned as the Orientation tag says
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: image too large to read safely ({err})") from err
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError) as err:
        # PIL reports truncation as OSError, broken PNG chunks as SyntaxError, bad TIFF tags as
        # ValueError/IndexError/KeyError; all of them mean the same to a user.
        raise ValueError(f"{path}: unreadable image file, truncated or corrupt? ({_one_line(err)})") from err
    with upright:
        # Single-band grey modes keep their values: convert("RGB") would clip 16-bit (any byte order), 32-bit
        # and float pixels to 0/255 (an all-white or all-black image).
        keep = upright.mode in ("L", "I", "F") or upright.mode.startswith("I;16")
        rgb = np.asarray(upright if keep else upright.convert("RGB"), dtype=np.float32)
    array = rgb[None] if rgb.ndim == 2 else np.moveaxis(rgb, -1, 0)
    warnings = [f"{path}: {frames} frames/pages: only the first is segmented"] if frames > 1 else []
    volume = np.ascontiguousarray(np.swapaxes(array, 1, 2)[..., None])
    return Volume(volume, np.eye(4), is_2d_image=True, warnings=warnings)


# -------------------------------------------------------------------------------------------------- volumes

_METAIO_TYPES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


def _check_metaimage_size(path: Path) -> None:
    """Compare an uncompressed MHA/MHD's promised pixel bytes with what its data file holds.

    ITK notices a short file too, but reports it as "No such file or directory" (and prints to stderr);
    this says what is wrong. Compressed or unusual headers are left to ITK.

    Raises:
        ValueError: the header promises more bytes than the data file holds.
    """
    with open(path, "rb") as f:
        head = f.read(65536)
    fields: dict[str, str] = {}
    header_end = 0
    for line in head.split(b"\n"):
        header_end += len(line) + 1
        key, sep, value = line.decode("latin-1").partition("=")
        if not sep:
            return  # not a plain MetaImage header: let ITK decide
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    else:
        return
    if fields.get("CompressedData", "False").lower() == "true" or fields.get("ElementType") not in _METAIO_TYPES:
        return
    try:
        count = int(np.prod([int(v) for v in fields["DimSize"].split()]))
        count *= int(fields.get("ElementNumberOfChannels", "1"))
    except (KeyError, ValueError):
        return
    expected = count * _METAIO_TYPES[fields["ElementType"]]
    data_file = fields["ElementDataFile"]
    if data_file == "LOCAL":
        held = path.stat().st_size - header_end
    elif re.fullmatch(r"[^%*?]+", data_file) and (path.parent / data_file).is_file():
        held = (path.parent / data_file).stat().st_size  # one .raw file; lists and patterns are left to ITK
    else:
        return
    if held < expected:
        raise ValueError(
            f"{path}: truncated or corrupt: the header promises {expected} bytes of pixel data, "
            f"the file holds {max(held, 0)}"
        )


def _itk_reason(err: RuntimeError) -> str:
    """The informative last line of a SimpleITK/ITK exception (its first lines are source-file locations)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    last = lines[-1] if lines else str(err)
    last = re.sub(r"^\[\w+\]\s*", "", last)  # teem's "[nrrd] " prefix
    last = re.sub(r"^_?\w+:\s*", "", last) if last.startswith("_") else last  # teem's function name
    if "No such file or directory" in last:  # MetaIO's stale errno after a short read
        return "pixel data could not be read completely"
    return last


def _read_with_sitk(path: Path) -> Volume:
    """NRRD/MHA/MHD through SimpleITK; a 2D image (or one slice) comes back as a 2D image with its geometry."""
    kind = "MetaImage" if path.name.lower().endswith((".mha", ".mhd")) else "NRRD"
    if kind == "MetaImage":
        _check_metaimage_size(path)
    try:
        image = sitk.ReadImage(str(path))
        data = sitk.GetArrayFromImage(image).astype(np.float32)  # (Z, Y, X[, C]) or (Y, X[, C])
    except RuntimeError as err:
        raise ValueError(f"{path}: unreadable {kind} file, truncated or corrupt? ({_itk_reason(err)})") from err
    dim = image.GetDimension()
    if dim not in (2, 3):
        raise ValueError(f"{path}: {dim}D {kind} images are not supported (2D images and 3D volumes are)")
    vector = image.GetNumberOfComponentsPerPixel() > 1
    if dim == 2:
        data = data[None]  # one slice: (1, Y, X[, C])
    array = np.moveaxis(data, -1, 0).transpose(0, 3, 2, 1) if vector else data.transpose(2, 1, 0)[None]
    # a 2D header has 2x2 geometry: embed it as the z = 0 plane with 1 mm along z
    direction, spacing, origin = np.eye(3), np.ones(3), np.zeros(3)
    direction[:dim, :dim] = np.array(image.GetDirection()).reshape(dim, dim)
    spacing[:dim] = image.GetSpacing()
    origin[:dim] = image.GetOrigin()
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing
    lps[:3, 3] = origin
    return Volume(np.ascontiguousarray(array), lps_to_ras(lps), is_2d_image=array.shape[3] == 1)


def read_volume_file(path: Path) -> Volume:
    """NIfTI and FreeSurfer MGH/MGZ through nibabel (exact affine); NRRD/MHA/MHD through SimpleITK, converted
    from LPS to RAS.

    A file holding a 2D image (a 2D header, or a single slice along Z) is returned as a 2D image
    (``is_2d_image``, array (C, X, Y, 1)) that keeps the file's geometry, so it is segmented and written
    like a PNG while ``segmentation.nii.gz`` still lies on the input.

    Returns:
        The volume, array (C, X, Y, Z) float32 and affine voxel -> RAS mm.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is unreadable, truncated or corrupt, or has an unsupported number of
            dimensions; the message names the file and the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path}")
    if path.name.lower().endswith((".nii", ".nii.gz", ".mgz", ".mgh")):
        array, affine = read_nifti(path)
        return Volume(array, affine, is_2d_image=array.shape[3] == 1)
    return _read_with_sitk(path)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
