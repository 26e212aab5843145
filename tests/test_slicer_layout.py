"""The Slicer extension's files as the Extensions Index and Slicer's CMake macros expect them.

3D Slicer cannot run here, so these checks stand in for "it builds and loads": every file CMake lists
exists, every module file is listed (an unlisted file is missing from the installed extension), all Python
compiles, every Slicer/Qt/VTK name used exists in their sources, and the panel's widgets exist in the .ui.
"""

from __future__ import annotations

import ast
import json
import py_compile
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import REPO, SHARED
from PIL import Image

ROOT = REPO
MODULE = ROOT / "DoubleUNetSegment"
BUNDLE = ROOT / "monai_bundle"
CHECKER = SHARED / "slicer-api" / "check_slicer_api.py"  # the read-only folder beside the checkout
INDEX_SCHEMA = SHARED / "slicer-index-schema" / "slicer-extension-catalog-entry-schema-v1.0.2.json"  # never copied


def cmake_sets(text: str) -> dict[str, list[str]]:
    """``set(NAME a b c)`` blocks as lists (comments dropped, ``${MODULE_NAME}`` expanded)."""
    text = "\n".join(re.sub(r'#(?=(?:[^"]*"[^"]*")*[^"]*$).*', "", line) for line in text.splitlines())
    values = {}
    for name, body in re.findall(r'set\(\s*(\w+)\s+((?:"[^"]*"|[^)"])*)\)', text):
        values[name] = re.findall(r'"[^"]*"|\S+', body)
    module = values.get("MODULE_NAME", [""])[0]
    return {k: [v.replace("${MODULE_NAME}", module).strip('"') for v in vs] for k, vs in values.items()}


def test_root_cmakelists_has_extension_metadata() -> None:
    text = (ROOT / "CMakeLists.txt").read_text()
    sets = cmake_sets(text)
    for var in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert sets.get(f"EXTENSION_{var}"), f"EXTENSION_{var} missing"
    assert sets["EXTENSION_CATEGORY"] == ["Segmentation"]
    assert sets["EXTENSION_DEPENDS"] == ["NA"]
    assert sets["EXTENSION_ICONURL"][0].endswith("/DoubleUNetSegment.png")
    assert re.search(r"find_package\(Slicer (\$\{\w+\} )?REQUIRED\)", text)
    assert "add_subdirectory(DoubleUNetSegment)" in text
    assert "include(${Slicer_EXTENSION_CPACK})" in text
    with Image.open(ROOT / "DoubleUNetSegment.png") as icon:
        assert icon.size == (128, 128)


def test_module_cmakelists_lists_every_file_and_only_existing_ones() -> None:
    text = (MODULE / "CMakeLists.txt").read_text()
    sets = cmake_sets(text)
    scripts, resources = sets["MODULE_PYTHON_SCRIPTS"], sets["MODULE_PYTHON_RESOURCES"]
    assert "slicerMacroBuildScriptedModule(" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    for listed in scripts + resources:
        assert (MODULE / listed).is_file(), f"CMakeLists.txt lists {listed}, which does not exist"
    shipped = {
        p.relative_to(MODULE).as_posix()
        for p in MODULE.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.parts[len(MODULE.parts)] in ("DoubleUNetSegmentLib", "SegmentEditorDoubleUNetLib", "Resources")
    }
    shipped.add("DoubleUNetSegment.py")
    shipped -= {p for p in shipped if p.startswith("Resources/Screenshots/")}  # for the web page, not the module
    assert shipped == set(scripts) | set(resources)
    assert all(s.endswith(".py") for s in scripts) and not any(r.endswith(".py") for r in resources)
    # the engine is copied from the bundle by glob; its source folder must be where the glob looks
    assert "SOURCE_DIR ${BUNDLE_SOURCE_DIR}" in text
    assert (MODULE / "../monai_bundle/doubleunet_segment/inference/worker.py").is_file()
    assert (MODULE / "../monai_bundle/polyp/models/model.json").is_file()


def cmake_globs(text: str, variable: str, source_dir: Path) -> set[str]:
    """The files ``file(GLOB|GLOB_RECURSE <variable> RELATIVE ${BUNDLE_SOURCE_DIR} patterns...)`` would list.

    As CMake evaluates it: GLOB matches ``dir/pattern`` in ``dir`` only, GLOB_RECURSE in ``dir`` and every
    folder below it; paths come back relative to ``source_dir`` (``${BUNDLE_SOURCE_DIR}``).
    """
    found: set[str] = set()
    calls = re.findall(rf"file\(\s*(GLOB|GLOB_RECURSE)\s+{variable}\s+RELATIVE\s+\S+\s+([^)]*)\)", text)
    assert calls, f"no file(GLOB ...) sets {variable}"
    for mode, patterns in calls:
        for pattern in patterns.split():
            path = Path(pattern.replace("${BUNDLE_SOURCE_DIR}", str(source_dir)))
            matches = path.parent.rglob(path.name) if mode == "GLOB_RECURSE" else path.parent.glob(path.name)
            found |= {m.relative_to(source_dir).as_posix() for m in matches if m.is_file()}
    return found


