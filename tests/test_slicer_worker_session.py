"""The Segment Editor effect's worker session, driven as the effect drives it, against the real worker process.

A model with untrained (seeded) weights answers slice and volume requests on three slices of a real MSD
hippocampus MR volume; the session is started, fed actions before the model is ready, waited on with and
without a timeout, restarted, cancelled, and made to fail with a model that does not exist.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import pytest
from doubleunet_segment.inference import protocol
from DoubleUNetSegmentLib.bundle import find_bundle_root
from DoubleUNetSegmentLib.commands import EngineOptions, engine_environment, worker_command
from DoubleUNetSegmentLib.events import RunState
from DoubleUNetSegmentLib.process import EngineProcess, kill_process_tree
from DoubleUNetSegmentLib.segment_import import Prediction
from DoubleUNetSegmentLib.worker_session import PendingRequest, WorkerSession
from helpers import REPO, needs_data


def start_worker(options: EngineOptions) -> EngineProcess:
    """What the effect's start does, with this interpreter in place of PythonSlicer."""
    env = engine_environment(find_bundle_root(REPO / "DoubleUNetSegment"))
    env["OMP_NUM_THREADS"] = "2"
    return EngineProcess(worker_command(sys.executable, options), env=env, stdin=True)


class Recorder:
    """The effect's side of the session: what it was told, in order."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.results: list[tuple[PendingRequest, Prediction]] = []
        self.failures: list[str] = []
        self.updates: list[int] = []
        self.workspaces: list[Path] = []
        self.starts: list[EngineOptions] = []

    def new_workspace(self) -> Path:
        folder = self.tmp_path / f"ws{len(self.workspaces)}"
        folder.mkdir()
        self.workspaces.append(folder)
        return folder

    def start(self, options: EngineOptions) -> EngineProcess:
        self.starts.append(options)
        return start_worker(options)

    def session(self) -> WorkerSession:
        return WorkerSession(
            self.start,
            self.new_workspace,
            on_result=lambda request, result: self.results.append((request, result)),
            on_failure=self.failures.append,
            on_update=lambda state: self.updates.append(state.percent),
        )


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@needs_data
def test_session_queues_until_ready_sends_waits_restarts_and_cancels(
    hippo_model: Path, hippo_slab: Path, tmp_path: Path
) -> None:
    effect = Recorder(tmp_path)
    session = effect.session()
    options = EngineOptions(model=str(hippo_model), device="cpu", save_probabilities=True)
    writes: list[Path] = []

    def source() -> Path:
        """The effect's source file: the volume is written once, while its key stays the same."""
        return session.source_file(
            ("vol1", 1), lambda path: writes.append(path) or path.write_bytes(hippo_slab.read_bytes())
        )

    try:
        # start: a process and a folder, no model yet
        assert session.ensure(options) and session.active and not session.ready
        workspace = effect.workspaces[0]
        assert session.workspace == workspace and workspace.is_dir()
        assert not session.ensure(options)  # same model, device and TTA: the loaded worker is kept
        assert len(effect.starts) == 1

        # queue: Preview pressed while the model loads waits for it (its slice axis plans the request)
        session.when_ready(lambda: session.send("preview", source(), (session.slice_axis - 1, session.slice_axis)))
        assert session.busy and len(session.queued) == 1 and session.pending is None
        session.wait(120)
        assert session.ready and session.slice_axis == 2 and not session.busy and effect.failures == []
        assert [s["name"] for s in session.info["segments"]] == ["Anterior hippocampus", "Posterior hippocampus"]
        ((request, result),) = effect.results
        assert request.purpose == "preview" and request.slices == (1, 2) and request.id == "1"
        assert Path(request.message["input"]) == workspace / "source.nii" and request.message["save_probabilities"]
        required = {key for key, needed in protocol.REQUEST_FIELDS.items() if needed}
        assert required <= set(request.message) <= set(protocol.REQUEST_FIELDS)  # only keys the worker reads
        one = nib.load(result.labelmap)
        assert one.shape == (*nib.load(hippo_slab).shape[:2], 1)
        assert np.allclose(one.affine[:, 3], nib.load(hippo_slab).affine @ np.array([0, 0, 1, 1.0]))
        assert nib.load(result.probabilities).shape == (*one.shape, 3)
        assert result.folder.parent == workspace / "results"
        assert effect.updates[-1] == 100 and session.state.device == "cpu"

        # send (ready, nothing in flight: at once), one request at a time, the caller's context comes back
        box = (slice(2, 9), slice(3, 7), slice(0, 3))
        sent = session.send("apply", source(), None, {"box": box})
        assert sent is session.pending and session.busy and sent.slices is None
        with pytest.raises(RuntimeError, match="in flight"):
            session.send("apply", source(), None)
        # wait with a timeout: raises, and the request stays in flight until answered or closed
        with pytest.raises(TimeoutError):
            session.wait(0)
        assert session.pending is sent
        session.wait(120)
        request, result = effect.results[-1]
        assert request is sent and request.context == {"box": box} and request.id == "2"
        assert nib.load(result.labelmap).shape == nib.load(hippo_slab).shape
        assert session.state.device == "cpu"  # reported once at start, kept for every request
        assert writes == [workspace / "source.nii"]  # the unchanged volume was written once

        # an error the worker reports reaches the caller; the worker lives on
        session.send("apply", source(), (5, 9))
        session.wait(120)
        assert len(effect.failures) == 1 and "outside the volume" in effect.failures[0]
        assert session.active and session.process.running() and not session.busy

        # an action that raises is reported, the queue is dropped, the worker lives on
        session.when_ready(lambda: 1 / 0)
        assert "division by zero" in effect.failures[-1] and not session.busy and session.process.running()

        # restart (TTA changed) with a request in flight: the old process tree and folder are gone
        session.send("apply", source(), None)
        old = session.process.pid
        assert session.ensure(EngineOptions(model=str(hippo_model), device="cpu", tta=True))
        assert gone(old) and not workspace.exists() and session.pending is None
        assert len(effect.starts) == 2 and effect.starts[-1].tta and session.source_key is None

        # the worker dies before it is ready (killed here): noticed, reported, cleaned up
        queued = []
        session.when_ready(lambda: queued.append("ran"))
        killed = kill_process_tree(session.process.pid)
        session.wait(30)
        assert queued == [] and not session.active and not session.busy
        assert all(gone(p) for p in killed) and not effect.workspaces[1].exists()
        assert len(effect.failures) == 3
    finally:
        session.close()
    assert not session.active and session.workspace is None


