"""The Segment Editor effect's persistent engine: start, queue, send, poll, wait, finish and close, without Slicer.

Preview must answer in about a second, so the effect keeps one worker process
(``python -m doubleunet_segment.inference.worker``) with the model loaded. A :class:`WorkerSession` owns that
process and its temporary folder: it starts it (again when model, device or TTA change), holds actions back
until the model is loaded (a request needs the model's slice axis), sends one request at a time, reads the
answer with the shared :class:`~.poller.EventPoller`, and reports a result or a failure through callbacks.
The effect only turns Slicer nodes into files and requests and results back into segments; a Qt timer calls
:meth:`WorkerSession.poll`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .commands import EngineOptions
from .events import Event, RunState
from .poller import EventPoller
from .process import EngineProcess
from .segment_import import Prediction, read_result
from .workspace import remove_workspace

SOURCE_NAME = "source.nii"  # the volume handed to the worker, uncompressed: written often, read at once
RESULTS_DIR = "results"


@dataclass
class PendingRequest:
    """The request in flight and what the caller wants done with its answer."""

    purpose: str  # the caller's word for it ("preview", "apply")
    message: dict[str, Any]  # the JSON request the worker got (id, input, output, name, slices, ...)
    context: dict[str, Any] = field(default_factory=dict)  # the caller's own data (e.g. an ROI box)

    @property
    def id(self) -> str:
        return str(self.message["id"])

    @property
    def slices(self) -> tuple[int, int] | None:
        """[k0, k1) along the model's slice axis, or None for the whole volume."""
        slices = self.message.get("slices")
        return (int(slices[0]), int(slices[1])) if slices else None


