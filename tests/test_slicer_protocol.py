"""The engine and the Slicer extension agree across the process boundary: events, fields, request keys, names.

The extension cannot import the engine's protocol in Slicer's own process (see ``DoubleUNetSegmentLib/events.py``),
so it mirrors the table; these tests hold the mirror to the engine's definition, check that the engine's emitters
refuse anything the protocol does not define, and that twin concepts carry one name and one set of fields. That
what a real CLI and worker print parses with those fields is checked where they run (test_slicer_engine.py), and
that the effect's requests use only the protocol's keys where a real worker answers them
(test_slicer_worker_session.py).
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from doubleunet_segment import catalog, paths, segments
from doubleunet_segment.inference import protocol
from doubleunet_segment.inference.progress import Reporter
from doubleunet_segment.inference.worker import RequestReporter
from DoubleUNetSegmentLib import bundle, segment_import
from DoubleUNetSegmentLib.events import EVENT_FIELDS, KNOWN_EVENTS, RunState, parse_line
from helpers import REPO

# a value of the documented type for every field the protocol defines
EXAMPLE = {
    "device": "cpu",
    "reason": "CPU requested",
    "message": "a note",
    "case": "case",
    "total": 4,
    "done": 2,
    "seconds": 1.5,
    "outputs": {"segments": "out/case/segments.json"},
    "model": "polyp",
    "slice_axis": 2,
    "threshold": 0.5,
    "segments": [],
    "id": "1",
}


def test_slicer_mirror_equals_the_engine_protocol() -> None:
    assert KNOWN_EVENTS == set(protocol.EVENTS)
    assert EVENT_FIELDS == {name: (spec.required, spec.optional) for name, spec in protocol.EVENTS.items()}
    for name, spec in protocol.EVENTS.items():
        assert getattr(protocol, name.upper()) == name  # each kind has its constant, spelt as it is sent
        minimal = {protocol.EVENT_KEY: name, **{f: EXAMPLE[f] for f in spec.required}}
        assert parse_line(json.dumps(minimal)).kind == name
        RunState().apply(parse_line(json.dumps(minimal)))  # the Slicer side handles what the protocol requires


def test_protocol_imports_without_torch_or_numpy() -> None:
    probe = (
        "import sys; import doubleunet_segment.inference.protocol; "
        "print(sorted(m for m in ('torch', 'numpy', 'monai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_emitters_refuse_events_the_protocol_does_not_define(capsys) -> None:
    reporter = Reporter("json", 1)
    reporter.event(event=protocol.NOTE, message="fine", case="c")
    assert json.loads(capsys.readouterr().out) == {"event": "note", "message": "fine", "case": "c"}
    with pytest.raises(ValueError, match="unknown event"):
        reporter.event(event="warning", message="x")
    with pytest.raises(ValueError, match="lacks"):
        reporter.event(event=protocol.PROGRESS, case="c", done=1)
    with pytest.raises(ValueError, match="does not define"):
        reporter.event(event=protocol.DEVICE, device="cpu", reason="r", memory=3)
    stream = io.StringIO()
    RequestReporter("7", stream).event(event=protocol.START, case="c", total=3)  # the worker tags its request
    assert json.loads(stream.getvalue()) == {"event": "start", "case": "c", "total": 3, "id": "7"}


def test_twin_concepts_carry_one_name_and_one_form() -> None:
    # SegmentInfo: the same fields, and segments.json read back exactly as the engine wrote it
    assert [f.name for f in dataclasses.fields(segment_import.SegmentInfo)] == [
        f.name for f in dataclasses.fields(segments.SegmentInfo)
    ]
    for info in segments.HIPPOCAMPUS_SEGMENTS + segments.HIPPOCAMPUS_LR_SEGMENTS + segments.POLYP_SEGMENTS:
        mirrored = segment_import.SegmentInfo.from_dict(info.to_dict())
        assert mirrored.to_dict() == info.to_dict()
        assert mirrored.slicer_color == tuple(c / 255 for c in info.color)
    # ModelSpec: a catalog entry; the Slicer side reads the fields it needs without torch
    assert {"name", "weights", "description"} <= {f.name for f in dataclasses.fields(bundle.ModelSpec)}
    assert {"name", "weights", "description"} <= {f.name for f in dataclasses.fields(catalog.ModelSpec)}
    default, specs = bundle.read_catalog(bundle.find_bundle_root(REPO / "DoubleUNetSegment"))
    engine = catalog.read_catalog()
    assert default == catalog.DEFAULT_MODEL and [s.name for s in specs] == list(engine)
    for spec in specs:
        assert spec.weights.resolve() == engine[spec.name].weights.resolve()
        assert spec.description == engine[spec.name].description
    # the environment variable that points both at the bundles, and where a model's spec lies in its bundle
    assert bundle.BUNDLES_ENV == paths.BUNDLES_ENV
    assert bundle.MODEL_SPEC == Path("models") / paths.MODEL_SPEC_NAME
    # keep_largest_components gives the engine's masks: test_slicer_lib.py compares the two on real shapes
