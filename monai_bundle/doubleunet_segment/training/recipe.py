"""Reproduce a shipped model with one command: run the training stages of a bundle's ``configs/recipe.json``.

A recipe lists the training runs that made the shipped weights, in order, each a run of the bundle's own
``configs/train.json`` with MONAI's bundle runner (one subprocess per stage)::

    {"description": "...", "stages": [
        {"name": "scratch", "about": "why this stage", "overrides": {"epochs": 13, "image_size": [128, 128]}},
        {"name": "finetune", "about": "...", "init": "scratch", "overrides": {"learning_rate": 3e-05}}
    ]}

- ``name`` (required) names the stage and its output folder ``<output_dir>/<name>``; ``about`` says why it is
  there (and what it cost); ``overrides`` are train.json keys and their values (``--key value`` for the runner).
- ``init`` (optional) starts the stage from trained weights: the name of an earlier stage (its best model,
  ``<output_dir>/<init>/models/model.pt``) or ``"shipped:<path relative to the bundle>"`` (a file of the bundle).

A stage that completes leaves a ``recipe_stage_done`` marker in its folder and is skipped when the recipe runs
again, so the same command continues a killed recipe (the training config resumes a stopped stage from its newest
checkpoint). At the end the recipe prints the :mod:`doubleunet_segment.release.ship` command that promotes the last
stage's model, which ships it only if it beats the shipped one.

Command line (see :func:`main`)::

    python -m doubleunet_segment.training.recipe polyp --dry-run
    python -m doubleunet_segment.training.recipe polyp -- --num_workers 0
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import paths
from ..data.atomic import atomic_write_text
from ..release.ship import INPUTS, as_overrides, parse_overrides

__all__ = [
    "DONE_MARKER",
    "RECIPE_NAME",
    "RESERVED_KEYS",
    "SHIPPED_PREFIX",
    "Recipe",
    "Stage",
    "init_weights",
    "main",
    "promote_command",
    "read_recipe",
    "resolve_bundle",
    "run_recipe",
    "stage_command",
]

RECIPE_NAME = "recipe.json"  # <bundle>/configs/recipe.json
DONE_MARKER = "recipe_stage_done"  # <output_dir>/<stage>/recipe_stage_done: written once the stage exited 0
SHIPPED_PREFIX = "shipped:"  # "init": "shipped:models/model.pt" starts from a file of the bundle
RECIPE_KEYS = frozenset({"description", "stages"})
STAGE_KEYS = frozenset({"name", "about", "init", "overrides"})
# Set by the recipe itself for every stage: an override of one of them would run the stage somewhere else.
RESERVED_KEYS = frozenset({"bundle_root", "config_file", "init_weights", "output_dir"})
STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a plain folder name
OVERRIDE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_#]*")  # a config id, nested ones with '#' (train#dataset#...)


@dataclass(frozen=True)
class Stage:
    """One training run of a recipe.

    Attributes:
        name: the stage's name and output folder.
        about: why the stage is there (free text).
        init: None (from scratch), an earlier stage's name, or ``shipped:<path relative to the bundle>``.
        overrides: train.json keys and their values.
    """

    name: str
    about: str = ""
    init: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """A bundle's training recipe, as read and checked by :func:`read_recipe`.

    Attributes:
        path: the recipe file.
        description: what the recipe reproduces.
        stages: the stages, in the order they run.
    """

    path: Path
    description: str
    stages: tuple[Stage, ...]

    def names(self) -> list[str]:
        """The stage names, in order."""
        return [stage.name for stage in self.stages]


def _stage(path: Path, index: int, data: Any, earlier: list[str], later: set[str]) -> Stage:
    """Check one stage entry of ``path`` (``earlier``: the names before it, ``later``: those after it)."""

    def bad(reason: str) -> ValueError:
        return ValueError(f"{path}: stage {index + 1}: {reason}")

    if not isinstance(data, dict):
        raise bad(f"must be an object, got {type(data).__name__}")
    unknown = sorted(set(data) - STAGE_KEYS)
    if unknown:
        raise bad(f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(STAGE_KEYS))})")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise bad("has no name")
    if not STAGE_NAME.fullmatch(name):
        raise bad(f"name {name!r} is not a plain folder name (letters, digits, '_', '-', '.')")
    if name in earlier:
        raise bad(f"duplicate stage name {name!r}")
    about = data.get("about", "")
    if not isinstance(about, str):
        raise bad(f"{name}: about must be text")
    init = data.get("init")
    if init is not None:
        if not isinstance(init, str) or not init:
            raise bad(f"{name}: init must be a stage name or {SHIPPED_PREFIX}<path>")
        if init.startswith(SHIPPED_PREFIX):
            if not init[len(SHIPPED_PREFIX) :].strip():
                raise bad(f"{name}: init {init!r} names no file (use {SHIPPED_PREFIX}<path relative to the bundle>)")
        elif init == name:
            raise bad(f"{name}: init names the stage itself")
        elif init in later:
            raise bad(f"{name}: init names the later stage {init!r}; a stage can start only from an earlier one")
        elif init not in earlier:
            raise bad(f"{name}: init names no stage of the recipe: {init!r}")
    overrides = data.get("overrides", {})
    if not isinstance(overrides, dict):
        raise bad(f"{name}: overrides must be an object of train.json keys and values")
    for key in overrides:
        if not OVERRIDE_KEY.fullmatch(key):
            raise bad(f"{name}: override key {key!r} is not a config id")
        if key in RESERVED_KEYS:
            raise bad(f"{name}: override {key!r} is set by the recipe itself (use init for starting weights)")
    return Stage(name=name, about=about, init=init, overrides=dict(overrides))


def read_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe file (format: see the module docstring).

    Args:
        path: the ``recipe.json``.

    Returns:
        The recipe, its stages in order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not JSON, or not a valid recipe: unknown keys, no stages, a stage without a name,
            duplicate names, an ``init`` naming a later or unknown stage, overrides that are not an object or that
            set a key the recipe sets itself (:data:`RESERVED_KEYS`). The message names the file and the reason.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe must be a JSON object with a 'stages' list")
    unknown = sorted(set(data) - RECIPE_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(RECIPE_KEYS))})")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"{path}: description must be text")
    entries = data.get("stages")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: 'stages' must be a non-empty list of stages")
    names = [entry.get("name") if isinstance(entry, dict) else None for entry in entries]
    stages: list[Stage] = []
    for index, entry in enumerate(entries):
        later = {n for n in names[index + 1 :] if isinstance(n, str)}
        stages.append(_stage(path, index, entry, [s.name for s in stages], later))
    return Recipe(path=path, description=description, stages=tuple(stages))


def resolve_bundle(name_or_folder: str | Path) -> Path:
    """The bundle folder: ``name_or_folder`` itself when it is a folder, else the shipped bundle of that name.

    Raises:
        FileNotFoundError: neither holds ``configs/train.json`` (or no bundles are installed at all).
    """
    folder = Path(name_or_folder).expanduser()
    if not folder.is_dir():
        folder = paths.bundle_dir(str(name_or_folder))
    if not (folder / "configs" / "train.json").is_file():
        raise FileNotFoundError(
            f"{name_or_folder}: neither a bundle folder nor a shipped bundle's name (no {folder}/configs/train.json)"
        )
    return folder.resolve()


def init_weights(stage: Stage, bundle: Path, output_dir: Path) -> Path | None:
    """The weights ``stage`` starts from: an earlier stage's best model, a file of the bundle, or None.

    The file need not exist yet (a dry run plans stages that have not run).
    """
    if stage.init is None:
        return None
    if stage.init.startswith(SHIPPED_PREFIX):
        return bundle / stage.init[len(SHIPPED_PREFIX) :].strip()
    return output_dir / stage.init / "models" / "model.pt"


def stage_command(bundle: Path, stage: Stage, output_dir: Path, extra: dict[str, Any] | None = None) -> list[str]:
    """The bundle-runner command of one stage.

    Args:
        bundle: the bundle folder.
        stage: the stage.
        output_dir: the recipe's output folder; the stage writes to ``<output_dir>/<stage name>``.
        extra: overrides for every stage (they replace the stage's own values of the same keys).

    Returns:
        ``python -m monai.bundle run training --config_file ... --bundle_root ... --output_dir ...
        [--init_weights ...] <overrides>``, values as Python literals (as the runner parses them).
    """
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training"]
    cmd += ["--config_file", str(bundle / "configs" / "train.json"), "--bundle_root", str(bundle)]
    cmd += ["--output_dir", str(output_dir / stage.name)]
    weights = init_weights(stage, bundle, output_dir)
    if weights is not None:
        cmd += ["--init_weights", str(weights)]
    return cmd + as_overrides({**stage.overrides, **(extra or {})})


def promote_command(bundle: Path, recipe: Recipe, output_dir: Path, extra: dict[str, Any] | None = None) -> list[str]:
    """The :mod:`doubleunet_segment.release.ship` command that promotes the last stage's best model.

    It passes the last stage's input overrides (``image_size``, ``slice_axis``, ``context``, ``in_channels``:
    what ship records in ``models/model.json``), so the candidate is evaluated as it was trained.
    """
    last = recipe.stages[-1]
    values = {**last.overrides, **(extra or {})}
    inputs = {key: value for key, value in values.items() if key in INPUTS}
    cmd = [sys.executable, "-m", "doubleunet_segment.release.ship", str(output_dir / last.name), "--name", bundle.name]
    return cmd + (["--", *as_overrides(inputs)] if inputs else [])


def run_recipe(
    bundle: Path,
    recipe: Recipe,
    output_dir: Path,
    *,
    start: str | None = None,
    extra: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> int:
    """Run the recipe's stages in order (each a subprocess), skipping those already done; prints progress.

    Args:
        bundle: the bundle folder.
        recipe: the checked recipe.
        output_dir: each stage writes to ``<output_dir>/<stage name>``.
        start: run only from this stage on (the stages before it are neither run nor checked).
        extra: overrides for every stage.
        dry_run: print each stage's command (shell-quoted) and run nothing.

    Returns:
        0 when every stage is done, 1 when a stage failed or cannot start (its starting weights are missing);
        the stages after it are not run.

    Raises:
        ValueError: ``start`` names no stage of the recipe.
    """
    names = recipe.names()
    if start is not None and start not in names:
        raise ValueError(f"{recipe.path}: no stage named {start!r} (stages: {', '.join(names)})")
    stages = recipe.stages[names.index(start) if start else 0 :]
    print(f"recipe {recipe.path}: {recipe.description}" if recipe.description else f"recipe {recipe.path}")
    for stage in stages:
        cmd = stage_command(bundle, stage, output_dir, extra)
        marker = output_dir / stage.name / DONE_MARKER
        print(f"# stage {stage.name}" + (f": {stage.about}" if stage.about else ""), flush=True)
        if marker.is_file():
            print(f"# stage {stage.name} already done ({marker} exists): skipped; delete it to run the stage again")
            continue
        if dry_run:
            print(shlex.join(cmd), flush=True)
            continue
        weights = init_weights(stage, bundle, output_dir)
        if weights is not None and not weights.is_file():
            print(f"stage {stage.name} cannot start: its starting weights {weights} do not exist", file=sys.stderr)
            return 1
        print(f"$ {shlex.join(cmd)}", flush=True)
        code = subprocess.run(cmd, check=False).returncode
        if code != 0:
            print(
                f"stage {stage.name} failed (exit status {code}); the stages after it were not run. "
                "Run the same command again to resume it from its newest checkpoint.",
                file=sys.stderr,
            )
            return 1
        atomic_write_text(marker, shlex.join(cmd) + "\n", overwrite=True)
        print(f"# stage {stage.name} done: {output_dir / stage.name / 'models' / 'model.pt'}", flush=True)
    print("# promote the result (ships it only if it beats the shipped model):")
    print(shlex.join(promote_command(bundle, recipe, output_dir, extra)), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m doubleunet_segment.training.recipe BUNDLE [--recipe FILE] [--output_dir DIR] [--stage NAME]
    [--dry-run] [-- OVERRIDES]``.

    Returns:
        0 when every stage is done (or, with ``--dry-run``, printed), 1 when a stage failed; 2 (argparse's
        usage error) for a bad recipe, bundle, stage name or overrides.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    extra_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="python -m doubleunet_segment.training.recipe",
        usage="%(prog)s BUNDLE [--recipe FILE] [--output_dir DIR] [--stage NAME] [--dry-run] [-- OVERRIDES]",
        description=__doc__.split("\n\n")[0],
        epilog="OVERRIDES (after --) are train.json --key value pairs for every stage, e.g. -- --num_workers 0",
    )
    parser.add_argument("bundle", help="a shipped bundle's name (polyp, hippocampus) or a bundle folder")
    parser.add_argument("--recipe", type=Path, help=f"recipe file (default: <bundle>/configs/{RECIPE_NAME})")
    parser.add_argument("--output_dir", type=Path, help="where the stages write (default: <bundle>/runs/recipe)")
    parser.add_argument("--stage", help="run only from this stage on")
    parser.add_argument("--dry-run", action="store_true", help="print each stage's command and run nothing")
    args = parser.parse_args(argv)
    try:
        bundle = resolve_bundle(args.bundle)
        recipe = read_recipe(args.recipe or bundle / "configs" / RECIPE_NAME)
        extra = parse_overrides(extra_args)
        reserved = sorted(RESERVED_KEYS & set(extra))
        if reserved:
            raise ValueError(f"overrides {', '.join(reserved)} are set by the recipe (use --output_dir)")
        if args.stage is not None and args.stage not in recipe.names():
            raise ValueError(f"{recipe.path}: no stage named {args.stage!r} (stages: {', '.join(recipe.names())})")
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    output_dir = (args.output_dir or bundle / "runs" / "recipe").expanduser().resolve()
    return run_recipe(bundle, recipe, output_dir, start=args.stage, extra=extra, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
