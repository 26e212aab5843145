"""Each model's MONAI bundle through MONAI's own entry points, on a tiny subset of the real data."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from helpers import DATA, REPO, SHARED, needs_data

BUNDLES = REPO / "monai_bundle"
NAMES = ["polyp", "hippocampus"]
POLYP = BUNDLES / "polyp"
HIPPO = BUNDLES / "hippocampus"
CONFIGS = POLYP / "configs"
SCHEMA_RELEASE = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1"
TINY = [
    "--subset",
    "2",
    "--image_size",
    "[32,32]",
    "--batch_size",
    "2",
    "--num_workers",
    "0",
    "--bundle_root",
    str(POLYP),
]


def bundle(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_one_bundle_per_shipped_model_sharing_one_package():
    from doubleunet_segment import paths
    from doubleunet_segment.catalog import read_catalog

    assert paths.bundle_names(BUNDLES) == sorted(NAMES) == sorted(read_catalog())
    for name in NAMES:
        root = BUNDLES / name
        for part in (
            "configs/metadata.json",
            "configs/inference.json",
            "configs/train.json",
            "configs/evaluate.json",
            "configs/datalist.json",
            "configs/logging.conf",
            "models/model.json",
            "docs/README.md",
            "docs/data_license.txt",
            "large_files.yml",
            "LICENSE",
        ):
            assert (root / part).is_file(), f"{name}: {part}"
        assert not list(root.rglob("*.py"))  # no copied code: every bundle imports the one package
    meta = {name: json.loads((BUNDLES / name / "configs" / "metadata.json").read_text()) for name in NAMES}
    assert meta["polyp"]["network_data_format"]["inputs"]["image"]["num_channels"] == 3
    assert meta["hippocampus"]["network_data_format"]["inputs"]["image"]["num_channels"] == 3  # 2.5D: 3 slices
    assert meta["hippocampus"]["network_data_format"]["outputs"]["pred"]["num_channels"] == 3
    assert not any("hippocampus" in k for k in meta["polyp"]["eval_metrics"])  # each bundle: its own model's figures
    assert "Kvasir" in (POLYP / "docs" / "data_license.txt").read_text()
    assert "Kvasir" not in (HIPPO / "docs" / "data_license.txt").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_every_config_parses(name):
    from monai.bundle import ConfigParser

    configs = BUNDLES / name / "configs"
    for names in (["train.json"], ["train.json", "evaluate.json"], ["inference.json"]):
        parser = ConfigParser()
        parser.read_config([str(configs / n) for n in names])
        for key in ("network_def", "run", "bundle_root"):
            assert parser.get(key) is not None, f"{names} lacks {key}"
        assert parser.get("bundle_root") == "."  # the bundle's own folder: where it is run from, or --bundle_root
    meta = json.loads((configs / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]


def test_package_and_bundles_share_one_version():
    """One version: the package's (pyproject reads it), each bundle metadata's, and the one SEG provenance records."""
    from importlib.metadata import version

    import doubleunet_segment

    for name in NAMES:
        meta = json.loads((BUNDLES / name / "configs" / "metadata.json").read_text())
        assert doubleunet_segment.__version__ == meta["version"] == version("doubleunet-segment")
    assert 'attr = "doubleunet_segment.__version__"' in (REPO / "pyproject.toml").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_metadata_passes_monai_verify_metadata_against_the_official_schema_it_names(tmp_path, name):
    # The official schema file, read offline from ../shared/monai-schema (a byte-identical copy of the release asset).
    meta_file = BUNDLES / name / "configs" / "metadata.json"
    url = json.loads(meta_file.read_text())["schema"]
    assert url == f"{SCHEMA_RELEASE}/meta_schema_20240725.json"
    schema = SHARED / "monai-schema" / url.rsplit("/", 1)[1]
    proc = bundle("verify_metadata", "--meta_file", str(meta_file), "--filepath", str(schema), cwd=tmp_path)
    assert "metadata is verified with no error" in proc.stdout + proc.stderr


@pytest.mark.parametrize("name", NAMES)
def test_verify_net_in_out(tmp_path, name):
    configs = BUNDLES / name / "configs"
    proc = bundle(
        "verify_net_in_out",
        "network_def",
        "--meta_file",
        str(configs / "metadata.json"),
        "--config_file",
        str(configs / "inference.json"),
        "--bundle_root",
        str(BUNDLES / name),
        "--n",
        "2",
        cwd=tmp_path,
    )
    assert "verified with no error" in proc.stdout + proc.stderr


@needs_data
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("workflow", ["train", "eval", "infer"])
def test_monai_workflow_property_checks_pass(tmp_path, name, workflow):
    """MONAI's own check of the properties a train, evaluate or inference workflow must have (as the model
    zoo's CI runs it: initialise, then ``check_properties``)."""
    from monai.bundle import ConfigWorkflow

    configs = BUNDLES / name / "configs"
    files = {"train": ["train.json"], "eval": ["train.json", "evaluate.json"], "infer": ["inference.json"]}[workflow]
    overrides = {"bundle_root": str(BUNDLES / name), "output_dir": str(tmp_path / "out")}
    if workflow != "infer":
        overrides.update(subset=2, num_workers=0)
    runner = ConfigWorkflow(
        config_file=[str(configs / f) for f in files],
        meta_file=str(configs / "metadata.json"),
        logging_file=False,
        workflow_type=workflow,
        **overrides,
    )
    runner.initialize()
    assert runner.check_properties() == []


