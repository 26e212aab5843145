"""``make bench``: how close DoubleU-Net inference gets to this machine's own convolution peak.

One run measures and prints a table, and writes it as JSON plus a bar chart (PNG):

1. the machine's peak: a 3x3 conv 512->512 at 32x32, batch 8, channels_last (fp32, and bf16/fp16
   where the device has them): the best any convolutional network can hope for here;
2. DoubleU-Net per slice at each size for each path (the authors' Keras original = the reference; eager fp32
   NCHW; channels_last + inference_mode; bf16/fp16 autocast; ONNX Runtime fp32; ONNX Runtime int8, the engine's
   own quantized model; batched): seconds per slice, the ratio against the Keras original, GFLOP/s (counted
   with FlopCounterMode), % of the peak of the same precision, speed-up over eager fp32, peak resident memory,
   and the masks' Dice against fp32 (the trained polyp model on its validation frames at its own 128 px, pooled
   and worst frame). The Keras original is timed in the same run where TensorFlow is installed (the ``keras``
   extra, :mod:`keras_original`); otherwise its figure recorded in issue 18 stands in, labelled so;
3. end to end: a real volume (brain1 MR) resampled to 512x512xN, read, segmented and written through
   the ``doubleunet-segment`` command line, with a model that sees whole 512x512 slices, with its stage times
   (read, preprocess = to the model's grid, inference, postprocess = back to the input grid, write);
4. memory: a 512x512x600 volume streamed through the predictor (stand-in network), peak resident memory.

Each measurement runs in its own process, so its peak memory is its own. Timings are the best of
``--repeats`` after a warm-up. Usage: ``python benchmarks/bench_inference.py [--quick] [--device cuda]``;
``--paths-only`` (``make bench-quick``) times 512 x 512 batch 1 for each path and for the path the engine picks by
itself, and writes ``bench_quick.json``: ``{"chosen": NAME, "paths": {NAME: {"s_per_image", "dice_vs_fp32"}}}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DOUBLEUNET_SAMPLES", REPO.parent / "shared" / "data"))
VOLUME_SOURCE = DATA / "pyradiomics-3d" / "nifti" / "brain1_image.nii.gz"
SHIPPED = REPO / "monai_bundle" / "polyp" / "models" / "model.pt"
PEAK_SHAPE = (8, 512, 32, 32)  # batch, channels, H, W of the reference convolution
# The authors' Keras DoubleU-Net (TF 2.21, predict_on_batch), 512 x 512 batch 1, measured in issue 18 on a 2-core
# AMD EPYC with avx512_bf16 and avx512_vnni: used only where TensorFlow is not installed, and labelled so.
KERAS_RECORDED = {512: 2.234}
KERAS_RECORDED_ON = "recorded in issue 18 on a 2-core EPYC with avx512_bf16/vnni, not this machine"
DICE_FRAMES = 16  # polyp validation frames whose masks are compared with fp32


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def best_time(fn, repeats: int, device: str) -> float:
    """Best wall time of ``fn`` after one warm-up (the first call builds oneDNN/cuDNN plans)."""
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def dtype_of(precision: str):
    import torch

    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def measure_peak(device: str, precision: str, repeats: int) -> dict:
    import torch

    n, c, h, w = PEAK_SHAPE
    torch.backends.cudnn.benchmark = True
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device, memory_format=torch.channels_last).eval()
    x = torch.rand(n, c, h, w, device=device).contiguous(memory_format=torch.channels_last)
    dtype = dtype_of(precision)

    def run() -> None:
        with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            conv(x)

    seconds = best_time(run, max(repeats, 5), device)
    flops = 2 * n * c * c * 9 * h * w
    return {"precision": precision, "seconds": seconds, "gflops": flops / seconds / 1e9}


def build_network(channels: int = 3):
    """The shipped polyp weights if present, else a seeded random DoubleU-Net (timing ignores weights)."""
    import torch
    from doubleunet_segment.networks.doubleunet import DoubleUNet
    from doubleunet_segment.networks.weights import load_weights

    torch.manual_seed(0)
    net = DoubleUNet(in_channels=channels, out_channels=1)
    if SHIPPED.is_file() and channels == 3:
        load_weights(net, SHIPPED)
    return net.eval()


def count_flops(size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = build_network()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(torch.rand(1, 3, size, size))
    return float(counter.get_total_flops())


def measure_path(device: str, path: str, size: int, batch: int, repeats: int) -> dict:
    """Seconds per slice of one path at one size (run in a fresh process by :func:`run_worker`)."""
    import torch

    torch.backends.cudnn.benchmark = True
    net = build_network().to(device)
    x = torch.rand(batch, 3, size, size, device=device)
    if path == "keras":
        import keras_original

        seconds = keras_original.seconds_per_image(size, batch, repeats)
        return {"seconds_per_slice": seconds, "peak_rss_gb": peak_rss_gb()}
    if path == "onnx_fp32":
        from doubleunet_segment.inference.onnx_runtime import OnnxNetwork, export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            model = OnnxNetwork(export_onnx(net.cpu(), Path(tmp) / "m.onnx"), device)
            seconds = best_time(lambda: model(x), repeats, device)
    elif path == "onnx_int8":
        model = engine_predictor("fp32", "onnx").int8_network()  # the engine's own quantized shipped polyp model
        seconds = best_time(lambda: model(x), repeats, device)
    else:
        precision = path.rsplit("_", 1)[-1]
        channels_last = path != "eager_fp32"
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = dtype_of(precision)
        grad = torch.inference_mode if channels_last else torch.no_grad

        def run() -> None:
            with grad(), torch.autocast(device, dtype=dtype, enabled=dtype is not None):
                net(x)

        seconds = best_time(run, repeats, device)
    out = {"seconds_per_slice": seconds / batch, "peak_rss_gb": peak_rss_gb()}
    if device == "cuda":
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


PATH_SETTINGS = {  # bench path -> the engine's (precision, backend)
    "eager_fp32": ("fp32", "torch"),
    "cl_fp32": ("fp32", "torch"),
    "cl_bf16": ("bf16", "torch"),
    "cl_fp16": ("fp16", "torch"),
    "onnx_fp32": ("fp32", "onnx"),
    "onnx_int8": ("int8", "onnx"),
}


def engine_predictor(precision: str, backend: str, device: str = "cpu"):
    """The shipped polyp model in the engine at a given precision and backend (``auto``: its own choice)."""
    from doubleunet_segment.catalog import resolve_model
    from doubleunet_segment.inference.predictor import Predictor

    return Predictor(resolve_model("polyp"), device, precision=precision, backend=backend)


def measure_dice(device: str, path: str) -> dict:
    """The masks of ``path`` against fp32 PyTorch on the polyp model's validation frames: pooled and worst Dice."""
    from doubleunet_segment.inference.precision import check_precision, validation_images

    reference = engine_predictor("fp32", "torch", device)
    candidate = engine_predictor(*PATH_SETTINGS[path], device)
    images = validation_images(reference.spec, DICE_FRAMES)

    def labels(image, precision: str):
        predictor = reference if precision == "fp32" else candidate
        return predictor.postprocessing(predictor.predict(image))

    check = check_precision(labels, images, "candidate")
    return {"dice_vs_fp32": check.dice, "worst_dice_vs_fp32": check.min_dice, "frames": check.images}


