"""CPU training throughput of the polyp bundle at 128 px: images/s of one training step, per data/threads setup.

Issue 18 item 4 asks where a CPU training step's time goes and what the data pipeline costs it. This times the
step exactly as the bundle's ``configs/train.json`` builds it (read with MONAI's ``ConfigParser``: its dataset and
transforms, DoubleU-Net, ``StagewiseLoss``, Adam, batch 8, its bf16 ``AutocastInferer`` where the CPU has bf16) and
the same step with the data, threads and memory layout set up otherwise:

- ``baseline``: release 0.5.0's step: the pipeline as train.json builds it (``train#dataset`` and
  ``train#dataloader`` with its ``num_workers`` DataLoader workers, torch's default threads), the network
  channels-last. The data and thread variants below keep channels-last, so they differ from it in one thing.
- ``cache``: a MONAI ``CacheDataset`` that keeps the deterministic transforms' output (loading, thresholding,
  resizing, normalising: everything before the first random transform), so only the augmentation runs per step,
  in the main process (no DataLoader workers). Note that train.json's ``train#dataset`` is itself such a
  ``CacheDataset`` (cache_rate 1), so this differs from ``baseline`` only in having no workers; ``nocache``
  shows what the cache buys.
- ``cache+threads``: as ``cache`` with ``torch.set_num_threads(os.cpu_count())``: every core computes, and no
  worker process competes with them.
- ``nchw``: as ``baseline`` with the network in the contiguous (NCHW) layout, which train.json's ``memory_format:
  auto`` picks on a CPU that trains in float32 (:mod:`doubleunet_segment.training.memory_format`).
- ``nchw+threads``: as ``cache+threads`` in NCHW.
- ``compile``: as ``cache+threads`` with ``torch.compile`` of the network; its first step (the compilation) is
  reported as ``compile_s``, apart from the steady state, and it is skipped with a note when it fails or takes
  longer than ``--compile-timeout``.
- ``nocache`` (only when asked for with ``--variants``): a plain MONAI ``Dataset`` with train.json's workers: each
  image is read, decoded and resized at every step.

Each variant runs in a fresh process (its peak memory is its own) with the same seed, the same training items and
the same number of steps: ``--warmup`` steps (worker start-up, oneDNN plans, compilation) are not timed, then
``--steps`` are. Per variant: images/s, seconds per step split into data wait (waiting for the loader's next batch)
and compute (forward, loss, backward, optimiser step), the mean loss over the timed steps (the variants see the same
items in the same order, but a loader with workers draws its augmentations from other random streams than one
without, so the losses agree to within the augmentation's noise, not to the bit), and peak resident memory (of the
main process, and of the largest DataLoader worker). The table gives each variant's images/s against
``baseline`` in the same run; the JSON goes to ``benchmarks/results/bench_training.json``.

    python benchmarks/bench_training.py [--steps 20] [--warmup 3] [--variants baseline,nchw,nchw+threads]
    python benchmarks/bench_training.py --quick      # 2 warm-up + 3 timed steps: a smoke check, not a figure
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "monai_bundle" / "polyp"
TRAIN_CONFIG = BUNDLE / "configs" / "train.json"


@dataclass(frozen=True)
class Variant:
    """How one variant sets the step up (see the module docstring for each variant's purpose).

    Attributes:
        data: ``config`` (train.json's dataset and DataLoader workers), ``cache`` (a CacheDataset, batches made in
            this process) or ``nocache`` (a plain Dataset with train.json's workers).
        memory_format: the network's layout, train.json's ``memory_format``.
        all_threads: ``torch.set_num_threads(os.cpu_count())``.
        compile: ``torch.compile`` the network.
    """

    data: str = "config"
    memory_format: str = "channels_last"
    all_threads: bool = False
    compile: bool = False


VARIANTS = {
    "baseline": Variant(),
    "cache": Variant(data="cache"),
    "cache+threads": Variant(data="cache", all_threads=True),
    "nchw": Variant(memory_format="contiguous"),
    "nchw+threads": Variant(data="cache", memory_format="contiguous", all_threads=True),
    "compile": Variant(data="cache", all_threads=True, compile=True),
}
EXTRA_VARIANTS = {"nocache": Variant(data="nocache")}  # run only when named in --variants
ALL_VARIANTS = {**VARIANTS, **EXTRA_VARIANTS}
QUICK_STEPS, QUICK_WARMUP = 3, 2


def peak_rss_gb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory in GiB of this process (or of its largest finished child, ``RUSAGE_CHILDREN``)."""
    return resource.getrusage(who).ru_maxrss / 2**20  # KiB on Linux


def load_config(items: int) -> Any:
    """The polyp bundle's train.json as a ``ConfigParser``, limited to the first ``items`` training items."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(TRAIN_CONFIG))
    parser["bundle_root"] = str(BUNDLE)
    parser["subset"] = items
    parser["device"] = "$torch.device('cpu')"  # a CPU benchmark, whatever else the machine has
    return parser


def cached_transforms(dataset: Any) -> list[str]:
    """Names of the transforms whose output ``dataset`` keeps (none for a dataset that does not cache)."""
    from monai.data import CacheDataset
    from monai.transforms import RandomizableTrait, Transform

    if not isinstance(dataset, CacheDataset):
        return []
    transforms = dataset.transform.transforms
    # the rule CacheDataset itself applies: it caches up to the first random (or non-Transform) callable
    first = dataset.transform.get_index_of_first(
        lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform)
    )
    return [type(t).__name__ for t in transforms[: len(transforms) if first is None else first]]


def configure_data(parser: Any, variant: str, seed: int) -> None:
    """Set ``parser``'s ``train#dataset``, ``train#dataloader`` and ``memory_format`` up as ``variant`` has them.

    Every variant's loader shuffles with its own generator seeded with ``seed``, so all see the same items in the
    same order (MONAI's DataLoader otherwise draws the order from the global generator at different points with
    and without workers); it changes which items come, not how fast.
    """
    workers = int(parser["num_workers"])
    setup = ALL_VARIANTS[variant]
    parser["memory_format"] = setup.memory_format
    if setup.data == "nocache":
        parser["train#dataset"] = {"_target_": "Dataset", "data": "@train#items", "transform": "@train#preprocessing"}
    elif setup.data == "cache":
        # a CacheDataset caching with the config's threads (as train.json's own), then batches made in this process
        parser["train#dataset"] = {
            "_target_": "CacheDataset",
            "data": "@train#items",
            "transform": "@train#preprocessing",
            "cache_rate": 1.0,
            "num_workers": workers,
            "progress": False,
        }
        parser["train#dataloader#num_workers"] = 0
    parser["train#dataloader#generator"] = f"$torch.Generator().manual_seed({int(seed)})"


def measure(variant: str, steps: int, warmup: int, items: int, seed: int) -> dict:
    """Time ``warmup + steps`` training steps of ``variant`` (run in a fresh process by :func:`run_worker`).

    Args:
        variant: a name in :data:`ALL_VARIANTS`.
        steps: timed steps.
        warmup: untimed steps before them.
        items: training items to use (at least one batch).
        seed: ``monai.utils.set_determinism`` seed, set before anything random is built.

    Returns:
        The variant's figures: images/s, seconds per step (data wait and compute), mean loss, peak memory, setup.
    """
    import torch
    from monai.engines.utils import default_prepare_batch
    from monai.utils import set_determinism

    setup = ALL_VARIANTS[variant]
    if setup.all_threads:
        torch.set_num_threads(os.cpu_count() or 1)
    set_determinism(seed=seed)
    parser = load_config(items)
    configure_data(parser, variant, seed)  # before anything is built: setting an item resets what was resolved
    device = parser.get_parsed_content("device")
    network = parser.get_parsed_content("network")  # first, so every variant starts from the same weights
    loss_function = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")
    inferer = parser.get_parsed_content("train#inferer")
    start = time.perf_counter()
    dataset = parser.get_parsed_content("train#dataset")  # a CacheDataset loads and caches here
    dataset_setup_s = time.perf_counter() - start
    loader = parser.get_parsed_content("train#dataloader")
    note = {
        "dataset": type(dataset).__name__,
        "cached_transforms": cached_transforms(dataset),
        "dataset_setup_s": dataset_setup_s,
        "loader_workers": loader.num_workers,
    }
    batch_size = int(loader.batch_size)
    model = torch.compile(network) if setup.compile else network

    data_s, compute_s, step_s, losses = [], [], [], []
    iterator = iter(loader)
    for _ in range(warmup + steps):
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:  # fewer items than steps: a new epoch, its start-up counted as data wait
            iterator = iter(loader)
            batch = next(iterator)
        got = time.perf_counter()
        # SupervisedTrainer._iteration without the ignite engine: the same calls in the same order
        inputs, targets = default_prepare_batch(batch, device, False)
        model.train()
        optimizer.zero_grad(set_to_none=False)
        loss = loss_function(inferer(inputs, model), targets).mean()
        loss.backward()
        optimizer.step()
        value = loss.item()  # the trainer's handlers read it every step; it also waits for the step to end
        done = time.perf_counter()
        data_s.append(got - start)
        compute_s.append(done - got)
        step_s.append(done - start)
        losses.append(value)
    del iterator  # shuts the workers down, so their peak memory is in RUSAGE_CHILDREN
    timed = slice(warmup, warmup + steps)
    total = sum(step_s[timed])
    out = {
        "images_per_s": batch_size * steps / total,
        "s_per_step": total / steps,
        "data_s_per_step": sum(data_s[timed]) / steps,
        "compute_s_per_step": sum(compute_s[timed]) / steps,
        "first_step_s": step_s[0],
        "mean_loss": sum(losses[timed]) / steps,
        "losses": losses[timed],
        "peak_rss_gb": peak_rss_gb(),
        "peak_rss_worker_gb": peak_rss_gb(resource.RUSAGE_CHILDREN) if note["loader_workers"] else None,
        "torch_threads": torch.get_num_threads(),
        "memory_format": parser["memory_format"],
        "batch_size": batch_size,
        "autocast_bf16": bool(getattr(inferer, "enabled", False)),
        **note,
    }
    if setup.compile:
        out["compile_s"] = step_s[0]  # the first step traces and compiles forward and backward
    return out


def run_worker(task: dict, timeout: float | None = None) -> dict:
    """Run ``task`` in a fresh Python process and return its JSON answer, the error, or a timeout note.

    The worker gets its own process group, so a timed-out ``torch.compile`` takes its compile workers with it.
    """
    cmd = [sys.executable, __file__, "--worker", json.dumps(task)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"skipped": f"did not finish within {timeout:.0f} s"}
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(lines[-1])


def machine_info() -> dict:
    """CPU, core count and library versions, so a figure can be told apart from one of another machine."""
    import monai
    import torch
    from doubleunet_segment.inference.cpu import cpu_description
    from doubleunet_segment.inference.inferer import cpu_supports_bf16

    return {
        "cpu": cpu_description(),
        "logical_cores": os.cpu_count(),
        "bf16": cpu_supports_bf16(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def print_table(rows: dict[str, dict]) -> None:
    """One line per variant: images/s, seconds per step (data wait, compute), loss, memory, ratio to baseline."""
    heads = ("img/s", "s/step", "data s", "comp s", "loss")
    print(f"{'variant':14s} " + " ".join(f"{h:>7s}" for h in heads) + f" {'RSS GB':>6s}  vs baseline")
    base = rows.get("baseline", {}).get("images_per_s")
    for name, r in rows.items():
        if "images_per_s" not in r:
            print(f"{name:14s} {r.get('skipped') or r.get('error')}")
            continue
        ratio = f"{r['images_per_s'] / base:5.2f}x" if base else "   -"
        extra = f"  (compile {r['compile_s']:.0f} s)" if "compile_s" in r else ""
        print(
            f"{name:14s} {r['images_per_s']:7.2f} {r['s_per_step']:7.3f} {r['data_s_per_step']:7.3f} "
            f"{r['compute_s_per_step']:7.3f} {r['mean_loss']:7.4f} {r['peak_rss_gb']:6.2f}  {ratio}{extra}"
        )


def main(argv: list[str] | None = None) -> int:
    """Measure the chosen variants, print the table and write the JSON; 1 when the sample data is missing."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 20; --quick: 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; --quick: 2)")
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {', '.join(ALL_VARIANTS)} (default: %(default)s)",
    )
    p.add_argument(
        "--items",
        type=int,
        default=0,
        help="training items to load and cache (default: (warmup + steps) x batch, one epoch for the run)",
    )
    p.add_argument("--seed", type=int, default=0, help="set_determinism seed of every variant (train.json's: 0)")
    p.add_argument("--compile-timeout", type=float, default=300.0, help="seconds the compile variant may take in all")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_WARMUP} warm-up + {QUICK_STEPS} steps: a smoke check")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="folder for bench_training.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))), flush=True)
        return 0
    from doubleunet_segment.paths import sample_data

    steps = args.steps if args.steps is not None else (QUICK_STEPS if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (QUICK_WARMUP if args.quick else 3)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(ALL_VARIANTS))
    if unknown or steps < 1 or warmup < 0:
        p.error(f"unknown variants {unknown}" if unknown else "--steps must be >= 1 and --warmup >= 0")
    if not sample_data().is_dir():
        print(f"no sample data at {sample_data()} (set DOUBLEUNET_SAMPLES)", file=sys.stderr)
        return 1
    batch = int(json.loads(TRAIN_CONFIG.read_text())["batch_size"])
    items = args.items or (warmup + steps) * batch
    settings = {"steps": steps, "warmup": warmup, "items": items, "seed": args.seed, "quick": args.quick}
    report = {
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "machine": machine_info(),
        "config": str(TRAIN_CONFIG.relative_to(REPO)),
        "settings": settings,
        "variants": {},
    }
    m = report["machine"]
    print(f"{m['cpu']}, {m['logical_cores']} cores, bf16 {m['bf16']}; torch {m['torch']}, monai {m['monai']}")
    print(f"polyp train.json at 128 px: {items} items, {warmup} warm-up + {steps} timed steps, seed {args.seed}")
    if m["omp_num_threads"]:
        # the variants inherit it, so baseline's "torch's default threads" are not the default a user gets
        print(f"note: OMP_NUM_THREADS={m['omp_num_threads']} is set; unset it for figures of the default setup")
    for name in variants:
        task = {"variant": name, "steps": steps, "warmup": warmup, "items": items, "seed": args.seed}
        compiles = ALL_VARIANTS[name].compile
        row = run_worker(task, timeout=args.compile_timeout if compiles else None)
        if compiles and "skipped" in row:
            row["skipped"] = f"torch.compile skipped: {row['skipped']} (--compile-timeout)"
        elif compiles and "error" in row:
            row["skipped"] = f"torch.compile skipped: {row['error']}"
        report["variants"][name] = row
        figure = f"{row['images_per_s']:.2f} img/s" if "images_per_s" in row else row.get("skipped") or row.get("error")
        print(f"  {name}: {figure}", flush=True)
    base = report["variants"].get("baseline", {}).get("images_per_s")
    for row in report["variants"].values():
        if base and "images_per_s" in row:
            row["vs_baseline"] = row["images_per_s"] / base
        if "losses" in row and not all(math.isfinite(v) for v in row["losses"]):
            print("warning: a non-finite loss", file=sys.stderr)
    print()
    print_table(report["variants"])
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_training.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