def test_ckpt_export_torchscript_matches_eager(tmp_path, polyp_model):
    ts = tmp_path / "model.ts"
    bundle(
        "ckpt_export",
        "network_def",
        "--filepath",
        str(ts),
        "--ckpt_file",
        str(polyp_model),
        "--meta_file",
        str(CONFIGS / "metadata.json"),
        "--config_file",
        str(CONFIGS / "inference.json"),
        "--bundle_root",
        str(POLYP),
        cwd=tmp_path,
    )
    from doubleunet_segment.networks.doubleunet import DoubleUNet

    eager = DoubleUNet(3, 1)
    eager.load_state_dict(torch.load(polyp_model, weights_only=True))
    scripted = torch.jit.load(str(ts))
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        assert (scripted(x) - eager.eval()(x)).abs().max() <= 1e-5


@pytest.fixture(scope="module")
def polyp_export(tmp_path_factory) -> Path:
    """``make export``'s TorchScript file of the shipped polyp model, built once for this module."""
    from doubleunet_segment.release.torchscript_export import main

    target = tmp_path_factory.mktemp("export") / "model.ts"
    assert main(["--model", "polyp", "-o", str(target)]) == 0
    return target


def test_torchscript_export_is_float32_and_the_shipped_model(polyp_export):
    from doubleunet_segment.catalog import load_model, read_catalog

    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(polyp_export), _extra_files=extra)
    assert {p.dtype for p in scripted.parameters()} == {torch.float32}  # as model-zoo TorchScript files are
    meta = json.loads(extra["metadata.json"])
    assert meta["version"] == json.loads((CONFIGS / "metadata.json").read_text())["version"]
    assert json.loads(extra["inference.json"])["bundle_root"] == "."
    polyp = read_catalog()["polyp"]
    assert polyp.weights == POLYP / "models" / "model.pt"
    eager = load_model(polyp)
    x = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        out = scripted(x)  # float32 input as it is: no .float() first
        assert out.dtype == torch.float32
        assert (out - eager(x)).abs().max() <= 1e-5


def test_torchscript_exports_are_built_not_committed():
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "monai_bundle/*/models/*.ts" in ignored
    from doubleunet_segment.networks import weights

    assert not hasattr(weights, "half_storage")  # nothing exports float16 any more


def test_torchscript_export_of_another_shipped_model(tmp_path):
    from doubleunet_segment.catalog import load_model, read_catalog
    from doubleunet_segment.release.torchscript_export import main

    assert main(["--model", "hippocampus", "-o", str(tmp_path / "hippo.ts")]) == 0
    scripted = torch.jit.load(str(tmp_path / "hippo.ts"))
    assert {p.dtype for p in scripted.parameters()} == {torch.float32}
    spec = read_catalog()["hippocampus"]
    eager = load_model(spec)
    x = torch.rand(2, spec.in_channels, 48, 48)  # 3: the 2.5D model takes each slice with its two neighbours
    with torch.no_grad():
        assert (scripted(x) - eager(x)).abs().max() <= 1e-5
    assert [p.name for p in tmp_path.iterdir()] == ["hippo.ts"]  # no temporary file left behind