def measure_chosen(device: str) -> dict:
    """The path the engine picks by itself for the shipped polyp model, and why."""
    predictor = engine_predictor("auto", "auto", device)
    choice = (predictor.precision, predictor.backend)
    name = next((k for k, v in PATH_SETTINGS.items() if v == choice and k != "eager_fp32"), "cl_fp32")
    return {"chosen": name, "why": predictor.path_reason}


def measure_volume(device: str, slices: int, precision: str, backend: str) -> dict:
    """Read, segment and write a 512x512xN volume through the command line; seconds and peak memory."""
    import nibabel as nib
    import numpy as np
    import torch
    import torch.nn.functional as F
    from doubleunet_segment.cli import main
    from doubleunet_segment.networks.doubleunet import DoubleUNet

    tmp = Path(tempfile.mkdtemp(prefix="bench-volume-"))
    os.environ["DOUBLEUNET_CACHE"] = str(tmp / "cache")
    src = nib.load(VOLUME_SOURCE)
    data = torch.from_numpy(np.asarray(src.dataobj, dtype=np.float32))[None, None]
    data = F.interpolate(data, size=(512, 512, slices), mode="trilinear", align_corners=False)[0, 0].numpy()
    affine = src.affine @ np.diag([src.shape[0] / 512, src.shape[1] / 512, src.shape[2] / slices, 1.0])
    volume = tmp / "brain1_512.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), volume)
    torch.manual_seed(0)
    weights = tmp / "ct512.pt"
    torch.save(DoubleUNet(in_channels=1, out_channels=1).state_dict(), weights)
    spec = {"in_channels": 1, "out_channels": 1, "normalization": "zscore", "inplane": "resize"}
    weights.with_suffix(".json").write_text(json.dumps({**spec, "roi_size": [512, 512], "segments": "polyp"}))
    args = [str(volume), "-o", str(tmp / "out"), "--model", str(weights), "--format", "nifti", "--progress", "none"]
    args += ["--device", device, "--precision", precision, "--backend", backend]
    import contextlib
    import io
    import re

    notes = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(notes):
        status = main(args)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError("the command line failed on the benchmark volume")
    found = re.search(r"stage times: ([^\n]*)", notes.getvalue())
    stages = {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+) s", found.group(1))} if found else {}
    return {"seconds": seconds, "slices": slices, "peak_rss_gb": peak_rss_gb(), "stages": stages}


