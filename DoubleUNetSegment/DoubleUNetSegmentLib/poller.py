"""One poller for every engine process: the module panel's CLI run and the Segment Editor effect's worker.

Slicer calls :meth:`EventPoller.poll` from a Qt timer (the timer lives in the Slicer files; nothing here
needs Qt). Each call drains what the process printed since the last one into a :class:`RunState`, sends
stray output lines to the log and hands every event to a handler; ``finished`` turns True once the process
has exited and every line it wrote has been read, so the last events (``done``, ``error``) are never lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .events import Event, RunState
from .process import EngineProcess

logger = logging.getLogger(__name__)


class EventPoller:
    """Drains an :class:`EngineProcess`'s events into ``state``, one timer tick at a time.

    Args:
        process: the engine process (CLI run or worker) to read from.
        state: what the user is shown; a fresh :class:`RunState` if None. The owner may replace it
            between requests (the worker answers one request after another).
        on_event: called with each event after it was applied to ``state``.
        source: how log lines name the process ("engine", "worker").
    """

    def __init__(
        self,
        process: EngineProcess,
        state: RunState | None = None,
        on_event: Callable[[Event], None] | None = None,
        source: str = "engine",
    ) -> None:
        self.process = process
        self.state = state or RunState()
        self.on_event = on_event
        self.source = source
        self.finished = False

    def poll(self) -> list[Event]:
        """The events that arrived since the last call, applied and dispatched; never blocks."""
        events = self._drain()
        if not self.finished and self.process.finished():
            # lines read between the drain above and the exit check: drain once more, then nothing can follow
            events += self._drain()
            self.finished = True
        return events

    def _drain(self) -> list[Event]:
        events = self.process.poll()
        for event in events:
            self.state.apply(event)
            if event.kind == "log":
                logger.info("DoubleU-Net %s: %s", self.source, event.line)
            if self.on_event is not None:
                self.on_event(event)
        return events
