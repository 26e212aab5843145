"""The command line itself: usage errors exit 2 with a clear message, --help, the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest
from doubleunet_segment.cli import main
from helpers import DATA, needs_data

HIPPO = DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
CT = DATA / "dcmqi-ct3slice-seg" / "ct-3slice"

pytestmark = needs_data


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.nii.gz"], "input not found"),
        ([str(HIPPO), "--format", "jpeg"], "unknown --format"),
        ([str(HIPPO), "--model", "nosuchmodel"], "unknown model"),
        ([str(Path(__file__))], "not a DICOM folder, volume"),
        ([str(HIPPO), "--model", "polyp", "--localize", "on"], "was not trained on crops"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "-o", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_refuses_to_write_into_an_input_folder(tmp_path, polyp_model, capsys):
    folder = tmp_path / "study"
    shutil.copytree(CT, folder)
    with pytest.raises(SystemExit):
        main([str(folder), "-o", str(folder / "results"), "--model", str(polyp_model)])
    assert "lies inside input folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in CT.iterdir())


def test_console_script_json_progress(tmp_path, hippo_model):
    exe = Path(sys.executable).with_name("doubleunet-segment")
    cmd = [str(exe), str(HIPPO), "-o", str(tmp_path), "--model", str(hippo_model), "--progress", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[0]["event"] == "device" and "CPU" in events[0]["reason"]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == nib.load(HIPPO).shape[2]
    assert events[-1]["event"] == "done"


def test_help_explains_outputs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "segments.json" in text and "--overwrite" in text and "Exit status" in text


def test_notes_reach_the_user_without_progress_bars(tmp_path, polyp_model, capsys):
    """``--progress none`` drops the bars, not the notes: a skipped file is still named on stderr."""
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (40, 30), (120, 60, 30)).save(folder / "pic.png")
    (folder / "scan.dcm").write_bytes(b"DICM" * 10)  # not DICOM, whatever its name says
    args = [str(folder), "-o", str(tmp_path / "out"), "--model", str(polyp_model), "--progress", "none"]
    assert main([*args, "--precision", "fp32", "--backend", "torch"]) == 0
    err = capsys.readouterr().err
    assert "scan.dcm" in err and "1 of 1 case(s) segmented" in err


def test_existing_output_message_names_the_overwrite_flag(tmp_path, polyp_model, capsys):
    """The library says ``overwrite=True``; at the command line the message names ``--overwrite``."""
    picture = tmp_path / "pic.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (120, 60, 30)).save(picture)
    args = [str(picture), "-o", str(tmp_path / "out"), "--model", str(polyp_model), "--progress", "none"]
    args += ["--precision", "fp32", "--backend", "torch"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err and "pic" in err


@pytest.mark.parametrize("where", ["file", "/dev/null/x"])
def test_an_output_location_that_cannot_be_a_folder_is_refused_up_front(tmp_path, polyp_model, where, capsys):
    output = tmp_path / "seg.nii.gz"
    output.write_text("")
    if where != "file":
        output = Path(where)
    with pytest.raises(SystemExit) as exit_info:
        main([str(HIPPO), "-o", str(output), "--model", str(polyp_model), "--progress", "none"])
    assert exit_info.value.code == 2
    assert "-o" in capsys.readouterr().err
    assert output.is_file() or not output.exists()


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--threshold", "nan"], "--threshold"),
        (["--threshold", "1.5"], "--threshold"),
        (["--threshold", "-1"], "--threshold"),
        (["--threshold", "0"], "--threshold"),
        (["--threshold", "1"], "--threshold"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "-3"], "--batch-size"),
    ],
)
def test_out_of_range_threshold_and_batch_size_exit_2_naming_the_flag(tmp_path, args, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(HIPPO), "-o", str(tmp_path / "out"), *args])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sigterm_stops_cleanly_keeping_finished_cases_and_no_temporary_files(tmp_path, hippo_model):
    import signal

    inputs = []
    for i in range(4):
        inputs.append(tmp_path / "in" / f"case{i}.nii.gz")
        inputs[-1].parent.mkdir(exist_ok=True)
        shutil.copy(HIPPO, inputs[-1])
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("doubleunet-segment")
    cmd = [str(exe), *map(str, inputs), "-o", str(out), "--model", str(hippo_model), "--progress", "json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if json.loads(line)["event"] == "progress":
                proc.send_signal(signal.SIGTERM)
                break
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "interrupted:" in err and "finished cases are kept" in err
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