@pytest.mark.parametrize("name", NAMES)
def test_every_shipped_weights_file_is_listed_in_large_files_with_its_sha256(name):
    import hashlib

    from doubleunet_segment.catalog import read_catalog

    root = BUNDLES / name
    listing = yaml.safe_load((root / "large_files.yml").read_text())
    entries = {e["path"]: e for e in listing["large_files"]}
    assert read_catalog()[name].weights == root / "models" / "model.pt"
    assert set(entries) == {"models/model.pt"}
    for path, entry in entries.items():
        assert set(entry) == {"path", "url", "hash_val", "hash_type"} and entry["hash_type"] == "sha256"
        assert entry["url"].startswith("https://github.com/doubleunet-segment/DoubleUNetSegment/releases/download/")
        assert entry["url"].endswith(f"/{name}-model.pt")  # one release holds every bundle's model.pt
        assert hashlib.sha256((root / path).read_bytes()).hexdigest() == entry["hash_val"]


def _bundles_copy(folder: Path) -> Path:
    """A bundles root holding a copy of the polyp bundle (configs, model.json, large_files.yml, weights)."""
    shutil.copytree(POLYP, folder / "polyp", ignore=shutil.ignore_patterns("runs", "*.ts", "docs"))
    return folder


def test_a_corrupted_shipped_weights_file_is_refused_with_the_way_to_restore_it(tmp_path, monkeypatch, polyp_model):
    import hashlib

    from doubleunet_segment import paths
    from doubleunet_segment.catalog import load_model, resolve_model
    from doubleunet_segment.networks import weights

    root = _bundles_copy(tmp_path / "bundles") / "polyp"
    monkeypatch.setenv(paths.BUNDLES_ENV, str(root.parent))
    hashed = []
    monkeypatch.setattr(weights, "_DIGESTS", {})
    real = weights._hash_file
    monkeypatch.setattr(weights, "_hash_file", lambda *args: hashed.append(args) or real(*args))
    spec = resolve_model("polyp")
    assert spec.weights == root.resolve() / "models" / "model.pt"
    load_model(spec)  # the intact copy loads
    load_model(spec)
    assert len(hashed) == 1  # hashed once per (path, size, mtime) in a process

    data = bytearray(spec.weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: torch.load alone might not notice
    spec.weights.write_bytes(bytes(data))
    expected = yaml.safe_load((root / "large_files.yml").read_text())["large_files"][0]
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(weights.WeightsHashError) as refused:
        load_model(spec)
    message = str(refused.value)
    assert isinstance(refused.value, ValueError)  # the CLI and the Slicer worker report ValueErrors as they are
    for needed in (str(spec.weights), expected["hash_val"], actual, "git checkout -- models/model.pt", expected["url"]):
        assert needed in message, message
    assert len(hashed) == 2  # a changed file (new mtime) is hashed again
    with pytest.raises(weights.WeightsHashError):
        load_model(spec)  # and stays refused from the cached digest
    assert len(hashed) == 2

    # The user's own weights are not listed, so not checked, even inside the bundle folder.
    own = root / "models" / "my_polyp.pt"
    shutil.copy2(polyp_model, own)
    load_model(resolve_model(str(own)))
    assert len(hashed) == 2


@needs_data
def test_training_runs_and_resumes_after_a_stop(tmp_path):
    out = tmp_path / "run"
    train = ["run", "training", "--config_file", str(CONFIGS / "train.json"), *TINY, "--output_dir", str(out)]
    bundle(*train, "--epochs", "1", cwd=tmp_path)
    assert (out / "models" / "checkpoint_epoch=1.pt").is_file()
    assert (out / "models" / "model.pt").is_file()
    proc = bundle(*train, "--epochs", "2", cwd=tmp_path)
    assert "resuming from" in proc.stdout
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # epoch 1 was not trained again
    assert all(0.0 <= float(r["val_mean_dice"]) <= 1.0 for r in rows)
    assert (out / "models" / "checkpoint_epoch=2.pt").is_file()
    assert not (out / "models" / "checkpoint_epoch=1.pt").exists()
    assert any((out / "tensorboard").iterdir())


@needs_data
def test_training_can_start_from_trained_weights(tmp_path, polyp_model):
    # With a learning rate of 0 a run keeps the weights it started from. The start file's kernels are
    # scaled away from the seeded initialisation the run would otherwise build (batch norm follows
    # every convolution, so the outputs stay finite), so a run that ignored it cannot pass.
    start = {k: v * 0.9 if v.dim() == 4 else v for k, v in torch.load(polyp_model, weights_only=True).items()}
    weights = tmp_path / "trained.pt"
    torch.save(start, weights)
    out = tmp_path / "finetune"
    train = ["run", "training", "--config_file", str(CONFIGS / "train.json"), *TINY, "--output_dir", str(out)]
    train += ["--learning_rate", "0", "--init_weights", str(weights)]
    proc = bundle(*train, "--epochs", "1", cwd=tmp_path)
    assert f"starting from the weights in {weights}" in proc.stdout
    saved = torch.load(out / "models" / "checkpoint_epoch=1.pt", weights_only=True)["network"]
    convs = [k for k, v in start.items() if v.dim() == 4]
    assert len(convs) > 30 and all(torch.equal(saved[k].float(), start[k].float()) for k in convs)
    again = bundle(*train, "--epochs", "2", cwd=tmp_path)
    assert "resuming from " + str(out / "models" / "checkpoint_epoch=1.pt") in again.stdout
    assert "starting from the weights" not in again.stdout


def test_starting_weights_that_do_not_fit_name_the_file(tmp_path, hippo_model):
    from doubleunet_segment.networks.doubleunet import DoubleUNet
    from doubleunet_segment.training.handlers import start_from_weights

    with pytest.raises(ValueError, match="hippo_test"):
        start_from_weights(DoubleUNet(3, 1), hippo_model, tmp_path)


@needs_data
def test_evaluate_writes_per_case_metrics(tmp_path, polyp_model):
    out = tmp_path / "eval"
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}']"
    bundle(
        "run",
        "evaluating",
        "--config_file",
        configs,
        *TINY,
        "--ckpt_path",
        str(polyp_model),
        "--output_dir",
        str(out),
        cwd=tmp_path,
    )
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert len(rows) == 2 and {r["class"] for r in rows} == {"Polyp"}
    assert {"dice", "iou", "precision", "recall", "hd95"} <= set(rows[0])
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert [s["statistic"] for s in summary] == ["mean", "median", "std", "ci95_low", "ci95_high"]
    dice = {s["statistic"]: float(s["dice"]) for s in summary}
    assert dice["ci95_low"] <= dice["mean"] <= dice["ci95_high"]


