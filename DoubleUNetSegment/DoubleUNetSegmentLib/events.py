"""The engine's JSON progress lines turned into what a progress bar and a status line show.

The CLI and the worker print one JSON object per line (``device``, ``note``, ``start``, ``progress``,
``done``, ``error``; the worker adds ``ready`` and ``idle``). Anything else on stdout (a library's stray
print) is kept as a log line, never a crash.

The events and their fields are defined by the engine, in ``doubleunet_segment/inference/protocol.py``.
:data:`EVENT_FIELDS` mirrors that table instead of importing it, on purpose: this module runs in 3D Slicer's
own process, which does not have the bundle folder on ``sys.path`` (only the engine subprocess gets it, through
``PYTHONPATH``), and the module panel must load and say what is wrong even when no bundle can be found.
Importing would mean editing Slicer's ``sys.path`` at import time, putting a package whose other modules need
torch into Slicer's interpreter. ``tests/test_slicer_protocol.py`` checks that the mirror equals the engine's
table and that what a real CLI and worker print parses here with those fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# event -> (fields it always carries, fields it may carry); ``id`` (the worker's request) may come with any of them
EVENT_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "device": (("device", "reason"), ()),
    "note": (("message",), ("case",)),
    "start": (("case", "total"), ()),
    "progress": (("case", "done", "total"), ()),
    "done": (("case", "seconds", "outputs"), ()),
    "error": (("message",), ("case",)),
    "ready": (("model", "slice_axis", "threshold", "segments"), ()),
    "idle": (("id",), ()),
}
KNOWN_EVENTS = frozenset(EVENT_FIELDS)


@dataclass
class Event:
    kind: str  # one of KNOWN_EVENTS, or "log" for a line that is not an engine event
    data: dict[str, Any] = field(default_factory=dict)
    line: str = ""


def parse_line(line: str) -> Event | None:
    """One stdout line as an Event; None for a blank line."""
    text = line.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and data.get("event") in KNOWN_EVENTS:
            return Event(data["event"], data, text)
    return Event("log", {"message": text}, text)


@dataclass
class RunState:
    """Everything the user is shown about a run, updated one event at a time."""

    done: int = 0
    total: int = 0
    device: str = ""
    device_reason: str = ""
    status: str = "Starting the segmentation engine..."
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    finished_cases: int = 0
    ready: bool = False

    @property
    def percent(self) -> int:
        """0-100 for the progress bar; 100 only once the engine reported the case done."""
        if self.finished_cases:
            return 100
        if not self.total:
            return 0
        return min(99, int(100 * self.done / self.total))

    def apply(self, event: Event) -> None:
        d = event.data
        if event.kind == "device":
            self.device, self.device_reason = str(d.get("device", "")), str(d.get("reason", ""))
            self.status = f"Running on {self.device.upper()}: {self.device_reason}"
        elif event.kind == "ready":
            self.ready = True
            self.status = f"Model {d.get('model', '')} loaded on {self.device.upper() or 'the device'}"
        elif event.kind == "note":
            self.notes.append(str(d.get("message", "")))
            self.status = str(d.get("message", ""))
        elif event.kind == "start":
            self.done, self.total = 0, int(d.get("total", 0))
            self.status = f"Segmenting {self.total} slice(s) on {self.device.upper() or 'the device'}..."
        elif event.kind == "progress":
            self.done, self.total = int(d.get("done", 0)), int(d.get("total", self.total))
            self.status = f"Segmented {self.done} of {self.total} slice(s) on {self.device.upper() or 'the device'}"
        elif event.kind == "done":
            self.finished_cases += 1
            self.outputs = {k: str(v) for k, v in d.get("outputs", {}).items()}
            self.status = f"Segmented in {float(d.get('seconds', 0.0)):.1f} s on {self.device.upper()}"
        elif event.kind == "error":
            self.errors.append(str(d.get("message", "unknown error")))
            self.status = f"Failed: {self.errors[-1]}"
        elif event.kind == "log":
            self.log.append(event.line)


def failure_message(state: RunState, returncode: int | None, stderr: str) -> str:
    """What the message box says when a run did not succeed: the engine's own words first."""
    if state.errors:
        return "\n".join(state.errors)
    tail = [line for line in stderr.strip().splitlines() if line.strip()]
    if tail:
        return "\n".join(tail[-15:])
    if returncode is not None and returncode != 0:
        return f"The segmentation engine stopped with exit status {returncode} and gave no message."
    return "The segmentation engine gave no result."
