"""What the user pointed at, as cases to segment: folders (DICOM series, images and volumes), volume files, 2D images.

A case is named and listed before any pixels are read, so a batch can report every case and fail
one without losing the others; ``load()`` reads it into the engine's (C, X, Y, Z) + RAS affine form
(the readers live in :mod:`.image_io` and :mod:`.dicom_io`).

Case names (the output folders' names) are unique and stable: they depend only on the set of inputs,
never on the order they were given in. See :func:`discover` for the rule.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .datalist import IMAGE_SUFFIXES, VOLUME_SUFFIXES
from .dicom_io import SeriesRef, find_dicom_series, load_series
from .image_io import Volume, read_image_2d, read_volume_file

__all__ = ["VOLUME_SUFFIXES", "Case", "discover", "safe_name"]


# In a folder, files that are plainly not images are passed over without a note: documentation, metadata,
# checksums, and the .raw/.zraw pixel files that belong to an .mhd header.
_QUIET_SUFFIXES = (
    ".txt", ".json", ".csv", ".tsv", ".md", ".rst", ".xml", ".html", ".htm", ".pdf", ".py", ".ipynb",
    ".yaml", ".yml", ".toml", ".ini", ".cfg", ".log", ".sha256", ".md5", ".raw", ".zraw", ".db",
)  # fmt: skip
_QUIET_FOLDERS = ("__MACOSX",)  # resource forks left by macOS zip archives


@dataclass
class Case:
    """One thing to segment, named before any pixels are read.

    Attributes:
        name: unique and file-system safe: the output folder's name.
        source: what the user gave (the file, or the folder of a DICOM series), for messages.
        kind: ``dicom``, ``volume`` or ``image``.
        load: reads the case into a :class:`Volume`.
        study: the DICOM StudyInstanceUID, or empty.
        series: the DICOM SeriesInstanceUID, or empty.
    """

    name: str  # unique, file-system safe: the output folder's name
    source: str  # what the user gave, for messages
    kind: str  # "dicom", "volume" or "image"
    load: Callable[[], Volume]
    study: str = ""
    series: str = ""


@dataclass
class _Named:
    """A case with what naming it needs: its natural name, where it lies, and tie-breakers."""

    case: Case
    natural: str  # the name it gets when no other input has the same one
    parents: tuple[str, ...]  # its folder's path components, nearest first
    order: tuple[str, ...]  # a stable sort key (absolute path, series UID, ...)
    identity: tuple = ()  # equal for the same file or series reached through two inputs
    tag: str = ""  # a short identifier for side-by-side cases (DICOM series UID tail)


def safe_name(text: str) -> str:
    """``text`` with every run of characters other than letters, digits, ``.``, ``_``, ``-`` as ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "case"


def _dicom_volume(ref: SeriesRef) -> Callable[[], Volume]:
    def load() -> Volume:
        series = load_series(ref)
        is_2d = series.is_rgb and series.array.shape[-1] == 1
        return Volume(series.array, series.affine, is_2d_image=is_2d, series=series, warnings=series.warnings)

    return load


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.name.lower().endswith(suffixes)


def _parents(folder: Path) -> tuple[str, ...]:
    """``folder``'s components from the nearest up, without the root (absolute, ``..`` resolved, links kept)."""
    absolute = Path(os.path.abspath(folder))
    return tuple(reversed(absolute.parts[1:] if absolute.anchor else absolute.parts))


def _file_case(path: Path) -> _Named:
    """A volume or 2D image file as a case named after the file (without its suffix)."""
    if _has_suffix(path, VOLUME_SUFFIXES):
        stem = next(path.name[: -len(x)] for x in VOLUME_SUFFIXES if path.name.lower().endswith(x))
        case = Case(safe_name(stem), str(path), "volume", lambda p=path: read_volume_file(p))
    else:
        case = Case(safe_name(path.stem), str(path), "image", lambda p=path: read_image_2d(p))
    return _Named(case, case.name, _parents(path.parent), (os.path.abspath(path),), ("file", os.path.realpath(path)))


