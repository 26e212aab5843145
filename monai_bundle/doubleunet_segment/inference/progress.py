"""Progress of a batch run: tqdm bars for people, or one JSON event per line for programs (the Slicer extension).

The events and their fields are defined once, in :mod:`.protocol`. Entry points (the CLI, the demo) call
:func:`show_log_on_stderr` so the library's log records (the end-of-run table) reach a person's terminal.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from . import protocol

logger = logging.getLogger(__name__)

__all__ = ["Reporter", "show_log_on_stderr"]

if TYPE_CHECKING:
    from ..data.cases import Case
    from .runner import CaseResult


class Reporter:
    """Progress for people (tqdm bars) or for programs (one JSON object per line on stdout)."""

    def __init__(self, mode: str, n_cases: int) -> None:
        self.mode = mode
        self.overall = None
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._tqdm = tqdm
            self.overall = tqdm(total=n_cases, desc="cases", unit="case", position=0, file=sys.stderr)

    def event(self, **data: Any) -> None:
        """One protocol event: ``event=`` names its kind, the other keywords are its fields.

        Raises:
            ValueError: an event or field :data:`.protocol.EVENTS` does not define.
        """
        line = protocol.encode(data)  # checked in every mode, so a bar run catches a bad event too
        kind = data[protocol.EVENT_KEY]
        if self.mode == "json":
            # One write per event: ranks of a sharded run share stdout, and print() in an unbuffered process
            # writes the text and its newline separately, so two ranks' events could land on one line.
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        elif kind in (protocol.NOTE, protocol.DEVICE, protocol.ERROR):
            text = data.get("message") or data.get("reason")
            text = f"{data.get('case', '')}: {text}" if data.get("case") else str(text)
            if self.mode == "bar":
                self._tqdm.write(text, file=sys.stderr)
            elif kind != protocol.ERROR:  # no bars: notes still reach the user (errors are in the summary)
                logger.info(text)

    def start_case(self, case: Case, total: int) -> None:
        self.event(event=protocol.START, case=case.name, total=total)
        if self.mode == "bar":
            self.bar = self._tqdm(
                total=total, desc=case.name[:30], unit="slice", position=1, leave=False, file=sys.stderr
            )

    def progress(self, case: Case, done: int, total: int) -> None:
        self.event(event=protocol.PROGRESS, case=case.name, done=done, total=total)
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()

    def end_case(self, result: CaseResult) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.overall is not None:
            self.overall.update(1)
        if result.ok:
            self.event(
                event=protocol.DONE, case=result.case.name, seconds=round(result.seconds, 2), outputs=result.outputs
            )
        else:
            self.event(event=protocol.ERROR, case=result.case.name, message=result.message)

    def close(self) -> None:
        if self.overall is not None:
            self.overall.close()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (as logging's own last-resort handler)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # StreamHandler's would bind the stream now

    @property
    def stream(self):
        return sys.stderr


def show_log_on_stderr() -> None:
    """Show the package's INFO records (the end-of-run table) on stderr as plain lines, once per process.

    An entry point calls this; library code only logs. Nothing is added when a root handler already
    writes to the terminal (an application that configured logging shows the records itself).
    """
    package = logging.getLogger(__package__.split(".")[0])
    if any(isinstance(h, _StderrHandler) for h in package.handlers):
        return
    terminal = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    if any(getattr(h, "stream", None) in terminal for h in logging.getLogger().handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    package.addHandler(handler)
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)
