"""Progress of a batch run: tqdm bars for people, or one JSON event per line for programs (the Slicer extension).

The events and their fields are defined once, in :mod:`.protocol`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from . import protocol

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
        if self.mode == "json":
            print(line, flush=True)
        elif self.mode == "bar" and data[protocol.EVENT_KEY] in (protocol.NOTE, protocol.DEVICE, protocol.ERROR):
            text = data.get("message") or data.get("reason")
            self._tqdm.write(f"{data.get('case', '')}: {text}" if data.get("case") else str(text), file=sys.stderr)

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