def measure_memory(slices: int, normalization: str) -> dict:
    """Peak memory of streaming a 512x512xN volume through the predictor with a 1x1-conv stand-in network."""
    import numpy as np
    import torch
    from doubleunet_segment.catalog import ModelSpec
    from doubleunet_segment.inference.predictor import Predictor

    spec = ModelSpec(name="stand-in", weights=Path("none"), in_channels=3, normalization=normalization)
    spec.roi_size = (512, 512)
    predictor = Predictor(spec, "cpu", network=torch.nn.Conv2d(3, 1, 1), precision="fp32", backend="torch")
    volume = np.random.default_rng(0).integers(0, 255, (1, 512, 512, slices)).astype(np.float32)
    start = time.perf_counter()
    seg = predictor.segment(volume, keep_probabilities=False)
    return {"seconds": time.perf_counter() - start, "peak_rss_gb": peak_rss_gb(), "labels": list(seg.labels.shape)}


def run_worker(task: dict) -> dict:
    """Run ``task`` in a fresh Python process and return its JSON answer (or the error)."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(task)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(lines[-1])


def worker_main(task: dict) -> None:
    kind = task.pop("kind")
    fn = {
        "peak": measure_peak,
        "path": measure_path,
        "volume": measure_volume,
        "memory": measure_memory,
        "dice": measure_dice,
        "chosen": measure_chosen,
        "flops": lambda size: {"flops": count_flops(size)},
    }[kind]
    print(json.dumps(fn(**task)), flush=True)


def device_info(device: str) -> dict:
    import torch
    from doubleunet_segment.inference.inferer import cpu_supports_bf16

    info = {"device": device, "torch": torch.__version__, "python": platform.python_version()}
    if device == "cuda":
        info["name"] = torch.cuda.get_device_name(0)
        info["reduced"] = ["fp16", "bf16"] if torch.cuda.is_bf16_supported() else ["fp16"]
    else:
        from doubleunet_segment.inference.cpu import cpu_description

        info["name"] = f"{cpu_description()}, {torch.get_num_threads()} torch threads"
        info["reduced"] = ["bf16"] if cpu_supports_bf16() else []
    return info


def paths_for(device: str, reduced: list[str]) -> list[str]:
    from doubleunet_segment.inference.onnx_runtime import onnxruntime_providers

    paths = ["eager_fp32", "cl_fp32"] + [f"cl_{p}" for p in reduced]
    wanted = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    if wanted in onnxruntime_providers():
        paths.append("onnx_fp32")
        if device == "cpu" and DATA.is_dir():
            paths.append("onnx_int8")  # calibrated on the polyp training frames: needs the sample data
    return paths


def keras_row(device: str, size: int, repeats: int) -> dict:
    """The Keras original at ``size``: timed here if TensorFlow imports, else the recorded figure (or nothing)."""
    import keras_original

    if device == "cpu" and keras_original.available():
        task = {"kind": "path", "device": device, "path": "keras", "size": size, "batch": 1}
        r = run_worker({**task, "repeats": repeats})
        return {**r, "keras": "measured in this run"}
    if device == "cpu" and size in KERAS_RECORDED:
        return {"seconds_per_slice": KERAS_RECORDED[size], "keras": KERAS_RECORDED_ON}
    return {"error": "TensorFlow is not installed (pip install -e '.[keras]') and no figure is recorded"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--sizes", default="256,512", help="slice sizes, comma-separated")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best is kept)")
    p.add_argument("--volume-slices", type=int, default=200, help="slices of the end-to-end volume (0: skip)")
    p.add_argument("--memory-slices", type=int, default=600, help="slices of the memory check (0: skip)")
    p.add_argument("--quick", action="store_true", help="one repeat, a 16-slice volume: a check, not a figure")
    p.add_argument(
        "--paths-only",
        action="store_true",
        help="make bench-quick: 512 x 512 batch 1 per path and the engine's own choice, to bench_quick.json",
    )
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="folder for JSON and PNG")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(json.loads(args.worker))
        return 0
    import torch
    from doubleunet_segment.inference.batching import default_batch_size

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick:
        args.repeats, args.volume_slices = 1, min(args.volume_slices, 16)
    if args.paths_only:
        args.sizes, args.volume_slices, args.memory_slices, args.repeats = "512", 0, 0, min(args.repeats, 2)
    sizes = [int(s) for s in args.sizes.split(",")]
    info = device_info(device)
    report = {**info, "date": datetime.datetime.now().isoformat(timespec="minutes"), "quick": args.quick}
    print(f"device: {info['name']} ({device}); torch {info['torch']}; {report['date']}", flush=True)

    peaks = {}
    for precision in ["fp32"] + info["reduced"]:
        peaks[precision] = run_worker({"kind": "peak", "device": device, "precision": precision, "repeats": 5})
        print(f"peak {precision}: {peaks[precision].get('gflops', float('nan')):.0f} GFLOP/s", flush=True)
    report["peak"] = peaks

    rows = []
    paths = paths_for(device, info["reduced"])
    dice = {p: run_worker({"kind": "dice", "device": device, "path": p}) for p in paths} if DATA.is_dir() else {}
    chosen = run_worker({"kind": "chosen", "device": device}) if DATA.is_dir() else {}
    if chosen:
        print(f"the engine picks {chosen.get('chosen')}: {chosen.get('why', chosen.get('error'))}", flush=True)
    best_reduced = next((f"cl_{r}" for r in info["reduced"]), "cl_fp32")
    for size in sizes:
        flops = run_worker({"kind": "flops", "size": size})["flops"]
        batched = default_batch_size(torch.device(device), size * size)
        plan = [(path, 1) for path in paths]
        if batched > 1 and not args.paths_only:
            plan.append((best_reduced, batched))
        keras = keras_row(device, size, args.repeats)
        base = None
        for path, batch in [("keras", 1)] + plan:
            if path == "keras":
                r = keras
            else:
                task = {"kind": "path", "device": device, "path": path, "size": size, "batch": batch}
                r = run_worker({**task, "repeats": args.repeats})
            precision = "fp32" if path == "keras" else path.rsplit("_", 1)[-1]  # Keras runs float32
            row = {"size": size, "path": path if batch == 1 else f"{path} batch {batch}", "batch": batch, **r}
            row.update(dice.get(path, {}) if batch == 1 else {})
            if "seconds_per_slice" in r:
                s = r["seconds_per_slice"]
                base = s if path == "eager_fp32" else base
                peak = peaks.get(precision, {}).get("gflops")
                row.update(
                    slices_per_s=1 / s,
                    gflops=flops / s / 1e9,
                    pct_peak=100 * flops / s / 1e9 / peak if peak else None,
                    speedup=base / s if base else None,
                    vs_keras=keras["seconds_per_slice"] / s if "seconds_per_slice" in keras else None,
                    gflop_per_slice=flops / 1e9,
                )
            rows.append(row)
            print(format_row(row), flush=True)
    report["rows"] = rows
    report["chosen"] = chosen

    args.out.mkdir(parents=True, exist_ok=True)
    if args.paths_only:
        summary = {
            "chosen": chosen.get("chosen"),
            "why": chosen.get("why"),
            "device": info["name"],
            "date": report["date"],
            "keras": keras.get("keras"),
            "paths": {
                r["path"]: {"s_per_image": r.get("seconds_per_slice"), "dice_vs_fp32": r.get("dice_vs_fp32")}
                for r in rows
            },
        }
        path = args.out / "bench_quick.json"
        path.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote {path}")
        return 0

    timed = [r for r in rows if r["size"] == max(sizes) and "seconds_per_slice" in r and r["batch"] == 1]
    # the end-to-end volume goes the fastest way the engine could take: masks kept (worst frame >= 0.99 vs fp32)
    timed = [r for r in timed if r["path"] != "keras" and r.get("worst_dice_vs_fp32", 1.0) >= 0.99]
    if args.volume_slices and VOLUME_SOURCE.is_file() and timed:
        fastest = min(timed, key=lambda r: r["seconds_per_slice"])["path"]
        precision, backend = PATH_SETTINGS.get(fastest, ("fp32", "torch"))
        task = {"kind": "volume", "device": device, "slices": args.volume_slices}
        vol = run_worker({**task, "precision": precision, "backend": backend})
        report["volume"] = {**vol, "path": f"{precision} {backend}", "shape": [512, 512, args.volume_slices]}
        print(f"volume 512x512x{args.volume_slices} ({precision} {backend}) end to end: {vol}", flush=True)
    if args.memory_slices and device == "cpu":
        report["memory"] = {
            norm: run_worker({"kind": "memory", "slices": args.memory_slices, "normalization": norm})
            for norm in ("median", "zscore")
        }
        print(f"memory 512x512x{args.memory_slices} streamed (stand-in network): {report['memory']}", flush=True)

    stem = args.out / f"bench_{device}{'_quick' if args.quick else ''}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, stem.with_suffix(".png"))
    print(f"wrote {stem}.json and {stem}.png")
    return 0


def format_row(r: dict) -> str:
    if "error" in r:
        return f"{r['size']:>4}  {r['path']:<22} FAILED: {r['error']}"
    pct = f"{r['pct_peak']:5.1f}%" if r.get("pct_peak") else "   n/a"
    speed = f"x{r['speedup']:.2f}" if r.get("speedup") else "  n/a"
    keras = f"x{r['vs_keras']:.2f}" if r.get("vs_keras") else "  n/a"
    dice = f"{r['dice_vs_fp32']:.4f}/{r['worst_dice_vs_fp32']:.4f}" if "dice_vs_fp32" in r else "     -/-     "
    rss = f"{r['peak_rss_gb']:.2f} GB" if "peak_rss_gb" in r else "n/a"
    return (
        f"{r['size']:>4}  {r['path']:<22} {r['seconds_per_slice']:8.3f} s/slice  vs Keras {keras}  "
        f"{r['gflops']:5.0f} GFLOP/s {pct} of peak  vs eager {speed}  Dice vs fp32 {dice}  RSS {rss}"
        + (f"  [{r['keras']}]" if "keras" in r else "")
    )


def plot(report: dict, path: Path) -> None:
    """Slices per second per path and size, labelled with % of the same-precision peak."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if "slices_per_s" in r]
    sizes = sorted({r["size"] for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        sel = [r for r in rows if r["size"] == size]
        bars = ax.barh([r["path"] for r in sel], [r["slices_per_s"] for r in sel], color="tab:blue")
        for bar, r in zip(bars, sel):
            label = f" {r['pct_peak']:.0f}% peak" if r.get("pct_peak") else ""
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
        ax.set_title(f"DoubleU-Net {size}x{size} ({sel[0]['gflop_per_slice']:.0f} GFLOP/slice)")
        ax.set_xlabel("slices / s")
        ax.invert_yaxis()
    fig.suptitle(f"{report['name']} - {report['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
