"""torchrun with gloo and two CPU processes: DDP training follows the one-process loss curve, and
sharded batch inference segments every case exactly once (shard arguments: test_sharding.py)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DATA, REPO, needs_data

pytestmark = needs_data
BUNDLE = REPO / "monai_bundle" / "polyp"
TINY = ["--subset", "4", "--image_size", "[32,32]", "--num_workers", "0", "--epochs", "3"]
# No augmentation and no bf16: the two runs then differ only in how BatchNorm sees the batch.
EXACT = ["--augmentation", "[]", "--cpu_bf16", "false"]


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def torchrun(n: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={n}",
        f"--master_port={free_port()}",
        *args,
    ]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DOUBLEUNET_SAMPLES": str(DATA)}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(output_dir: Path) -> list[float]:
    with (output_dir / "metrics.csv").open() as f:
        return [float(row["train_loss"]) for row in csv.DictReader(f)]


def test_ddp_training_follows_the_single_process_loss_curve(tmp_path):
    bundle = ["-m", "monai.bundle", "run", "training"]
    single, multi = tmp_path / "one", tmp_path / "two"
    run(
        [sys.executable, *bundle, "--config_file", "configs/train.json", *TINY, *EXACT, "--batch_size", "4"]
        + ["--output_dir", str(single)],
        BUNDLE,
    )
    configs = "['configs/train.json','configs/multi_gpu_train.json']"
    run(
        torchrun(2, *bundle, "--config_file", configs, *TINY, *EXACT, "--batch_size", "2")
        + ["--output_dir", str(multi)],
        BUNDLE,
    )
    one, two = losses(single), losses(multi)
    assert len(one) == len(two) == 3
    assert two == pytest.approx(one, rel=0.03)  # same global batch of 4; BatchNorm per rank on CPU
    assert two[-1] < two[0]
    assert (multi / "models" / "model.pt").is_file()  # rank 0 saved the best model


def test_sharded_inference_segments_every_case_once(tmp_path, hippo_model):
    images = sorted((DATA / "msd-hippocampus" / "imagesTr").glob("*.nii.gz"))[:5]
    cli = ["-m", "doubleunet_segment.cli", *map(str, images), "-o", str(tmp_path / "out")]
    opts = ["--model", str(hippo_model), "--format", "nifti", "--progress", "json", "--precision", "fp32"]
    done = run(torchrun(2, *cli, *opts, "--backend", "torch"), REPO)
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    finished = [e["case"] for e in events if e["event"] == "done"]
    assert sorted(finished) == sorted(p.name.split(".")[0] for p in images)  # each exactly once
    assert len({p.parent.name for p in (tmp_path / "out").glob("*/segmentation.nii.gz")}) == len(images)
