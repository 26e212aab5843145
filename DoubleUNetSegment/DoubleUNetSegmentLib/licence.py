"""Licence notices for models whose weights may be used for research only, shown once before first use.

The polyp weights were trained on Kvasir-SEG and CVC-ClinicDB, whose terms allow research and education only (no
commercial use). A user has to see that before the first run, not find it in a README. Each bundle's
``models/model.json`` carries each model's ``licence`` (``name``, ``research_only``, ``text``); this module
reads it as plain JSON (Slicer's process may not have torch yet), decides whether a notice is due, and remembers
an acceptance per model and licence version in a small :class:`Settings` store: ``qt.QSettings`` in Slicer, a dict
or a JSON file in tests. A changed licence text is a new version and is asked again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

MODEL_SPEC = Path("models") / "model.json"  # in each bundle folder
SETTINGS_GROUP = "DoubleUNetSegment/AcceptedLicences"


@dataclass(frozen=True)
class Licence:
    """A model's licence as its model.json states it."""

    name: str
    research_only: bool
    text: str
    url: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> Licence:
        return cls(str(d["name"]), bool(d.get("research_only", False)), str(d.get("text", "")), str(d.get("url", "")))

    @property
    def version(self) -> str:
        """A fingerprint of what the user reads: another name or text needs another acceptance."""
        return hashlib.sha256(f"{self.name}\n{self.text}\n{self.url}".encode()).hexdigest()[:16]


class Settings(Protocol):
    """Where acceptances are kept: ``value(key)`` ("" or None when unset) and ``setValue(key, value)``."""

    def value(self, key: str) -> object: ...

    def setValue(self, key: str, value: str) -> None: ...


class DictSettings:
    """Settings in a dict (tests)."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values = {} if values is None else values

    def value(self, key: str) -> str | None:
        return self.values.get(key)

    def setValue(self, key: str, value: str) -> None:
        self.values[key] = value


class JsonFileSettings(DictSettings):
    """Settings in a JSON file, written on every change (scripts and tests outside Slicer)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        super().__init__(json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {})

    def setValue(self, key: str, value: str) -> None:
        super().setValue(key, value)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.values, indent=2), encoding="utf-8")
        tmp.replace(self.path)


def _spec_entry(bundle_root: Path, model: str) -> dict | None:
    """The ``model.json`` of the model ``model`` names: a shipped model's bundle, or the user's own bundle folder."""
    folder = Path(model).expanduser()
    path = (folder if folder.is_dir() else bundle_root / model) / MODEL_SPEC
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def model_licence(bundle_root: str | os.PathLike, model: str) -> Licence | None:
    """The licence of the model ``--model`` gets (shipped name or bundle folder); None when its model.json has none."""
    entry = _spec_entry(Path(bundle_root), model) if model else None
    if not entry or not isinstance(entry.get("licence"), dict):
        return None
    return Licence.from_dict(entry["licence"])


def settings_key(model: str) -> str:
    """One key per model: a folder path is reduced to a safe name (QSettings treats ``/`` as a group)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    return f"{SETTINGS_GROUP}/{safe}"


def accepted(settings: Settings, model: str, licence: Licence) -> bool:
    return str(settings.value(settings_key(model)) or "") == licence.version


def notice_needed(licence: Licence | None, settings: Settings, model: str) -> bool:
    """A research-only licence this user has not accepted for this model and this licence version."""
    return licence is not None and licence.research_only and not accepted(settings, model, licence)


def record_acceptance(settings: Settings, model: str, licence: Licence) -> None:
    settings.setValue(settings_key(model), licence.version)


def notice_text(model: str, licence: Licence) -> str:
    """What the message box says before the first run of ``model``."""
    more = f"\n\nTerms: {licence.url}" if licence.url else ""
    return (
        f'The "{model}" model may be used for research and education only: {licence.name}.\n\n'
        f"{licence.text}{more}\n\n"
        "Click OK to accept these terms and run the model (you will not be asked again for this model), "
        "or Cancel to stop."
    )


def confirm_licence(bundle_root: str | os.PathLike, model: str, settings: Settings, ask: Callable[[str], bool]) -> bool:
    """True when ``model`` may run: no notice due, or ``ask(notice)`` said yes (then remembered).

    ``ask`` shows the notice and returns the user's answer (``slicer.util.confirmOkCancelDisplay`` in Slicer).
    False: the user declined, and the run must not start.
    """
    licence = model_licence(bundle_root, model)
    if not notice_needed(licence, settings, model):
        return True
    if not ask(notice_text(model, licence)):
        return False
    record_acceptance(settings, model, licence)
    return True