class WorkerSession:
    """One persistent worker process, its temporary folder and the request in flight.

    Args:
        start_process: starts the worker for ``options`` and returns it (an :class:`EngineProcess` with stdin);
            in Slicer it checks the Python packages first and runs ``PythonSlicer``. Its exceptions reach the
            caller of :meth:`ensure`.
        new_workspace: makes an empty folder for the volume handed to the worker and the results it writes;
            the session removes it on :meth:`close`.
        on_result: called with the finished request and the engine's prediction read from its case folder.
        on_failure: called with a message when a request, a queued action or the worker itself failed.
        on_update: called with the run state after each poll that found the worker alive (progress, status).
    """

    def __init__(
        self,
        start_process: Callable[[EngineOptions], EngineProcess],
        new_workspace: Callable[[], Path],
        on_result: Callable[[PendingRequest, Prediction], None],
        on_failure: Callable[[str], None],
        on_update: Callable[[RunState], None] | None = None,
    ) -> None:
        self._start_process = start_process
        self._new_workspace = new_workspace
        self.on_result = on_result
        self.on_failure = on_failure
        self.on_update = on_update
        self.process: EngineProcess | None = None
        self.poller: EventPoller | None = None
        self.key: tuple[str, str, bool] | None = None
        self.workspace: Path | None = None
        self.info: dict[str, Any] = {}  # the worker's "ready" event: model, slice_axis, threshold, segments
        self.pending: PendingRequest | None = None
        self.queued: list[Callable[[], None]] = []
        self.request_count = 0  # never reset, so request ids and case names stay unique
        self.source_key: Hashable | None = None
        self._answered: PendingRequest | None = None

    # --- what the caller reads -----------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """A worker was started and not closed (it may have died since: :meth:`poll` finds out)."""
        return self.process is not None

    @property
    def ready(self) -> bool:
        """The model is loaded; queued actions run from now on."""
        return bool(self.info)

    @property
    def busy(self) -> bool:
        """A request is in flight or an action waits for the model."""
        return self.pending is not None or bool(self.queued)

    @property
    def state(self) -> RunState:
        """What the user is shown about the current (or last) request."""
        return self.poller.state if self.poller is not None else RunState()

    @property
    def slice_axis(self) -> int:
        """The voxel axis (0-2) the model segments slices along, once ready (2 before)."""
        return int(self.info.get("slice_axis", 2))

    # --- start and stop ------------------------------------------------------------------------------------
    def ensure(self, options: EngineOptions) -> bool:
        """Start the worker, or restart it when model, device or TTA changed; True when a new one was started."""
        key = (options.model, options.device, options.tta)
        if self.process is not None and self.process.running() and key == self.key:
            return False
        self.close()
        self.workspace = self._new_workspace()
        try:
            process = self._start_process(options)
        except BaseException:
            self.close()  # the folder must not outlive a start that failed
            raise
        self.process, self.key, self.info = process, key, {}
        self.poller = EventPoller(process, on_event=self._on_event, source="worker")
        return True

    def close(self) -> None:
        """Stop the worker (its whole process tree), forget what was pending and delete the temporary folder."""
        if self.process is not None:
            self.process.close()
            self.process = None
        self.key = None
        self.pending = None
        self._answered = None
        self.queued = []
        self.source_key = None
        if self.workspace is not None:
            remove_workspace(self.workspace)
            self.workspace = None

    # --- requests ------------------------------------------------------------------------------------------
    def source_file(self, key: Hashable, write: Callable[[Path], None]) -> Path:
        """The volume handed to the worker, in the session's folder; ``write(path)`` runs only when ``key`` changed.

        ``key`` identifies the volume's content (in Slicer: node id and image modification time), so Preview
        after Preview of an unchanged volume writes nothing and the worker reuses the volume it has read.
        """
        if self.workspace is None:
            raise RuntimeError("the DoubleU-Net worker is not running")
        path = self.workspace / SOURCE_NAME
        if key != self.source_key:
            write(path)
            self.source_key = key
        return path

    def when_ready(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the model is loaded and no request is in flight (at once if that is now)."""
        self.queued.append(action)
        self.poll()

    def send(
        self,
        purpose: str,
        source: Path,
        slices: Sequence[int] | None = None,
        context: dict[str, Any] | None = None,
    ) -> PendingRequest:
        """Ask the worker to segment ``source`` (slices [k0, k1) along its slice axis, or all when None).

        Raises:
            RuntimeError: no worker runs, or a request is already in flight (the worker answers one at a time).
        """
        if self.process is None or self.workspace is None or self.poller is None:
            raise RuntimeError("the DoubleU-Net worker is not running")
        if self.pending is not None:
            raise RuntimeError("a DoubleU-Net request is already in flight")
        self.request_count += 1
        message = {
            "id": str(self.request_count),
            "input": str(source),
            "output": str(self.workspace / RESULTS_DIR),
            "name": f"r{self.request_count}",
            "slices": [int(k) for k in slices] if slices else None,
            "save_probabilities": True,  # the effect re-thresholds the probabilities without the network
        }
        self.pending = PendingRequest(purpose, message, dict(context or {}))
        previous = self.poller.state  # the device was reported once, at start; keep showing it
        self.poller.state = RunState(device=previous.device, device_reason=previous.device_reason)
        self.process.send(message)
        return self.pending

    # --- the timer's work ----------------------------------------------------------------------------------
    def poll(self) -> None:
        """Read what the worker printed, finish an answered request, run a queued action, notice a dead worker."""
        if self.process is None or self.poller is None:
            return
        self.poller.poll()
        if self.on_update is not None:  # before the result, so that what on_result shows is not overwritten
            self.on_update(self.state)
        if self._answered is not None:
            answered, self._answered = self._answered, None
            self._finish(answered)
        if self.ready and self.pending is None and self.queued:
            action = self.queued.pop(0)
            try:
                action()
            except Exception as err:  # a bad ROI, an unwritable volume: the user gets the message, the worker lives
                self.fail(str(err))
        if self.process is not None and self.poller.finished and (self.busy or not self.ready):
            state = self.poller.state
            message = state.errors[-1] if state.errors else self.process.stderr_text().strip()
            self.close()
            self.fail(message or "The DoubleU-Net engine stopped unexpectedly.")

    def _on_event(self, event: Event) -> None:
        if event.kind == "ready":
            self.info = dict(event.data)
        elif event.kind == "idle" and self.pending is not None and event.data.get("id") == self.pending.id:
            self._answered, self.pending = self.pending, None

    def _finish(self, request: PendingRequest) -> None:
        state = self.state
        if state.errors or "segments" not in state.outputs:
            self.fail("\n".join(state.errors) or "The engine gave no result.")
            return
        self.on_result(request, read_result(Path(state.outputs["segments"]).parent))

    def fail(self, message: str) -> None:
        """Drop what was pending or queued and report ``message`` (the worker itself keeps running)."""
        self.pending = None
        self.queued = []
        self.on_failure(message)

    def wait(self, timeout: float, pump: Callable[[], None] | None = None, interval: float = 0.05) -> None:
        """Block until nothing is in flight or queued (scripts and self-tests; the UI polls from a timer).

        ``pump`` runs each round first (Slicer: ``slicer.app.processEvents``), then :meth:`poll`.

        Raises:
            TimeoutError: still busy after ``timeout`` seconds; the request stays in flight (:meth:`close` stops it).
        """
        deadline = time.monotonic() + timeout
        while self.busy:
            if pump is not None:
                pump()
            self.poll()
            if not self.busy:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from the DoubleU-Net worker within {timeout:g} s")
            time.sleep(interval)
