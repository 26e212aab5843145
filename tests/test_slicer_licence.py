"""The research-only licence notice: which models need it, when it is shown, and that an answer is remembered."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pytest
from doubleunet_segment.catalog import read_catalog
from DoubleUNetSegmentLib import licence
from helpers import REPO

BUNDLE = REPO / "monai_bundle"
MODULE = REPO / "DoubleUNetSegment"


class Asker:
    """Stands in for the message box: records what was shown and gives a fixed answer."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.shown: list[str] = []

    def __call__(self, text: str) -> bool:
        self.shown.append(text)
        return self.answer


def test_catalog_states_each_shipped_models_licence() -> None:
    polyp = licence.model_licence(BUNDLE, "polyp")
    hippo = licence.model_licence(BUNDLE, "hippocampus")
    assert polyp is not None and polyp.research_only
    assert "Kvasir-SEG" in polyp.text and "CVC-ClinicDB" in polyp.text and "commercial" in polyp.text
    assert hippo is not None and not hippo.research_only and "CC BY-SA 4.0" in hippo.name
    # the same words as the bundle's data licence
    data_license = (BUNDLE / "polyp" / "docs" / "data_license.txt").read_text()
    assert "research and education" in data_license and "commercial use forbidden" in polyp.text
    # the engine reads the field as an extra key and is otherwise unchanged
    assert read_catalog()["polyp"].extra["licence"]["research_only"] is True


def test_research_only_model_asks_once_and_remembers_the_answer() -> None:
    settings = licence.DictSettings()
    ask = Asker(True)
    assert licence.confirm_licence(BUNDLE, "polyp", settings, ask)
    assert len(ask.shown) == 1 and "research and education only" in ask.shown[0] and "Cancel" in ask.shown[0]
    assert licence.confirm_licence(BUNDLE, "polyp", settings, ask)  # accepted: not asked again
    assert len(ask.shown) == 1
    assert licence.confirm_licence(BUNDLE, "hippocampus", settings, ask)  # not research-only: never asked
    assert len(ask.shown) == 1


def test_declining_cancels_and_asks_again_next_time() -> None:
    settings = licence.DictSettings()
    no = Asker(False)
    assert not licence.confirm_licence(BUNDLE, "polyp", settings, no)
    assert not licence.confirm_licence(BUNDLE, "polyp", settings, no)
    assert len(no.shown) == 2 and settings.values == {}


def test_a_changed_licence_is_asked_again(tmp_path: Path) -> None:
    bundle = tmp_path / "bundles"
    (bundle / "polyp" / "models").mkdir(parents=True)
    spec_file = bundle / "polyp" / "models" / "model.json"
    shutil.copy(BUNDLE / "polyp" / "models" / "model.json", spec_file)
    settings = licence.DictSettings()
    ask = Asker(True)
    assert licence.confirm_licence(bundle, "polyp", settings, ask) and len(ask.shown) == 1
    spec = json.loads(spec_file.read_text())
    spec["licence"]["text"] += " New clause."
    spec_file.write_text(json.dumps(spec))
    assert licence.notice_needed(licence.model_licence(bundle, "polyp"), settings, "polyp")
    assert licence.confirm_licence(bundle, "polyp", settings, ask) and len(ask.shown) == 2


def test_acceptance_persists_in_a_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "settings" / "accepted.json"
    ask = Asker(True)
    assert licence.confirm_licence(BUNDLE, "polyp", licence.JsonFileSettings(path), ask)
    assert licence.confirm_licence(BUNDLE, "polyp", licence.JsonFileSettings(path), ask)  # a new session
    assert len(ask.shown) == 1 and path.is_file()
    assert all(key.startswith(licence.SETTINGS_GROUP + "/") for key in json.loads(path.read_text()))


def test_models_without_a_licence_field_and_own_bundles(tmp_path: Path) -> None:
    ask = Asker(False)
    settings = licence.DictSettings()
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"")
    assert licence.confirm_licence(BUNDLE, str(weights), settings, ask)  # a weights file: no catalog, no notice
    assert licence.confirm_licence(BUNDLE, "", settings, ask)
    own = tmp_path / "own_bundle"
    (own / "models").mkdir(parents=True)
    entry = {"weights": "m.pt", "licence": {"name": "Non-commercial", "research_only": True, "text": "Research."}}
    (own / "models" / "model.json").write_text(json.dumps(entry))
    assert not licence.confirm_licence(BUNDLE, str(own), settings, ask)  # its model's licence applies
    assert len(ask.shown) == 1
    assert "/" not in licence.settings_key(str(own)).removeprefix(licence.SETTINGS_GROUP + "/")


@pytest.mark.parametrize("path", ["DoubleUNetSegment.py", "SegmentEditorDoubleUNetLib/SegmentEditorEffect.py"])
def test_slicer_layer_asks_before_dependencies_and_the_run(path: str) -> None:
    """Both entry points (panel Apply; effect Preview and Apply) ask before anything is installed or started."""
    source = (MODULE / path).read_text()
    tree = ast.parse(source)
    functions = {n.name: ast.get_source_segment(source, n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    entry_points = ["onApplyButton"] if path == "DoubleUNetSegment.py" else ["onPreview", "onApply"]
    for name in entry_points:
        body = functions[name]
        asks = re.search(r"confirmModelLicence|licenceAccepted", body)
        starts = re.search(r"ensureDependencies|ensureWorker", body)
        assert asks and starts and asks.start() < starts.start(), name
    if path == "DoubleUNetSegment.py":
        confirm = functions["confirmModelLicence"]
        assert "qt.QSettings()" in confirm and "slicer.util.confirmOkCancelDisplay" in confirm
