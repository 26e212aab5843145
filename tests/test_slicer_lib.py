"""The extension's Slicer-free logic: process-tree cancel, naming, geometry, requirements, temp files."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import pytest
import torch
from doubleunet_segment.catalog import read_catalog
from doubleunet_segment.segments import HIPPOCAMPUS_LR_SEGMENTS
from doubleunet_segment.transforms import ProbabilitiesToLabels, keep_largest_components
from DoubleUNetSegmentLib import bundle, requirements, segment_import, workspace
from DoubleUNetSegmentLib.events import RunState, failure_message, parse_line
from DoubleUNetSegmentLib.poller import EventPoller
from DoubleUNetSegmentLib.process import EngineProcess, kill_process_tree
from helpers import DATA, REPO, needs_data
from packaging.requirements import Requirement

HIPPO = DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"

# A parent that starts a child which starts a grandchild; each sleeps. Prints the pids, then waits.
TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys, time; g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']);"
    "print(g.pid, flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
grandchild = child.stdout.readline().strip()
print('{"event": "note", "message": "%s %s"}' % (child.pid, grandchild), flush=True)
time.sleep(120)
"""


def _wait_for_note(proc: EngineProcess) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for event in proc.poll():
            if event.kind == "note":
                return [int(x) for x in event.data["message"].split()]
        time.sleep(0.05)
    raise AssertionError("the test process tree did not start")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_cancel_kills_the_whole_process_tree() -> None:
    proc = EngineProcess([sys.executable, "-c", TREE])
    descendants = _wait_for_note(proc)
    assert all(psutil.pid_exists(p) for p in [proc.pid, *descendants])
    proc.proc.kill()  # what a naive cancel does: the launcher dies...
    proc.proc.wait()
    assert not any(_gone(p) for p in descendants)  # ...and the real work goes on
    kill_process_tree(descendants[0])
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in descendants) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in descendants)

    proc = EngineProcess([sys.executable, "-c", TREE])
    descendants = _wait_for_note(proc)
    proc.cancel()
    assert proc.cancelled and proc.returncode is not None
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in [proc.pid, *descendants]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in [proc.pid, *descendants])
    assert kill_process_tree(proc.pid) == []


def test_unique_names_never_reuse_an_existing_segment_name() -> None:
    assert segment_import.unique_name("Polyp", []) == "Polyp"
    assert segment_import.unique_name("Polyp", ["Polyp"]) == "Polyp 2"
    assert segment_import.unique_name("Polyp", ["Polyp", "Polyp 2", "Polyp 3"]) == "Polyp 4"
    specs = [
        segment_import.SegmentInfo(1, "Anterior hippocampus", (255, 0, 0), ("1", "SCT", "a"), ("2", "SCT", "b")),
        segment_import.SegmentInfo(2, "Posterior hippocampus", (0, 255, 0), ("1", "SCT", "a"), ("3", "SCT", "c")),
    ]
    plan = segment_import.plan_import(specs, ["Anterior hippocampus", "Liver"])
    assert [(i.value, i.name) for i in plan.items] == [(1, "Anterior hippocampus 2"), (2, "Posterior hippocampus")]
    plan = segment_import.plan_import(specs, [], voxels={"Anterior hippocampus": 0, "Posterior hippocampus": 5})
    assert [i.name for i in plan.items] == ["Posterior hippocampus"] and plan.skipped == ["Anterior hippocampus"]
    plan = segment_import.plan_import(specs, ["Anterior hippocampus"], into_segment="Segment_1")
    assert plan.into_segment == "Segment_1" and [i.name for i in plan.items] == [s.name for s in specs]


def test_rethreshold_matches_the_engine_and_is_monotone() -> None:
    rng = np.random.default_rng(0)
    binary = rng.random((6, 5, 4)).astype(np.float32)
    for t in (0.2, 0.5, 0.8):
        engine = ProbabilitiesToLabels(t)(torch.from_numpy(binary)[None])
        assert np.array_equal(segment_import.labels_from_probabilities(binary, t), engine)
    multi = torch.softmax(torch.from_numpy(rng.normal(size=(3, 6, 5, 4)).astype(np.float32)), 0).numpy()
    as_stored = np.moveaxis(multi, 0, -1)  # probabilities.nii.gz keeps channels last
    assert np.array_equal(segment_import.labels_from_probabilities(as_stored, 0.5), ProbabilitiesToLabels(0.5)(multi))
    sizes = [int((segment_import.labels_from_probabilities(as_stored, t) > 0).sum()) for t in (0.1, 0.5, 0.9)]
    assert sizes[0] >= sizes[1] >= sizes[2]
    two = np.stack([1 - binary, binary], -1)  # two classes: the same rule as a binary model
    assert np.array_equal(segment_import.labels_from_probabilities(two, 0.7), binary >= 0.7)
    with pytest.raises(ValueError):
        segment_import.labels_from_probabilities(binary, 1.0)