def test_extension_packages_every_engine_module() -> None:
    """Every module of the engine package, subpackages included, is in what CMake copies next to the module."""
    text = (MODULE / "CMakeLists.txt").read_text()
    assert "set(BUNDLE_SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR}/../monai_bundle)" in text
    packaged = cmake_globs(text, "BUNDLE_PYTHON_SCRIPTS", BUNDLE)
    engine = {
        p.relative_to(BUNDLE).as_posix()
        for p in (BUNDLE / "doubleunet_segment").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert {"doubleunet_segment/inference/worker.py", "doubleunet_segment/inference/protocol.py"} <= engine
    assert {p.split("/")[1] for p in engine if p.count("/") > 1} >= {"networks", "data", "inference", "training"}
    assert engine <= packaged, sorted(engine - packaged)
    assert 'SCRIPTS "${BUNDLE_PYTHON_SCRIPTS}"' in text


def test_testing_folder_registers_python_tests() -> None:
    assert "add_subdirectory(Python)" in (MODULE / "Testing/CMakeLists.txt").read_text()
    text = (MODULE / "Testing/Python/CMakeLists.txt").read_text()
    scripts = re.findall(r"slicer_add_python_unittest\(SCRIPT\s+(\S+)\)", text)
    assert scripts
    for script in scripts:
        tree = ast.parse((MODULE / "Testing/Python" / script).read_text())
        assert any(isinstance(n, ast.ClassDef) and n.name.endswith("Test") for n in tree.body)


def test_all_extension_python_compiles(tmp_path: Path) -> None:
    files = sorted(MODULE.rglob("*.py"))
    assert len(files) >= 10
    for i, path in enumerate(files):
        py_compile.compile(str(path), cfile=str(tmp_path / f"{i}.pyc"), doraise=True)


@pytest.mark.skipif(not CHECKER.is_file(), reason=f"Slicer API checker {CHECKER} not found")
def test_slicer_api_names_exist() -> None:
    result = subprocess.run([sys.executable, str(CHECKER), str(MODULE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 unknown names" in result.stdout


def test_module_and_effect_follow_slicer_structure() -> None:
    tree = ast.parse((MODULE / "DoubleUNetSegment.py").read_text())
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body if isinstance(n, ast.ClassDef)}
    assert classes["DoubleUNetSegment"] == ["ScriptedLoadableModule"]
    assert classes["DoubleUNetSegmentWidget"][0] == "ScriptedLoadableModuleWidget"
    assert classes["DoubleUNetSegmentLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["DoubleUNetSegmentTest"] == ["ScriptedLoadableModuleTest"]
    source = (MODULE / "DoubleUNetSegment.py").read_text()
    assert 'slicer.app.connect("startupCompleted()", registerEditorEffect)' in source
    effect = (MODULE / "SegmentEditorDoubleUNetLib/SegmentEditorEffect.py").read_text()
    assert "class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect)" in effect
    assert 'scriptedEffect.name = "DoubleU-Net"' in effect
    assert "self.scriptedEffect.saveStateForUndo()" in effect
    for lib in ("DoubleUNetSegmentLib",):  # the logic library must stay importable without Slicer
        for path in (MODULE / lib).glob("*.py"):
            imported = {
                (n.module or "").split(".")[0] if isinstance(n, ast.ImportFrom) else a.name.split(".")[0]
                for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.Import | ast.ImportFrom)
                for a in n.names
            }
            assert not imported & {"slicer", "qt", "ctk", "vtk"}, path


def test_ui_has_every_widget_the_panel_uses() -> None:
    ui = ET.parse(MODULE / "Resources/UI/DoubleUNetSegment.ui")
    names = {w.get("name") for w in ui.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "DoubleUNetSegment.py").read_text()))
    assert used and used <= names, used - names


def test_extensions_index_entry_is_json_valid_against_the_official_schema() -> None:
    import jsonschema

    folder = MODULE / "ExtensionsIndex"
    assert sorted(p.name for p in folder.iterdir()) == ["DoubleUNetSegment.json"]  # no obsolete .s4ext beside it
    raw = (folder / "DoubleUNetSegment.json").read_bytes()
    assert b"\r" not in raw  # the index's own check: LF line endings only
    entry = json.loads(raw)
    schema = json.loads(INDEX_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(entry, schema)
    assert entry["$schema"].split("#")[0].endswith("/" + INDEX_SCHEMA.name)
    assert entry["category"] == "Segmentation"
    assert urlsplit(entry["scm_url"]).scheme == "https"
    # the entry's name is the CMake project's name, and what it needs to build is what CMakeLists.txt depends on
    assert re.search(r"^project\(DoubleUNetSegment\)", (ROOT / "CMakeLists.txt").read_text(), re.M)
    depends = cmake_sets((ROOT / "CMakeLists.txt").read_text())["EXTENSION_DEPENDS"]
    assert entry.get("build_dependencies", []) == [d for d in depends if d != "NA"]
    bad = dict(entry, minimum_slicer="5.12")  # the schema admits no other keys: the version lives elsewhere
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    mentions = [ROOT / "CMakeLists.txt", ROOT / "README.md", *MODULE.rglob("*.py"), *MODULE.rglob("*.txt")]
    assert not [p for p in mentions if ".s4ext" in p.read_text()]


def test_minimum_slicer_version_is_stated_everywhere_alike() -> None:
    data = json.loads((MODULE / "Resources/slicer_releases.json").read_text())
    minimum = data["minimum"]
    major_minor = ".".join(minimum.split(".")[:2])
    text = (ROOT / "CMakeLists.txt").read_text()
    sets = cmake_sets(text)
    assert sets["DoubleUNetSegment_MINIMUM_SLICER_VERSION"] == [minimum]
    assert "find_package(Slicer ${DoubleUNetSegment_MINIMUM_SLICER_VERSION} REQUIRED)" in text
    assert f"Requires 3D Slicer {major_minor} or later" in sets["EXTENSION_DESCRIPTION"][0]
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Use in 3D Slicer") :]
    section = section[: section.index("\n## ", 3)]
    assert f"3D Slicer {major_minor} or later" in section
    assert not re.search(r"5\.(6|8|10) or later", section)
    # the index entry carries no version (its schema has no such key): the branches it goes to state it
    assert data["extensions_index_branches"] == [major_minor, "main"]
    for branch in data["extensions_index_branches"]:
        assert f"`{branch}`" in section
