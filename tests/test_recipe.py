"""Training recipes (``configs/recipe.json``): checking, the stage commands, resuming, and one tiny real run."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from doubleunet_segment.release.ship import INPUTS
from doubleunet_segment.training import recipe
from doubleunet_segment.training.recipe import DONE_MARKER, main, read_recipe
from helpers import REPO, needs_data

BUNDLES = REPO / "monai_bundle"
TINY = {"subset": 2, "epochs": 1, "image_size": [32, 32], "batch_size": 2, "num_workers": 0, "val_interval": 1}


def write_recipe(folder: Path, stages: list, **top) -> Path:
    path = folder / "recipe.json"
    path.write_text(json.dumps({"description": "a test recipe", **top, "stages": stages}))
    return path


def commands(out: str) -> list[list[str]]:
    """The stage and promote commands a run printed (the other lines are ``#`` notes and the header)."""
    return [shlex.split(line) for line in out.splitlines() if line.startswith(sys.executable)]


def option(cmd: list[str], key: str) -> str | None:
    return cmd[cmd.index(key) + 1] if key in cmd else None


@pytest.fixture
def fake_training(monkeypatch) -> list[list[str]]:
    """Replace the stage subprocess: record its command and write the stage's best model as training would."""
    calls: list[list[str]] = []

    def run(cmd, check=False):
        calls.append(cmd)
        models = Path(option(cmd, "--output_dir")) / "models"
        models.mkdir(parents=True, exist_ok=True)
        (models / "model.pt").write_bytes(b"weights")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(recipe.subprocess, "run", run)
    return calls


@pytest.mark.parametrize("name", ["polyp", "hippocampus"])
def test_shipped_recipes_validate_and_dry_run_prints_one_command_per_stage(name, tmp_path, capsys):
    bundle = BUNDLES / name
    shipped = read_recipe(bundle / "configs" / "recipe.json")
    assert shipped.description and all(stage.about for stage in shipped.stages)
    assert main([name, "--output_dir", str(tmp_path), "--dry-run"]) == 0
    printed = commands(capsys.readouterr().out)
    *stages, promote = printed
    assert len(stages) == len(shipped.stages)
    for stage, cmd in zip(shipped.stages, stages):
        assert cmd[1:5] == ["-m", "monai.bundle", "run", "training"]
        assert option(cmd, "--config_file") == str(bundle / "configs" / "train.json")
        assert option(cmd, "--bundle_root") == str(bundle)
        assert option(cmd, "--output_dir") == str(tmp_path / stage.name)
        expected = str(tmp_path / stage.init / "models" / "model.pt") if stage.init else None
        assert option(cmd, "--init_weights") == expected
        for key, value in stage.overrides.items():
            assert option(cmd, f"--{key}") == repr(value)
    for previous, cmd in zip(stages, stages[1:]):  # each later stage starts from the one before it
        assert option(cmd, "--init_weights") == str(Path(option(previous, "--output_dir")) / "models" / "model.pt")
    assert promote[1:4] == ["-m", "doubleunet_segment.release.ship", str(tmp_path / shipped.stages[-1].name)]
    assert option(promote, "--name") == name
    last = shipped.stages[-1].overrides
    inputs = {key: value for key, value in last.items() if key in INPUTS}
    assert inputs  # how the model is fed goes to ship, so the candidate is scored as it was trained
    for key, value in inputs.items():
        assert option(promote, f"--{key}") == repr(value)
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_the_shipped_recipes_match_the_model_cards():
    polyp = read_recipe(BUNDLES / "polyp" / "configs" / "recipe.json")
    assert polyp.names() == ["scratch", "finetune"]
    assert polyp.stages[0].overrides == {"image_size": [128, 128], "epochs": 13}
    assert polyp.stages[1].init == "scratch"
    assert polyp.stages[1].overrides == {"image_size": [128, 128], "learning_rate": 3e-05, "epochs": 20}
    hippo = read_recipe(BUNDLES / "hippocampus" / "configs" / "recipe.json")
    assert hippo.names() == ["axis1", "context1"]  # 2D from scratch, then the 2.5D fine-tune
    assert hippo.stages[0].overrides == {
        "slice_axis": 1,
        "image_size": [48, 48],
        "context": 0,
        "in_channels": 1,
        "epochs": 4,
    }
    assert hippo.stages[1].init == "axis1"
    assert hippo.stages[1].overrides == {
        "context": 1,
        "in_channels": 3,
        "lr_patience": 0,
        "epoch_length": 300,
        "epochs": 6,
    }


@pytest.mark.parametrize(
    ("stages", "top", "reason"),
    [
        ([{"name": "a"}, {"name": "a"}], {}, "duplicate stage name 'a'"),
        ([{"name": "a", "init": "b"}, {"name": "b"}], {}, "later stage 'b'"),
        ([{"name": "a", "init": "nowhere"}], {}, "names no stage"),
        ([{"name": "a", "init": "a"}], {}, "the stage itself"),
        ([{"name": "a", "epochs": 3}], {}, "unknown key"),
        ([{"name": "a"}], {"notes": "x"}, "unknown key"),
        ([{"about": "no name"}], {}, "has no name"),
        ([{"name": "../up"}], {}, "plain folder name"),
        ([{"name": "a", "overrides": {"output_dir": "/tmp"}}], {}, "set by the recipe"),
        ([{"name": "a", "overrides": [1]}], {}, "overrides must be an object"),
        ([], {}, "non-empty list"),
    ],
)
def test_bad_recipes_name_the_file_and_the_reason(tmp_path, stages, top, reason):
    path = write_recipe(tmp_path, stages, **top)
    with pytest.raises(ValueError, match=reason) as err:
        read_recipe(path)
    assert str(path) in str(err.value)


def test_bad_recipe_on_the_command_line_is_a_usage_error(tmp_path, capsys):
    path = write_recipe(tmp_path, [{"name": "a"}, {"name": "a"}])
    with pytest.raises(SystemExit) as exit_:
        main(["polyp", "--recipe", str(path), "--output_dir", str(tmp_path / "out"), "--dry-run"])
    assert exit_.value.code == 2
    assert str(path) in capsys.readouterr().err


def test_extra_overrides_replace_stage_values_and_shipped_init_names_a_bundle_file(tmp_path, capsys):
    stages = [{"name": "tune", "init": "shipped:models/model.pt", "overrides": {"epochs": 5, "image_size": [64, 64]}}]
    path = write_recipe(tmp_path, stages)
    argv = ["polyp", "--recipe", str(path), "--output_dir", str(tmp_path), "--dry-run"]
    assert main([*argv, "--", "--epochs", "1", "--num_workers", "0"]) == 0
    cmd, promote = commands(capsys.readouterr().out)
    assert option(cmd, "--init_weights") == str(BUNDLES / "polyp" / "models" / "model.pt")
    assert cmd.count("--epochs") == 1 and option(cmd, "--epochs") == "1"
    assert option(cmd, "--num_workers") == "0"
    assert promote[-3:] == ["--", "--image_size", "[64, 64]"]  # only the inputs go to ship
    with pytest.raises(SystemExit):
        main([*argv, "--", "--output_dir", "/elsewhere"])


def test_stages_run_in_order_leave_markers_and_a_rerun_skips_them(tmp_path, capsys, fake_training):
    path = write_recipe(tmp_path, [{"name": "one"}, {"name": "two", "init": "one"}, {"name": "three", "init": "one"}])
    out = tmp_path / "out"
    assert main(["polyp", "--recipe", str(path), "--output_dir", str(out)]) == 0
    assert [option(cmd, "--output_dir") for cmd in fake_training] == [str(out / n) for n in ("one", "two", "three")]
    assert option(fake_training[2], "--init_weights") == str(out / "one" / "models" / "model.pt")
    assert all((out / n / DONE_MARKER).is_file() for n in ("one", "two", "three"))
    assert "release.ship" in capsys.readouterr().out
    assert main(["polyp", "--recipe", str(path), "--output_dir", str(out)]) == 0
    assert len(fake_training) == 3
    assert capsys.readouterr().out.count("already done") == 3


def test_a_failing_stage_stops_the_recipe_with_status_1(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(
        recipe.subprocess, "run", lambda cmd, check=False: calls.append(cmd) or subprocess.CompletedProcess(cmd, 3)
    )
    path = write_recipe(tmp_path, [{"name": "one"}, {"name": "two", "init": "one"}])
    out = tmp_path / "out"
    assert main(["polyp", "--recipe", str(path), "--output_dir", str(out)]) == 1
    assert len(calls) == 1
    assert "stage one failed" in capsys.readouterr().err
    assert not (out / "one" / DONE_MARKER).exists()


def test_stage_option_starts_later_and_needs_the_earlier_stages_model(tmp_path, capsys, fake_training):
    path = write_recipe(tmp_path, [{"name": "one"}, {"name": "two", "init": "one"}])
    out = tmp_path / "out"
    argv = ["polyp", "--recipe", str(path), "--output_dir", str(out), "--stage", "two"]
    assert main(argv) == 1  # stage one never ran: nothing to start from
    assert "stage two cannot start" in capsys.readouterr().err and not fake_training
    (out / "one" / "models").mkdir(parents=True)
    (out / "one" / "models" / "model.pt").write_bytes(b"weights")
    assert main(argv) == 0
    assert [option(cmd, "--output_dir") for cmd in fake_training] == [str(out / "two")]
    with pytest.raises(SystemExit):
        main([*argv[:-1], "three"])


@needs_data
def test_tiny_two_stage_recipe_on_the_real_data_runs_once_then_skips(tmp_path, capfd, monkeypatch):
    """Two real one-epoch stages of the polyp bundle on 2 + 2 items at 32 x 32; the second starts from the first."""
    path = write_recipe(tmp_path, [{"name": "a", "overrides": TINY}, {"name": "b", "init": "a", "overrides": TINY}])
    out = tmp_path / "out"
    argv = ["polyp", "--recipe", str(path), "--output_dir", str(out)]
    assert main(argv) == 0
    for name in ("a", "b"):
        assert (out / name / "models" / "model.pt").is_file()
        assert (out / name / DONE_MARKER).is_file()
    assert "--init_weights" not in (out / "a" / DONE_MARKER).read_text()  # the marker records the command
    assert str(out / "a" / "models" / "model.pt") in (out / "b" / DONE_MARKER).read_text()
    training = capfd.readouterr()  # the stages' own output too (file-descriptor level)
    assert f"starting from the weights in {out / 'a' / 'models' / 'model.pt'}" in training.out + training.err

    def no_training(*args, **kwargs):
        raise AssertionError("a done stage was run again")

    monkeypatch.setattr(recipe.subprocess, "run", no_training)
    assert main(argv) == 0
    printed = capfd.readouterr().out
    assert printed.count("already done") == 2
    assert [option(cmd, "--name") for cmd in commands(printed)] == ["polyp"]  # only the promote command