@needs_data
def test_inference_config_segments_images(tmp_path, polyp_model):
    out = tmp_path / "inference"
    bundle(
        "run",
        "inference",
        "--config_file",
        str(CONFIGS / "inference.json"),
        "--bundle_root",
        str(POLYP),
        "--ckpt_path",
        str(polyp_model),
        "--output_dir",
        str(out),
        cwd=tmp_path,
    )
    cases = sorted(p.name for p in out.iterdir())
    assert len(cases) == 3
    for case in cases:
        assert {"segmentation.nii.gz", "segments.json", "mask.png", "overlay.png"} <= {
            p.name for p in (out / case).iterdir()
        }


@needs_data
def test_inference_config_reads_dicom_folders(tmp_path, polyp_model):
    ct = DATA / "dcmqi-ct3slice-seg" / "ct-3slice"
    out = tmp_path / "inference"
    bundle(
        "run",
        "inference",
        "--config_file",
        str(CONFIGS / "inference.json"),
        "--bundle_root",
        str(POLYP),
        "--ckpt_path",
        str(polyp_model),
        "--input",
        str(ct),
        "--output_dir",
        str(out),
        cwd=tmp_path,
    )
    (case,) = list(out.iterdir())
    assert {"segmentation.nii.gz", "seg.dcm", "segments.json"} <= {p.name for p in case.iterdir()}


