"""The engine's event protocol, defined once: what ``--progress json`` and the worker print, and what they read.

The batch CLI (``doubleunet-segment --progress json``) and the persistent worker
(``python -m doubleunet_segment.inference.worker``) print one JSON object per line on stdout; ``"event"``
names its kind and the other keys are that kind's fields (``?``: optional):

- ``device``: device, reason -- the device chosen ("cpu" or "cuda") and why;
- ``note``: message, case? -- something the user should know that is not an error;
- ``start``: case, total -- a case starts, ``total`` slices to segment;
- ``progress``: case, done, total -- ``done`` of ``total`` slices segmented;
- ``done``: case, seconds, outputs -- a case finished, ``outputs`` maps a kind to the path written;
- ``error``: message, case? -- a case, or a worker request, failed;
- ``ready`` (worker only): model, slice_axis, threshold, segments -- the model is loaded;
- ``idle`` (worker only): id -- the request ``id`` is answered, the worker waits for the next.

The worker adds ``id``, the request's own, to every event that answers a request (``idle`` always has it).
``segments`` is a list of :meth:`doubleunet_segment.segments.SegmentInfo.to_dict` objects; ``outputs`` holds
``segments`` (the case's ``segments.json``) and one path per written format.

A worker request is one JSON object per stdin line with the fields :data:`REQUEST_FIELDS` lists;
:data:`QUIT` ends the worker.

Pure Python (json only): the 3D Slicer extension's own process has no torch, and importing this module
through the lazy package ``__init__`` pulls in nothing heavy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEVICE",
    "DONE",
    "ERROR",
    "EVENTS",
    "EVENT_KEY",
    "IDLE",
    "NOTE",
    "PROGRESS",
    "QUIT",
    "READY",
    "REQUEST_FIELDS",
    "REQUEST_ID",
    "START",
    "EventSpec",
    "check_event",
    "encode",
]

EVENT_KEY = "event"  # the key naming an event's kind
REQUEST_ID = "id"  # the key tying a worker's event to the request it answers

DEVICE = "device"
NOTE = "note"
START = "start"
PROGRESS = "progress"
DONE = "done"
ERROR = "error"
READY = "ready"
IDLE = "idle"


@dataclass(frozen=True)
class EventSpec:
    """One kind of event: the fields it always carries and those it may carry (``id`` is allowed on all)."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def fields(self) -> frozenset[str]:
        """Every field this event may carry, ``id`` included (``event`` itself excluded)."""
        return frozenset((*self.required, *self.optional, REQUEST_ID))


EVENTS: dict[str, EventSpec] = {
    spec.name: spec
    for spec in (
        EventSpec(DEVICE, ("device", "reason")),
        EventSpec(NOTE, ("message",), ("case",)),
        EventSpec(START, ("case", "total")),
        EventSpec(PROGRESS, ("case", "done", "total")),
        EventSpec(DONE, ("case", "seconds", "outputs")),
        EventSpec(ERROR, ("message",), ("case",)),
        EventSpec(READY, ("model", "slice_axis", "threshold", "segments")),
        EventSpec(IDLE, (REQUEST_ID,)),
    )
}

# A worker request: ``input`` (a volume file) and ``output`` (a folder) are required; ``slices`` is [k0, k1)
# along the model's slice axis, ``threshold`` None or absent means the model's own.
REQUEST_FIELDS: dict[str, bool] = {  # field -> required
    REQUEST_ID: False,
    "input": True,
    "output": True,
    "name": False,
    "slices": False,
    "threshold": False,
    "save_probabilities": False,
    "overwrite": False,
}
QUIT: dict[str, str] = {"command": "quit"}


def check_event(data: Mapping[str, Any]) -> EventSpec:
    """The spec of event ``data``, after checking its kind and fields against :data:`EVENTS`.

    Raises:
        ValueError: ``data`` names no known event, lacks a required field or carries one the protocol
            does not define (an emitter and its readers would disagree about it).
    """
    kind = data.get(EVENT_KEY)
    spec = EVENTS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise ValueError(f"unknown event {kind!r}; the protocol defines {sorted(EVENTS)}")
    fields = set(data) - {EVENT_KEY}
    missing = set(spec.required) - fields
    if missing:
        raise ValueError(f"{kind} event lacks {sorted(missing)}")
    extra = fields - spec.fields
    if extra:
        raise ValueError(f"{kind} event carries {sorted(extra)}, which the protocol does not define")
    return spec


def encode(data: Mapping[str, Any]) -> str:
    """Event ``data`` as one JSON line (no newline), checked with :func:`check_event` first."""
    check_event(data)
    return json.dumps(dict(data))