@needs_data
def test_slice_in_view_and_roi_on_a_real_volume_geometry() -> None:
    image = nib.load(HIPPO)
    affine, shape = image.affine, image.shape
    ras_to_ijk = np.linalg.inv(affine)
    centre = affine @ np.array([10, 20, 7, 1.0])
    assert segment_import.slice_index(ras_to_ijk, centre[:3], 2, shape[2]) == 7
    far = affine @ np.array([10, 20, 500, 1.0])
    assert segment_import.slice_index(ras_to_ijk, far[:3], 2, shape[2]) == shape[2] - 1
    k_normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    assert segment_import.view_is_along_axis(affine, k_normal, 2)
    assert not segment_import.view_is_along_axis(affine, affine[:3, 0], 2)
    lo, hi = affine @ np.array([2, 3, 4, 1.0]), affine @ np.array([5, 9, 6, 1.0])
    bounds = [v for a, b in zip(lo[:3], hi[:3]) for v in sorted((a, b))]
    box = segment_import.ijk_box(ras_to_ijk, bounds, shape)
    assert box == (slice(2, 6), slice(3, 10), slice(4, 7))
    labels = np.ones((shape[0], shape[1], 3), dtype=np.uint8)  # slices 4..6 of the volume
    segment_import.mask_outside(labels, box, (0, 0, 4))
    assert labels.sum() == 4 * 7 * 3 and labels[2:6, 3:10].all()
    assert segment_import.to_kji(np.zeros((2, 3, 4))).shape == (4, 3, 2)


def test_terminology_entry_has_slicer_layout() -> None:
    entry = segment_import.terminology_entry(
        ("91723000", "SCT", "Anatomical Structure"), ("5366008", "SCT", "Hippocampus"), ("255549009", "SCT", "Anterior")
    )
    parts = entry.split("~")
    assert len(parts) == 7
    assert parts[1:4] == ["SCT^91723000^Anatomical Structure", "SCT^5366008^Hippocampus", "SCT^255549009^Anterior"]
    assert segment_import.terminology_entry(("1", "SCT", "a"), ("2", "SCT", "b")).split("~")[3] == "^^"
    assert entry.split("~")[5:] == ["^^", "^^"]  # no laterality: no anatomic region
    left = segment_import.SegmentInfo.from_dict(HIPPOCAMPUS_LR_SEGMENTS[0].to_dict())
    assert left.terminology.split("~")[3:] == [
        "SCT^255549009^Anterior",
        "Anatomic codes - DICOM master list",
        "SCT^5366008^Hippocampus",
        "SCT^7771000^Left",
    ]


def test_bundle_is_found_from_the_module_folder_and_lists_the_catalog(tmp_path: Path) -> None:
    root = bundle.find_bundle_root(REPO / "DoubleUNetSegment", environ={})
    assert root == (REPO / "monai_bundle").resolve()
    default, entries = bundle.read_catalog(root)
    assert default == "polyp"
    catalog = read_catalog()
    assert [e.name for e in entries] == list(catalog)
    for entry in entries:
        assert entry.available == catalog[entry.name].weights.is_file()
        assert entry.label.startswith(entry.name)
        assert entry.threshold == catalog[entry.name].threshold  # the panel's slider starts at the model's own
    assert bundle.find_bundle_root(tmp_path, environ={"DOUBLEUNET_BUNDLES": str(root)}) == root
    with pytest.raises(FileNotFoundError, match="DOUBLEUNET_BUNDLES"):
        bundle.find_bundle_root(tmp_path, environ={})
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"")
    assert bundle.custom_model_spec(weights).available
    assert not bundle.custom_model_spec(tmp_path).available  # a folder without models/model.json
    assert bundle.custom_model_spec(root / "hippocampus").available  # a bundle folder