@needs_data
def test_a_copied_bundle_runs_its_own_configs_and_weights(tmp_path, polyp_model):
    """A bundle copied elsewhere and given retrained weights runs them, from its own folder (bundle_root ".", the
    model zoo's convention); the CLI pointed at the same folder gives the same label map, the shipped model not."""
    from doubleunet_segment.release.ship import record_large_file

    copy = tmp_path / "elsewhere" / "my_polyp"
    shutil.copytree(POLYP, copy, ignore=shutil.ignore_patterns("runs", "*.ts", "docs"))
    shutil.copy2(polyp_model, copy / "models" / "model.pt")
    record_large_file(copy, copy / "models" / "model.pt")  # as shipping retrained weights does
    frame = DATA / "kvasir-seg" / "images" / "cju0qoxqj9q6s0835b43399p4.jpg"
    run = ["run", "inference", "--config_file", "configs/inference.json", "--input", str(frame)]
    # float32 in both front doors: which weights run is the point here, not the fast path (no int8 calibration)
    bundle(*run, "--output_dir", str(tmp_path / "bundle"), "--predictor#precision", "fp32", cwd=copy)
    case = frame.stem
    info = json.loads((tmp_path / "bundle" / case / "segments.json").read_text())
    assert info["model"] == "my_polyp"

    def labels(folder: Path) -> np.ndarray:
        return np.asarray(nib.load(folder / case / "segmentation.nii.gz").dataobj)

    cli = [sys.executable, "-m", "doubleunet_segment.cli", str(frame), "--progress", "none", "--precision", "fp32"]
    for model, out in ((str(copy), "cli-copy"), ("polyp", "cli-shipped")):
        done = subprocess.run([*cli, "--model", model, "-o", str(tmp_path / out)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    assert np.array_equal(labels(tmp_path / "bundle"), labels(tmp_path / "cli-copy"))
    assert not np.array_equal(labels(tmp_path / "bundle"), labels(tmp_path / "cli-shipped"))

    # run from elsewhere without --bundle_root: "." is no bundle, and the message says what to do
    cmd = [sys.executable, "-m", "monai.bundle", *run[:3], str(copy / "configs" / "inference.json"), *run[4:]]
    done = subprocess.run([*cmd, "--output_dir", str(tmp_path / "x")], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0
    assert "is not a DoubleU-Net bundle" in done.stderr and "--bundle_root" in done.stderr


def _study_with_localizer(folder: Path) -> int:
    import nibabel as nib
    import numpy as np
    import pydicom
    from dicom_synth import SynthSeries, write_series, write_triplane_localizer

    volume = np.asarray(nib.load(DATA / "msd-hippocampus/imagesTr/hippocampus_001.nii.gz").dataobj, np.float32)
    common = {"study_uid": pydicom.uid.generate_uid(), "frame_of_reference_uid": pydicom.uid.generate_uid()}
    write_triplane_localizer(volume[:, :, 10:13], folder / "localizer", **common)
    write_series(SynthSeries(volume, series_number=2, description="T1", **common), folder / "t1")
    return 4  # three localizer planes and the T1


def _folder_of(pattern: str, count: int) -> Callable[[Path], int]:
    def make(folder: Path) -> int:
        for n, path in enumerate(sorted(DATA.glob(pattern))[:count]):
            (folder / f"sub{n % 2}").mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, folder / f"sub{n % 2}" / path.name)
        return count

    return make


@needs_data
@pytest.mark.parametrize(
    "make",
    [_study_with_localizer, _folder_of("cvc-clinicdb/images/*.png", 3), _folder_of("msd-hippocampus/imagesTr/*", 2)],
    ids=["study-with-localizer", "folder-of-png", "folder-of-nifti"],
)
def test_inference_config_runs_whole_folders(tmp_path, hippo_model, make):
    """A study folder with a tri-plane localizer, a folder of PNGs and a folder of NIfTIs: every case, exit 0."""
    cases = make(tmp_path / "input")
    out = tmp_path / "inference"
    args = ["--config_file", str(HIPPO / "configs" / "inference.json"), "--bundle_root", str(HIPPO)]
    args += ["--ckpt_path", str(hippo_model)]
    bundle("run", "inference", *args, "--input", str(tmp_path / "input"), "--output_dir", str(out), cwd=tmp_path)
    assert len([case for case in out.iterdir() if (case / "segments.json").is_file()]) == cases


@needs_data
def test_hippocampus_volumes_train_and_evaluate_per_class(tmp_path, hippo_model):
    """Volumes are cut into slices for training; evaluation runs whole volumes slice by slice, per class."""
    configs = [str(HIPPO / "configs" / "train.json")]
    small = ["--subset", "1", "--batch_size", "8", "--num_workers", "0", "--slice_axis", "0", "--image_size", "[64,48]"]
    small += ["--bundle_root", str(HIPPO)]
    out = tmp_path / "run"
    bundle(
        "run",
        "training",
        "--config_file",
        str(configs),
        *small,
        "--epochs",
        "1",
        "--output_dir",
        str(out),
        cwd=tmp_path,
    )
    assert (out / "models" / "model.pt").is_file()
    evaluation = tmp_path / "eval"
    all_configs = str([*configs, str(HIPPO / "configs" / "evaluate.json")])
    bundle(
        "run",
        "evaluating",
        "--config_file",
        all_configs,
        *small,
        "--ckpt_path",
        str(out / "models" / "model.pt"),
        "--output_dir",
        str(evaluation),
        cwd=tmp_path,
    )
    rows = list(csv.DictReader((evaluation / "per_case.csv").open()))
    assert [r["class"] for r in rows] == ["Anterior hippocampus", "Posterior hippocampus"]
    assert float(rows[0]["volume_true_ml"]) > 0.5  # real labels in mL (1 mm voxels)
    assert {"dice", "hd95", "volume_diff_ml"} <= set(rows[0])
