"""The extension's engine path for real: the commands it builds run the real CLI and worker on a real volume.

A model with untrained weights (the shipped ones may not exist yet) segments three slices of a real MSD
hippocampus MR volume; the test reads the progress lines as the panel does and imports the result as the
effect does, checking geometry, names, colours and terminology against the engine's own writers.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from doubleunet_segment.data.nifti_io import write_seg_nrrd
from doubleunet_segment.inference import protocol
from doubleunet_segment.segments import HIPPOCAMPUS_SEGMENTS
from DoubleUNetSegmentLib.bundle import find_bundle_root
from DoubleUNetSegmentLib.commands import EngineOptions, cli_command, engine_environment, worker_command
from DoubleUNetSegmentLib.events import EVENT_FIELDS, Event, RunState, failure_message
from DoubleUNetSegmentLib.process import EngineProcess
from DoubleUNetSegmentLib.segment_import import labels_from_probabilities, plan_import, read_result
from helpers import DATA, REPO, needs_data

pytestmark = needs_data


def env() -> dict[str, str]:
    environment = engine_environment(find_bundle_root(REPO / "DoubleUNetSegment"))
    environment["OMP_NUM_THREADS"] = "2"
    return environment


def run_to_end(proc: EngineProcess, state: RunState, timeout: float = 120.0) -> list:
    events, deadline = [], time.monotonic() + timeout
    while not proc.finished():
        assert time.monotonic() < deadline, "engine did not finish"
        for event in proc.poll():
            state.apply(event)
            events.append(event)
        time.sleep(0.05)
    for event in proc.poll():
        state.apply(event)
        events.append(event)
    return events


def assert_protocol(events: list[Event]) -> None:
    """What a real engine printed parses on the Slicer side, each event with exactly the fields documented.

    The fields are checked against both definitions: the engine's (``protocol.check_event``) and the Slicer
    side's mirror (``EVENT_FIELDS``); a JSON line that is no known event would have become a log line.
    """
    for event in events:
        assert event.kind != "log" or not event.line.startswith("{"), f"not a protocol event: {event.line}"
        if event.kind == "log":
            continue
        protocol.check_event(event.data)
        required, optional = EVENT_FIELDS[event.kind]
        fields = set(event.data) - {"event"}
        assert set(required) <= fields <= {*required, *optional, "id"}, event.line


def test_panel_command_runs_the_real_cli_and_its_result_imports(
    hippo_model: Path, hippo_slab: Path, tmp_path: Path
) -> None:
    options = EngineOptions(model=str(hippo_model), device="cpu", batch_size=3, save_probabilities=True)
    command = cli_command(sys.executable, hippo_slab, tmp_path / "output", options)
    proc = EngineProcess(command, env=env())
    state = RunState()
    events = run_to_end(proc, state)
    assert proc.returncode == 0, proc.stderr_text()
    kinds = [e.kind for e in events]
    assert kinds[0] == "device" and kinds[-1] == "done" and "start" in kinds and "progress" in kinds
    assert_protocol(events)
    assert state.device == "cpu" and state.device_reason == "CPU requested" and state.percent == 100
    done = [e.data["done"] for e in events if e.kind == "progress"]
    assert done == sorted(done) and done[-1] == 3

    result = read_result(Path(state.outputs["segments"]).parent)
    assert result.folder == tmp_path / "output" / "input"
    assert [s.name for s in result.segments] == [s.name for s in HIPPOCAMPUS_SEGMENTS]
    assert [s.to_dict() for s in result.segments] == [s.to_dict() for s in HIPPOCAMPUS_SEGMENTS]
    labelmap, source = nib.load(result.labelmap), nib.load(hippo_slab)
    assert labelmap.shape == source.shape and np.allclose(labelmap.affine, source.affine)
    labels = np.asarray(labelmap.dataobj)
    probabilities = nib.load(result.probabilities).get_fdata(dtype=np.float32)
    assert probabilities.shape == (*source.shape, 3)
    assert not result.largest_component  # this model's spec leaves every piece
    assert np.array_equal(labels_from_probabilities(probabilities, 0.5), labels)  # the slider's 0.5 = engine
    assert result.voxels == {s.name: int((labels == s.value).sum()) for s in HIPPOCAMPUS_SEGMENTS}

    # Terminology exactly as the engine's own .seg.nrrd writer (which Slicer reads) stores it
    import nrrd

    write_seg_nrrd(labels, source.affine, HIPPOCAMPUS_SEGMENTS, tmp_path / "ref.seg.nrrd")
    header = nrrd.read_header(str(tmp_path / "ref.seg.nrrd"))
    for i, spec in enumerate(result.segments):
        assert header[f"Segment{i}_Tags"] == f"TerminologyEntry:{spec.terminology}|"
    plan = plan_import(result.segments, ["Anterior hippocampus"], result.voxels, keep_empty=True)
    assert [i.name for i in plan.items] == ["Anterior hippocampus 2", "Posterior hippocampus"]


def test_shipped_hippocampus_result_rethresholds_to_its_one_piece_labels(tmp_path: Path) -> None:
    case = DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_164.nii.gz"  # islands without the rule
    if not (find_bundle_root(REPO / "DoubleUNetSegment") / "hippocampus" / "models" / "model.pt").is_file():
        pytest.fail("the shipped hippocampus weights are missing")
    options = EngineOptions(model="hippocampus", device="cpu", save_probabilities=True)
    # float32: the islands are float32's (the int8 path an AVX2 CPU takes leaves none on this case)
    command = cli_command(sys.executable, case, tmp_path / "out", options)
    command += ["--precision", "fp32", "--backend", "torch"]
    proc = EngineProcess(command, env=env())
    state = RunState()
    run_to_end(proc, state)
    assert proc.returncode == 0, proc.stderr_text()
    result = read_result(Path(state.outputs["segments"]).parent)
    assert result.largest_component
    labels = np.asarray(nib.load(result.labelmap).dataobj)
    probabilities = nib.load(result.probabilities).get_fdata(dtype=np.float32)
    assert np.array_equal(labels_from_probabilities(probabilities, 0.5, result.largest_component), labels)
    assert not np.array_equal(labels_from_probabilities(probabilities, 0.5), labels)


def test_engine_errors_reach_the_user(hippo_slab: Path, tmp_path: Path) -> None:
    command = cli_command(
        sys.executable, hippo_slab, tmp_path, EngineOptions(model=str(tmp_path / "none.pt"), device="cpu")
    )
    proc = EngineProcess(command, env=env())
    state = RunState()
    run_to_end(proc, state)
    assert proc.returncode == 2
    assert "none.pt" in failure_message(state, proc.returncode, proc.stderr_text())


def test_worker_keeps_the_model_and_answers_slice_requests(hippo_model: Path, hippo_slab: Path, tmp_path: Path) -> None:
    command = worker_command(sys.executable, EngineOptions(model=str(hippo_model), device="cpu"))
    proc = EngineProcess(command, env=env(), stdin=True)
    try:
        state = RunState()
        deadline = time.monotonic() + 120

        seen: list = []
        printed: list[Event] = []

        def wait_for(kind: str, request: str | None = None) -> dict:
            while time.monotonic() < deadline:
                for event in proc.poll():
                    state.apply(event)
                    seen.append(event)
                    printed.append(event)
                for i, event in enumerate(seen):
                    if event.kind == kind and (request is None or event.data.get("id") == request):
                        del seen[: i + 1]
                        return event.data
                assert proc.running(), proc.stderr_text()
                time.sleep(0.02)
            raise AssertionError(f"no {kind} event")

        ready = wait_for("ready")
        assert ready["slice_axis"] == 2 and [s["name"] for s in ready["segments"]][0] == "Anterior hippocampus"
        for request_id, k in (("1", 1), ("2", 2)):
            request = {
                "id": request_id,
                "input": str(hippo_slab),
                "output": str(tmp_path),
                "name": f"s{k}",
                "slices": [k, k + 1],
            }
            proc.send(request)
            done = wait_for("done", request_id)
            wait_for("idle", request_id)
            result = read_result(Path(done["outputs"]["segments"]).parent)
            one = nib.load(result.labelmap)
            assert one.shape == (*nib.load(hippo_slab).shape[:2], 1)
            expected = nib.load(hippo_slab).affine @ np.array([0, 0, k, 1.0])
            assert np.allclose(one.affine[:, 3], expected)  # the slice stays where it was in space
            assert nib.load(result.probabilities).shape == (*one.shape, 3)

        proc.send({"id": "bad", "input": str(hippo_slab), "output": str(tmp_path), "slices": [5, 9]})
        error = wait_for("error", "bad")
        assert "outside the volume" in error["message"]
        wait_for("idle", "bad")
        assert proc.running()  # a bad request does not end the worker
        assert {e.kind for e in printed} >= {"device", "ready", "start", "progress", "done", "error", "idle"}
        assert_protocol(printed)
    finally:
        proc.close(timeout=60)  # a loaded CI machine (two test workers) can take more than Slicer's 5 s to quit
    assert proc.returncode == 0 and not proc.cancelled
