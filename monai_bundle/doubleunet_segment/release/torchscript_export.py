"""The TorchScript export of a shipped model, made with MONAI's ``ckpt_export`` (``make export``).

The export is float32, as model-zoo TorchScript files are: ``torch.jit.load(path)`` runs on float32 input as it
is. (``model.pt`` stores weights in float16; they load into the float32 network.) It is built, not committed
(117 MB; git ignores ``models/*.ts``); ``ship`` refreshes ``models/model.ts`` whenever new default-model weights
ship, so a local export never lags ``model.pt``. ``metadata.json`` and ``inference.json`` travel inside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monai.bundle import ckpt_export

from ..catalog import DEFAULT_MODEL, read_catalog
from ..data.atomic import atomic_path
from ..networks.weights import verify_listed

__all__ = ["export_torchscript", "main"]


def export_torchscript(name: str, target: Path | None = None) -> Path:
    """Export the shipped model ``name`` next to its weights (``model.pt`` -> ``model.ts``) or to ``target``.

    Args:
        name: a shipped model (its bundle's configs drive the export).
        target: the ``.ts`` file; default the weights file with the suffix ``.ts``.

    Returns:
        The file written (atomically), float32.

    Raises:
        KeyError: ``name`` is not a shipped model.
        WeightsHashError: the shipped weights file is damaged (its hash is not the one in ``large_files.yml``).
    """
    spec = read_catalog()[name]
    weights = spec.weights
    verify_listed(weights)  # ckpt_export reads the file itself, past load_state's check
    target = target or weights.with_suffix(".ts")
    with atomic_path(target, overwrite=True) as tmp:
        ckpt_export(
            net_id="network_def",
            filepath=str(tmp),
            ckpt_file=str(weights),
            meta_file=str(spec.bundle / "configs" / "metadata.json"),
            config_file=str(spec.bundle / "configs" / "inference.json"),
            bundle_root=str(spec.bundle),
        )
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m doubleunet_segment.release.torchscript_export``: export and print the file written."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, choices=sorted(read_catalog()), help="shipped model to export"
    )
    parser.add_argument("-o", "--output", type=Path, help="where to write it (default: beside the weights, .ts)")
    args = parser.parse_args(argv)
    print(f"exported {export_torchscript(args.model, args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