def test_session_reports_a_model_that_cannot_load_and_leaves_nothing_behind(tmp_path: Path) -> None:
    effect = Recorder(tmp_path)
    session = effect.session()
    assert session.ensure(EngineOptions(model=str(tmp_path / "none.pt"), device="cpu"))
    pid = session.process.pid
    session.when_ready(lambda: pytest.fail("ran without a model"))
    session.wait(60)
    assert len(effect.failures) == 1 and "none.pt" in effect.failures[0]  # the engine's own words (stderr)
    assert not session.active and not session.busy and gone(pid)
    assert not effect.workspaces[0].exists()
    session.poll()  # a closed session polls as a no-op
    assert len(effect.failures) == 1


def test_session_start_failure_removes_the_folder(tmp_path: Path) -> None:
    def refuse(options: EngineOptions) -> EngineProcess:
        raise RuntimeError("PyTorch is required; its installation was declined.")

    folders: list[Path] = []

    def new_workspace() -> Path:
        folders.append(tmp_path / "ws")
        folders[-1].mkdir()
        return folders[-1]

    session = WorkerSession(refuse, new_workspace, on_result=lambda *_: None, on_failure=lambda _: None)
    with pytest.raises(RuntimeError, match="declined"):
        session.ensure(EngineOptions())
    assert not session.active and not folders[0].exists() and session.workspace is None
    with pytest.raises(RuntimeError, match="not running"):
        session.send("preview", tmp_path / "x.nii")
    assert isinstance(session.state, RunState)
