"""Running the engine without blocking Slicer: background readers, polling, and cancel of the whole tree.

Slicer's UI thread must never wait on a pipe. Reader threads move each output line into a queue that a Qt
timer drains (``poll``). Cancel kills every descendant first and the launcher last: on Windows and with
``PythonSlicer`` the process we start is a launcher, and killing only it leaves the real Python computing.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import psutil

from .events import Event, parse_line


def kill_process_tree(pid: int, timeout: float = 5.0) -> list[int]:
    """Kill ``pid`` and all its descendants; returns the pids that were killed."""
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    try:
        children = parent.children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    victims = [*children, parent]
    for proc in victims:  # children first, so nothing is re-parented and missed
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=timeout)
    return [p.pid for p in victims]


def _hidden_window_flags() -> int:
    """No console window flashing up for each run on Windows."""
    return getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0


class EngineProcess:
    """One engine subprocess whose stdout events and stderr text are collected in the background."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str] | None = None, stdin: bool = False) -> None:
        self.command = list(command)
        self.events: queue.Queue[Event] = queue.Queue()
        self._stderr: list[str] = []
        self.cancelled = False
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            creationflags=_hidden_window_flags(),
        )
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = parse_line(line)
            if event is not None:
                self.events.put(event)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> list[Event]:
        """Events that arrived since the last call; never blocks."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def running(self) -> bool:
        return self.proc.poll() is None

    def finished(self) -> bool:
        """Exited and every line it wrote has been read (so no event is lost after the exit)."""
        return self.proc.poll() is not None and not any(r.is_alive() for r in self._readers)

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def stderr_text(self) -> str:
        return "".join(self._stderr)

    def send(self, request: Mapping[str, Any]) -> None:
        """One JSON request line to a worker."""
        if self.proc.stdin is None:
            raise RuntimeError("this engine process was started without stdin")
        self.proc.stdin.write(json.dumps(dict(request)) + "\n")
        self.proc.stdin.flush()

    def cancel(self) -> None:
        """Stop the run now, children included."""
        self.cancelled = True
        kill_process_tree(self.proc.pid)
        self.proc.wait()

    def close(self, timeout: float = 5.0) -> None:
        """Ask a worker to quit, then make sure nothing is left running."""
        if self.proc.stdin is not None and self.running():
            try:
                self.send({"command": "quit"})
                self.proc.stdin.close()
                self.proc.wait(timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        if self.running():
            self.cancel()
