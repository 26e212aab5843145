"""Write structure volumes as a DICOM Comprehensive 3D SR holding a TID 1500 Measurement Report, with highdicom.

One TID 1411 Volumetric ROI measurement group per segment of the DICOM SEG written for the same label map
(:func:`doubleunet_segment.data.dicom_seg.write_dicom_seg`): the group references that SEG instance and segment
number and the source series (TID 1411 "Source series for segmentation"); its one measurement is the
structure's Volume ((118565006, SCT, "Volume"), PS3.16 CID 7469) in mL (UCUM ``ml``). The finding type is the
segment's type (Hippocampus) in its category (Anatomical Structure), and the finding site of an anatomical
structure is the structure itself with its laterality (CID 244 Left/Right) and the type modifier as topographical
modifier (CID 2 Anterior/Posterior). The observer is the algorithm, as a device. This is the layout dcmqi's
``tid1500writer`` writes and its ``tid1500reader`` (3D Slicer's Quantitative Reporting reader) reads back:
volumes, segment references, finding, finding site and laterality. The SR is complete (every measured segment
is in it), unverified and preliminary (no person has checked it). Output is written atomically.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from ..segments import ANATOMICAL_STRUCTURE, SegmentInfo
from .atomic import atomic_path
from .dicom_io import DicomSeries
from .dicom_seg import MANUFACTURER, _coded

if TYPE_CHECKING:  # the data layer does not import the reporting package at run time
    from ..reporting.volumetry import Volumetry

__all__ = ["write_volumetry_sr"]

MILLILITER = hd.sr.CodedConcept(value="ml", scheme_designator="UCUM", meaning="milliliter")
# PS3.16 CID 100 "Quantitative Diagnostic Imaging Procedures", by the source series' modality.
PROCEDURES = {"MR": codes.LN.MRIUnspecifiedBodyRegion, "CT": codes.LN.CTUnspecifiedBodyRegion}


def _group(
    info: SegmentInfo,
    number: int,
    ml: float,
    seg: pydicom.Dataset,
    source_series_uid: str,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """The TID 1411 group of one segment: its SEG reference, finding and Volume."""
    sites = None
    if info.category[:2] == ANATOMICAL_STRUCTURE[:2]:  # an anatomical structure is its own finding site
        sites = [
            hd.sr.FindingSite(
                anatomic_location=_coded(info.type),
                laterality=_coded(info.laterality) if info.laterality else None,
                topographical_modifier=_coded(info.type_modifier) if info.type_modifier else None,
            )
        ]
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=info.name),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.SOPClassUID),
            sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=number,
            source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid),
        ),
        finding_type=_coded(info.type),
        finding_category=_coded(info.category),
        finding_sites=sites,
        algorithm_id=algorithm,
        measurements=[hd.sr.Measurement(name=codes.SCT.Volume, value=ml, unit=MILLILITER)],
    )


def write_volumetry_sr(
    series: DicomSeries,
    seg_path: str | os.PathLike,
    labels_segments: Sequence[SegmentInfo],
    volumetry: Volumetry,
    path: str | os.PathLike,
    algorithm_version: str,
    *,
    algorithm_name: str = "DoubleU-Net",
    overwrite: bool = False,
) -> Path:
    """Write the volumes of ``volumetry`` as a Comprehensive 3D SR (TID 1500) referencing the SEG; return ``path``.

    The SR joins the source's patient and study (taken from the SEG, which carries them with every Type 2
    attribute present) in a new series numbered after the SEG's. A segment is found in the SEG by its label (the
    SEG renumbers segments); one the SEG left out, because nothing was segmented, has no group, since a TID 1411
    group must reference a region.

    Args:
        series: the source series the SEG was written for.
        seg_path: the DICOM SEG of the label map (from :func:`doubleunet_segment.data.dicom_seg.write_dicom_seg`).
        labels_segments: the label map's segment definitions, as given to the SEG writer.
        volumetry: the volumes (:func:`doubleunet_segment.reporting.volumetry.measure`) of the same label map.
        path: the ``.dcm`` file to write.
        algorithm_version: the algorithm's version, in the observer device and each group's algorithm.
        algorithm_name: the algorithm's name, likewise.
        overwrite: replace an existing file.

    Raises:
        ValueError: ``seg_path`` is not a SEG of ``series``' study, a segment has no volume in ``volumetry``, a
            segment with a volume is missing from the SEG, or no segment is in the SEG.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    seg = pydicom.dcmread(seg_path)
    if seg.get("Modality") != "SEG" or seg.StudyInstanceUID != series.study_uid:
        raise ValueError(f"{seg_path} is not a DICOM SEG of the study of series {series.series_uid}")
    numbers = {str(item.SegmentLabel): int(item.SegmentNumber) for item in seg.SegmentSequence}
    algorithm = hd.sr.AlgorithmIdentification(name=algorithm_name, version=algorithm_version)
    groups = []
    for info in labels_segments:
        if info.name not in volumetry.structures:
            raise ValueError(f"segment {info.name!r} has no volume in the volumetry")
        ml = volumetry.structures[info.name]
        if info.name not in numbers:
            if ml > 0:
                raise ValueError(f"segment {info.name!r} has {ml} mL but is not in the SEG {seg_path}")
            continue
        groups.append(_group(info, numbers[info.name], ml, seg, series.series_uid, algorithm))
    if not groups:
        raise ValueError(f"none of the segments is in the SEG {seg_path}")

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        # one UID per algorithm version, the same in every report it makes
        uid=generate_uid(entropy_srcs=[MANUFACTURER, algorithm_name, algorithm_version]),
        name=algorithm_name,
        manufacturer_name=MANUFACTURER,
        model_name=algorithm_version,
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=PROCEDURES.get(series.modality, codes.SCT.ImagingProcedure),
        imaging_measurements=groups,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Person Name.*")  # one-component names are legal
        sr = hd.sr.Comprehensive3DSR(
            evidence=[seg, *series.datasets],
            content=report,
            series_instance_uid=hd.UID(),
            series_number=int(seg.SeriesNumber) + 1,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=algorithm_name,
            software_versions=algorithm_version,
            is_complete=True,
            series_description=f"{algorithm_name} volumes"[:64],
        )
    with atomic_path(path, overwrite=overwrite) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return Path(path)