def _dicom_case(ref: SeriesRef, folder: Path) -> _Named:
    """A DICOM series as a case named ``<PatientID or folder>_<SeriesNumber or UID tail>_<description>``."""
    label = f"{ref.patient_id or folder.name}_{ref.series_number or ref.series_uid[-8:]}_{ref.description}"
    if ref.part:  # one orientation of a split localizer: "..._axial", "..._sagittal"
        label += f"_{ref.part}"
    case = Case(safe_name(label), str(folder), "dicom", _dicom_volume(ref), ref.study_uid, ref.series_uid)
    files = [os.path.abspath(p) for p in ref.files]
    where = Path(os.path.commonpath(files)) if files else folder
    where = where.parent if where.is_file() else where
    order = (str(where), ref.study_uid, ref.series_uid, *files)
    # every field, not just the UIDs: one series may be split into several volumes (e.g. tri-plane localizers)
    fields = tuple((f.name, repr(getattr(ref, f.name))) for f in dataclasses.fields(ref) if f.name != "files")
    identity = ("dicom", fields, tuple(os.path.realpath(p) for p in ref.files))
    return _Named(case, case.name, _parents(where), order, identity, safe_name(ref.series_uid[-8:]))


def _scan_folder(folder: Path) -> tuple[list[Path], list[Path], list[str]]:
    """Walk ``folder`` (sorted, recursively): (image/volume files, possible DICOM files, notes).

    Symlinked subfolders are followed (each real folder once, so link loops end). Hidden files and folders
    (``.name``), macOS ``__MACOSX`` folders and plainly non-image files (:data:`_QUIET_SUFFIXES`) are skipped
    quietly; anything that is not a regular file (FIFO, socket, device, broken link) with a note; Slicer
    ``.seg.nrrd`` files are segmentations, skipped with a note. Anything else may be DICOM (which often has
    no suffix): the DICOM scan decides.
    """
    files: list[Path] = []
    maybe_dicom: list[Path] = []
    notes: list[str] = []
    # Symlinked subfolders are followed (a study linked into a batch folder is meant to be segmented); each
    # real folder is walked once, so a link back up the tree (a loop) or two links to one folder do no harm.
    seen = {os.path.realpath(folder)}
    for root, dirs, names in os.walk(folder, followlinks=True):
        kept = []
        for d in sorted(dirs):
            if d.startswith(".") or d in _QUIET_FOLDERS:
                continue
            real = os.path.realpath(os.path.join(root, d))
            if real in seen:
                continue
            seen.add(real)
            kept.append(d)
        dirs[:] = kept
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith(".") or _has_suffix(path, _QUIET_SUFFIXES):
                continue
            if not path.is_file():  # a FIFO, socket, device or broken link: opening it could hang or fail
                notes.append(f"{path}: skipped, not a regular file")
                continue
            if _has_suffix(path, (".seg.nrrd",)):
                notes.append(f"{path}: skipped, a 3D Slicer segmentation, not an image")
            elif _has_suffix(path, VOLUME_SUFFIXES + IMAGE_SUFFIXES):
                files.append(path)
            else:
                maybe_dicom.append(path)
    return files, maybe_dicom, notes


def _distinguish(group: list[_Named], taken: set[str]) -> list[str]:
    """Names for cases sharing one natural name: the shortest parent-folder suffix that tells them apart.

    ``k`` = 1, 2, ... nearest folders are prefixed (``a/scan``, ``b/scan`` -> ``a_scan``, ``b_scan``) until
    the names differ (ignoring letter case) and none is in ``taken``. Cases in the same folder are told
    apart by their tag (series UID tail), else numbered ``_1``, ``_2``, ... in ``order``.
    """
    for k in range(1, max(len(e.parents) for e in group) + 1):
        names = [safe_name("_".join([*reversed(e.parents[:k]), e.natural])) for e in group]
        folded = [n.casefold() for n in names]
        if len(set(folded)) == len(folded) and not taken.intersection(folded):
            return names
    names = [safe_name(f"{e.natural}_{e.tag}") for e in group]
    folded = [n.casefold() for n in names]
    if all(e.tag for e in group) and len(set(folded)) == len(folded) and not taken.intersection(folded):
        return names
    names, number = [], 0
    for e in group:
        number += 1
        while f"{e.natural}_{number}".casefold() in taken:
            number += 1
        names.append(f"{e.natural}_{number}")
    return names