def test_custom_model_choice_asks_for_a_folder_then_a_file(tmp_path: Path) -> None:
    """The flow the panel and the effect share: folder dialog first, file dialog only when it was cancelled."""
    folder = tmp_path / "my_bundle"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "model.json").write_text('{"weights": "model.pt"}')
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"")
    asked: list[str] = []

    def dialog(name: str, answer: str):
        return lambda: asked.append(name) or answer

    spec = bundle.choose_custom_model(dialog("folder", str(folder)), dialog("file", str(weights)))
    assert asked == ["folder"] and spec == bundle.custom_model_spec(folder)
    assert spec.name == str(folder) and spec.available and spec.label == "my_bundle (folder)"
    asked.clear()
    spec = bundle.choose_custom_model(dialog("folder", ""), dialog("file", str(weights)))
    assert asked == ["folder", "file"] and spec.name == str(weights) and spec.weights == weights
    assert bundle.choose_custom_model(dialog("folder", ""), dialog("file", "")) is None


def test_rethreshold_keeps_the_largest_pieces_exactly_as_the_engine() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 12, 10, 8)).astype(np.float32)
    logits[1, 2:7, 2:7, 2:6] += 3  # one big anterior piece among noise islands
    logits[2, 7:11, 3:8, 2:6] += 3
    multi = torch.softmax(torch.from_numpy(logits), 0).numpy()
    as_stored = np.moveaxis(multi, 0, -1)
    plain = segment_import.labels_from_probabilities(as_stored, 0.5)
    kept = segment_import.labels_from_probabilities(as_stored, 0.5, largest_component=True)
    engine = keep_largest_components(ProbabilitiesToLabels(0.5)(multi), classes=2)
    assert np.array_equal(kept, engine)
    plain_labels = ProbabilitiesToLabels(0.5)(multi)  # the twin functions, called the same way
    assert np.array_equal(segment_import.keep_largest_components(plain_labels, 2), engine)
    assert (kept > 0).sum() < (plain > 0).sum() and set(np.unique(kept)) == {0, 1, 2}
    binary = multi[1]
    assert np.array_equal(
        segment_import.labels_from_probabilities(binary, 0.4, largest_component=True),
        keep_largest_components((binary >= 0.4).astype(np.uint8), classes=1),
    )


def test_requirements_are_lower_bounds_admitting_pyproject_and_cover_the_engine() -> None:
    import tomllib

    reqs = requirements.load_requirements(REPO / "DoubleUNetSegment/Resources/requirements.txt")
    project = {
        Requirement(r).name.lower(): Requirement(r)
        for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    for req in reqs:
        assert req.name.lower() in project, f"{req.name} is not a project dependency"
        # a lower bound only (never ==, <, ~=: those would downgrade or replace what Slicer or PyTorchUtils put
        # there), and one that admits the version pyproject pins or starts from (what the engine is tested with)
        assert req.specifier and {s.operator for s in req.specifier} == {">="}, req
        pinned = [s.version for s in project[req.name.lower()].specifier if s.operator in ("==", ">=")]
        assert pinned and all(req.specifier.contains(v) for v in pinned), (req, project[req.name.lower()])
    torch_req, rest = requirements.split_torch(reqs)
    assert torch_req is not None and requirements.torch_version_requirement(torch_req) == ">=2.13.0"
    assert all(r.name != "torch" for r in rest)
    # every third-party module the worker imports, directly or through the package, is listed
    # (in a fresh interpreter: this test process has imported more of the package through other tests)
    probe = (
        "import sys, doubleunet_segment.inference.worker; "
        "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.startswith('doubleunet_segment.')))"
    )
    files = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()

    names = {r.name.lower() for r in reqs}
    dists = importlib.metadata.packages_distributions()
    for file in files:
        tree = ast.parse(Path(file).read_text())
        # module-level imports only: those inside functions serve other formats (seg.nrrd, DICOM SEG)
        tops = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        tops |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.level == 0}
        for top in tops - {"__future__"} - set(sys.stdlib_module_names):
            assert any(d.lower() in names for d in dists.get(top, [top])), f"{Path(file).stem} imports {top}"


