"""The shipped TorchScript export of a model, made with MONAI's ``ckpt_export``.

It stores its tensors as ``model.pt`` does, weights in float16 (58 MB rather than 117 MB, under GitHub's
100 MB file limit), so load it with ``torch.jit.load(path).float()``. ``ship`` refreshes it whenever new
weights ship, so it never lags ``model.pt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monai.bundle import ckpt_export

from .. import paths
from ..catalog import default_model_name, read_catalog
from ..data.atomic import atomic_path

__all__ = ["export_torchscript", "main"]


def export_torchscript(name: str, target: Path | None = None) -> Path:
    """Export the shipped model ``name`` next to its weights (``model.pt`` -> ``model.ts``) or to ``target``.

    Args:
        name: a model of the catalog.
        target: the ``.ts`` file; default the weights file with the suffix ``.ts``.

    Returns:
        The file written (atomically).

    Raises:
        KeyError: ``name`` is not in the catalog.
    """
    weights = read_catalog()[name].weights
    target = target or weights.with_suffix(".ts")
    with atomic_path(target, overwrite=True) as tmp:
        ckpt_export(
            net_id="network_fp16",
            filepath=str(tmp),
            ckpt_file=str(weights),
            meta_file=str(paths.configs_dir() / "metadata.json"),
            config_file=str(paths.configs_dir() / "inference.json"),
            model=name,
            network_fp16="$doubleunet_segment.networks.weights.half_storage(@network_def)",
        )
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m doubleunet_segment.release.torchscript_export``: export and print the file written."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model", default=default_model_name(), choices=sorted(read_catalog()), help="shipped model to export"
    )
    parser.add_argument("-o", "--output", type=Path, help="where to write it (default: beside the weights, .ts)")
    args = parser.parse_args(argv)
    print(f"exported {export_torchscript(args.model, args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
