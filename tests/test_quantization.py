"""The int8 path: static QDQ quantization, cached per weights file, used only where its masks keep float32's."""

import json
import os
import shutil

import numpy as np
import onnx
import pytest
import torch
from doubleunet_segment import paths
from doubleunet_segment.catalog import read_bundle
from doubleunet_segment.inference import precision
from doubleunet_segment.inference.onnx_runtime import OnnxNetwork, export_onnx, onnxruntime_providers
from doubleunet_segment.inference.predictor import Predictor
from doubleunet_segment.inference.quantization import quantize_int8
from doubleunet_segment.networks.doubleunet import DoubleUNet
from onnx import numpy_helper

pytestmark = pytest.mark.skipif(
    "CPUExecutionProvider" not in onnxruntime_providers(), reason="onnxruntime is not installed"
)


def test_kept_float_layers_keep_float_weights_and_the_rest_are_integer(tmp_path):
    torch.manual_seed(0)
    fp32 = export_onnx(DoubleUNet(in_channels=1, out_channels=1).eval(), tmp_path / "m.onnx", size=32)
    calibration = [np.random.default_rng(i).random((2, 1, 32, 32), dtype=np.float32) for i in range(2)]
    int8 = quantize_int8(fp32, tmp_path / "m-int8.onnx", calibration, keep_float=["/head2/", "/encoder1/stages.0/"])
    graph = onnx.load(str(int8)).graph
    dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    convs = {n.name: n for n in graph.node if n.op_type == "Conv"}
    kept = [name for name in convs if name.startswith(("/head2/", "/encoder1/stages.0/"))]
    assert kept and all(convs[name].input[1] not in dequantized for name in kept)  # float32 weights
    others = [name for name in convs if name not in kept]
    assert all(convs[name].input[1] in dequantized for name in others)
    # the ops between convolutions are quantized too, their outputs included: pooling, concatenation, upsampling,
    # the excitation products
    requantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert {"MaxPool", "Concat", "Resize", "Mul"} <= {n.op_type for n in graph.node if set(n.output) & requantized}
    assert not list(tmp_path.glob("*.tmp"))
    x = torch.from_numpy(calibration[0])
    assert OnnxNetwork(int8)(x).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="at least one"):
        quantize_int8(fp32, tmp_path / "none.onnx", [])


def _damage(path) -> None:
    """Turn the int8 weights of the second half of the layers around: a quantized model whose masks differ."""
    model = onnx.load(str(path))
    weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    for init in weights[len(weights) // 2 :]:
        init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))
    onnx.save(model, str(path))


@pytest.mark.skipif(not paths.sample_data().is_dir(), reason="no sample data")
def test_int8_is_checked_cached_per_weights_file_and_refused_once_damaged(tmp_path, private_cache):
    """The shipped hippocampus model through the engine's own choice (one quantization per weights file).

    Compared on whole validation crops, the 2.5D weights pass (AVX2 CPU, 7-bit weights: worst 0.9952, pooled
    0.9970); the decision must also follow its own figures."""
    bundle = tmp_path / "hippocampus"
    shutil.copytree(paths.bundles_root() / "hippocampus", bundle, ignore=shutil.ignore_patterns("*.ts", "docs"))
    spec = read_bundle(bundle)

    first = Predictor(spec, "cpu")
    decision = next(v for k, v in json.loads((paths.cache_dir() / "decisions.json").read_text()).items() if "int8" in k)
    passes = decision["dice"] >= precision.MIN_DICE and decision["min_dice"] >= precision.MIN_IMAGE_DICE
    assert decision["images"] == 4 and decision["accepted"] and passes
    assert ("int8" in first.path_reason) and (first.precision == "int8") == (decision["low_s"] < decision["fp32_s"])
    int8_files = list((paths.cache_dir() / "onnx").glob("*-int8-*.onnx"))
    assert len(int8_files) == 1

    # the same weights file reuses the cached int8 model: damaged, it fails the mask check and float32 is kept
    _damage(int8_files[0])
    (paths.cache_dir() / "decisions.json").unlink()
    damaged = Predictor(spec, "cpu")
    assert damaged.precision == "fp32" and "int8 rejected" in damaged.path_reason
    assert list((paths.cache_dir() / "onnx").glob("*-int8-*.onnx")) == int8_files == [damaged.int8_path]

    # new weights (the file rewritten): another cache entry, not made yet, and the old decision no longer applies
    os.utime(spec.weights, ns=(spec.weights.stat().st_atime_ns, spec.weights.stat().st_mtime_ns + 10**9))
    renewed = Predictor(spec, "cpu", precision="fp32", backend="torch")
    assert renewed.int8_path != int8_files[0] and not renewed.int8_path.is_file()
    assert precision.DecisionCache().get(spec.weights, torch.device("cpu"), "int8") is None
