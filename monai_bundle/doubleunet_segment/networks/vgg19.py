"""VGG19 convolution stack as DoubleU-Net's first encoder, loadable from torchvision-format weights.

Built here rather than imported from torchvision (not a dependency). The layers are grouped into the five
stages whose outputs the network uses; ``TORCHVISION_INDEX`` maps each conv to its ``features.N`` index
so a torchvision state dict (e.g. ``vgg19-dcbb9e9d.pth``) loads weight for weight. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["STAGES", "TORCHVISION_INDEX", "VGG19Encoder"]

# Output channels of the 16 convs, per stage; a 2x2 max pool opens every stage but the first.
STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)


def _torchvision_indices() -> list[tuple[int, int, int]]:
    """(stage, position in the stage's Sequential, torchvision ``features`` index) for every conv."""
    out = []
    tv = 0
    for s, convs in enumerate(STAGES):
        pos = 0
        if s > 0:
            tv += 1  # the max pool
            pos += 1
        for _ in convs:
            out.append((s, pos, tv))
            tv += 2  # conv + ReLU
            pos += 2
    return out


TORCHVISION_INDEX = _torchvision_indices()


class VGG19Encoder(nn.Module):
    """Returns the block5_conv4 bridge (1/16 size) and the four skips block1_conv2 .. block4_conv4.

    VGG19 is Simonyan & Zisserman, ICLR 2015 (configuration E), without its classifier.
    """

    def __init__(self) -> None:
        super().__init__()
        stages = []
        in_ch = 3
        for s, convs in enumerate(STAGES):
            layers: list[nn.Module] = [nn.MaxPool2d(2, 2)] if s > 0 else []
            for out_ch in convs:
                layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = out_ch
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        for conv in self.conv_layers():
            # torchvision's VGG initialisation: PyTorch's default shrinks the signal ~10x over these 16 plain
            # ReLU convs (no BatchNorm), and a from-scratch polyp model then learned nothing in 2 epochs.
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode (B, 3, H, W), H and W multiples of 16.

        Returns:
            The bridge (B, 512, H/16, W/16) and the skips (B, 64, H, W), (B, 128, H/2, W/2),
            (B, 256, H/4, W/4), (B, 512, H/8, W/8).
        """
        skips: list[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips[-1], skips[:-1]

    def conv_layers(self) -> list[nn.Conv2d]:
        """The 16 convs in VGG order (block1_conv1 .. block5_conv4)."""
        return [self.stages[s][pos] for s, pos, _ in TORCHVISION_INDEX]

    def load_torchvision_state_dict(self, source: str | Path | dict[str, torch.Tensor]) -> None:
        """Copy ``features.N.weight/bias`` from a torchvision VGG19 state dict; ``classifier.*`` is ignored.

        A missing key or a shape that differs is an error naming it: a partial load would silently
        train from a half-random encoder.

        Args:
            source: a ``.pth`` file or a state dict (optionally under ``"state_dict"``).

        Raises:
            FileNotFoundError: ``source`` is a path that does not exist.
            ValueError: a conv's key is missing or has another shape (all problems are listed).
        """
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"VGG19 weights file not found: {path}")
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            state = source
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        problems = []
        tensors = {}
        for conv, (_, _, tv) in zip(self.conv_layers(), TORCHVISION_INDEX):
            for name, param in (("weight", conv.weight), ("bias", conv.bias)):
                key = f"features.{tv}.{name}"
                if key not in state:
                    problems.append(f"missing key {key}")
                elif tuple(state[key].shape) != tuple(param.shape):
                    problems.append(f"{key} has shape {tuple(state[key].shape)}, expected {tuple(param.shape)}")
                else:
                    tensors[key] = (param, state[key])
        if problems:
            raise ValueError("not a torchvision VGG19 state dict: " + "; ".join(problems))
        with torch.no_grad():
            for param, value in tensors.values():
                param.copy_(value)
