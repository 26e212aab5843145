"""Segment definitions: names, label values and SNOMED codes agree with DICOM's code dictionary."""

from __future__ import annotations

import json

from doubleunet_segment.segments import HIPPOCAMPUS_SEGMENTS, POLYP_SEGMENTS, SegmentInfo
from pydicom.sr.codedict import codes


def test_segment_definitions_use_known_codes() -> None:
    assert codes.SCT.Hippocampus.value == "5366008"
    assert codes.SCT.PolypOfColon.value == POLYP_SEGMENTS[0].type[0]
    assert codes.SCT.AnatomicalStructure.value == HIPPOCAMPUS_SEGMENTS[0].category[0]
    assert codes.SCT.MorphologicallyAbnormalStructure.value == POLYP_SEGMENTS[0].category[0]
    assert codes.SCT.Anterior.value == HIPPOCAMPUS_SEGMENTS[0].type_modifier[0]
    assert codes.SCT.Posterior.value == HIPPOCAMPUS_SEGMENTS[1].type_modifier[0]
    assert [s.value for s in HIPPOCAMPUS_SEGMENTS] == [1, 2] and POLYP_SEGMENTS[0].value == 1
    for info in [*POLYP_SEGMENTS, *HIPPOCAMPUS_SEGMENTS]:
        assert SegmentInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