def _assign_names(entries: list[_Named]) -> None:
    """Give every case its final, unique name (see :func:`discover`); depends on the set, not the order."""
    groups: dict[str, list[_Named]] = defaultdict(list)
    for entry in entries:
        groups[entry.natural.casefold()].append(entry)
    taken = set(groups)  # every natural name: a generated name must never be another input's natural name
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda e: e.order)
        if len(group) == 1:
            group[0].case.name = group[0].natural
            continue
        for entry, name in zip(group, _distinguish(group, taken)):
            entry.case.name = name
            taken.add(name.casefold())


def discover(inputs: list[str]) -> tuple[list[Case], list[str]]:
    """Expand the command line's inputs into named cases; returns (cases, notes about skipped files).

    A folder is a batch, searched recursively (as nnU-Net's ``predict -i FOLDER``): every DICOM image
    series in it is a case, and so is every volume (:data:`VOLUME_SUFFIXES`) and 2D image
    (PNG/JPEG/BMP/TIFF) file; DICOM series and files may be mixed. Files that are none of these are skipped
    with a note; hidden files and plainly non-image files (``.txt``, ``.json``, ...) quietly. Nothing is
    read beyond the DICOM headers. A file or series reached twice (a folder and its subfolder) is one case.

    Naming: a file's case is named after the file without its suffix (``scan.nii.gz`` -> ``scan``), a
    DICOM series ``<PatientID or input folder>_<SeriesNumber>_<SeriesDescription>``, made file-system safe.
    Cases whose names coincide (ignoring letter case, as macOS and Windows do) are all prefixed with the
    fewest nearest parent folders that tell them apart: ``a/scan.nii.gz`` and ``b/scan.nii.gz`` become
    ``a_scan`` and ``b_scan``. A generated name never equals another input's own name (a third input
    ``c/scan_2.nii.gz`` keeps ``scan_2``); cases in the same folder (DICOM series side by side) get their
    series UID's last 8 characters, failing that ``_1``, ``_2``, ... in path order. Names depend only on
    the set of inputs (absolute paths), not on their order; inputs that collide with nothing keep the
    names they have always had.

    Args:
        inputs: folders, volume files (:data:`VOLUME_SUFFIXES`) or 2D images.

    Raises:
        FileNotFoundError: an input does not exist, or a folder holds no DICOM series, volume or image.
        ValueError: a file is neither a volume nor a 2D image.
    """
    entries: list[_Named] = []
    notes: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files, maybe_dicom, skipped = _scan_folder(path)
            refs, not_dicom = find_dicom_series(path, maybe_dicom) if maybe_dicom else ([], [])
            notes += skipped + not_dicom
            if not refs and not files:
                raise FileNotFoundError(f"{path}: no DICOM series, volumes or 2D images found in this folder")
            entries += [_dicom_case(ref, path) for ref in refs]
            entries += [_file_case(file) for file in files]
        elif path.is_file() and _has_suffix(path, VOLUME_SUFFIXES + IMAGE_SUFFIXES):
            entries.append(_file_case(path))
        elif path.is_file():
            raise ValueError(f"{path}: not a DICOM folder, volume ({', '.join(VOLUME_SUFFIXES)}) or 2D image")
        else:
            raise FileNotFoundError(f"input not found: {path}")
    unique: dict[tuple, _Named] = {}  # the same file or series reached twice (``a`` and ``a/sub``) is one case
    for entry in entries:
        if entry.identity in unique:
            notes.append(f"{entry.case.source}: {entry.natural} reached more than once, segmented once")
        else:
            unique[entry.identity] = entry
    _assign_names(list(unique.values()))
    return [entry.case for entry in unique.values()], notes