def test_unmet_requirements_name_what_is_missing() -> None:
    reqs = [Requirement("monai==1.6.1"), Requirement("nibabel>=99"), Requirement("nothere-pkg>=1")]
    missing = requirements.unmet(reqs)
    assert [u.requirement.name for u in missing] == ["nibabel", "nothere-pkg"]
    assert "not installed" in missing[1].describe() and "is installed" in missing[0].describe()
    cuda_build = requirements.unmet([Requirement("torch>=2.13.0")], lambda name: "2.13.0+cu128")
    assert cuda_build == []  # a CUDA build of the minimum version satisfies the bound
    assert requirements.unmet([Requirement("torch>=2.13.0")], lambda name: "2.12.1+cu126") != []
    assert "proxy" in requirements.install_failure_message("monai", OSError("connection refused"))


def test_events_parse_and_progress_state() -> None:
    assert parse_line("   ") is None
    assert parse_line("Warning: something").kind == "log"
    assert parse_line('{"event": "unknown"}').kind == "log"
    state = RunState()
    for line in [
        '{"event": "device", "device": "cpu", "reason": "auto: CPU, because this torch build has no CUDA support"}',
        '{"event": "start", "case": "c", "total": 4}',
        '{"event": "progress", "case": "c", "done": 2, "total": 4}',
    ]:
        state.apply(parse_line(line))
    assert state.percent == 50 and "on CPU" in state.status and "no CUDA support" in state.device_reason
    state.apply(parse_line('{"event": "progress", "case": "c", "done": 4, "total": 4}'))
    assert state.percent == 99  # not done until the outputs are written
    state.apply(parse_line('{"event": "done", "case": "c", "seconds": 1.5, "outputs": {"segments": "x"}}'))
    assert state.percent == 100 and state.outputs == {"segments": "x"}
    failed = RunState()
    failed.apply(parse_line('{"event": "error", "case": "c", "message": "RuntimeError: CUDA out of memory"}'))
    assert failure_message(failed, 1, "") == "RuntimeError: CUDA out of memory"
    assert "bad model" in failure_message(RunState(), 2, "usage...\ndoubleunet-segment: error: bad model\n")


def test_workspaces_are_removed_and_stale_ones_swept(tmp_path: Path) -> None:
    run = workspace.make_workspace(tmp_path)
    (run / "input.nii").write_bytes(b"patient data")
    (run / "output" / "case").mkdir(parents=True)
    assert workspace.remove_workspace(run) and not run.exists()
    old, new = workspace.make_workspace(tmp_path), workspace.make_workspace(tmp_path)
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    assert workspace.sweep_stale(tmp_path) == [old]
    assert new.exists() and not old.exists()


def test_engine_process_reads_output_written_right_before_exit() -> None:
    code = "import json; [print(json.dumps({'event': 'progress', 'done': i, 'total': 50})) for i in range(50)]"
    proc = EngineProcess([sys.executable, "-c", code])
    events = []
    while not proc.finished():
        events += proc.poll()
        time.sleep(0.01)
    events += proc.poll()
    assert [e.data["done"] for e in events] == list(range(50)) and proc.returncode == 0


def test_poller_applies_logs_dispatches_and_finishes_after_the_last_line(caplog) -> None:
    """The one poller of the panel and the effect: every line arrives, in order, before ``finished``."""
    code = (
        "import json; print('a stray print'); "
        "print(json.dumps({'event': 'start', 'case': 'c', 'total': 40})); "
        "[print(json.dumps({'event': 'progress', 'case': 'c', 'done': i, 'total': 40})) for i in range(1, 41)]; "
        "print(json.dumps({'event': 'done', 'case': 'c', 'seconds': 0.1, 'outputs': {'segments': 's.json'}}))"
    )
    seen = []
    poller = EventPoller(EngineProcess([sys.executable, "-c", code]), on_event=seen.append, source="test")
    returned = []
    with caplog.at_level("INFO", logger="DoubleUNetSegmentLib.poller"):
        while not poller.finished:
            returned += poller.poll()
            time.sleep(0.01)
    assert [e.kind for e in returned] == [e.kind for e in seen] == ["log", "start", *["progress"] * 40, "done"]
    assert poller.state.percent == 100 and poller.state.outputs == {"segments": "s.json"}
    assert "DoubleU-Net test: a stray print" in caplog.text
    assert poller.poll() == []  # nothing after the end
