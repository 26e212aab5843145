"""DoubleU-Net (Jha et al., CBMS 2020), faithful to the authors' Keras model.py.

The layer choices that a numerical comparison with the original exposes are kept as they are there:
BatchNorm epsilon 1e-3, biases on conv-block convs but not on squeeze-excite dense layers, an ASPP
image-pooling branch that averages the whole map, and half-pixel bilinear upsampling.
``tests/test_keras_parity.py`` pins all of it against the Keras model's own output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vgg19 import VGG19Encoder

__all__ = [
    "ASPP",
    "BN_EPS",
    "BN_MOMENTUM",
    "SIZE_MULTIPLE",
    "ConvBlock",
    "Decoder",
    "DoubleUNet",
    "Encoder2",
    "SqueezeExcite",
]

# Keras BatchNormalization defaults (momentum 0.99 in Keras is 0.01 in PyTorch's convention).
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
SIZE_MULTIPLE = 16


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class SqueezeExcite(nn.Module):
    """Channel attention without dense biases, as the paper's code has it (MONAI's ChannelSELayer adds biases).

    Squeeze-and-excitation (Hu et al., CVPR 2018): global average pool, dense C -> C/ratio, ReLU, dense
    C/ratio -> C, sigmoid, channel-wise scaling. ``forward`` maps (B, C, H, W) to (B, C, H, W).

    Args:
        channels: C, the input channels.
        ratio: the reduction ratio of the hidden layer.
    """

    def __init__(self, channels: int, ratio: int = 8) -> None:
        super().__init__()
        self.reduce = nn.Linear(channels, channels // ratio, bias=False)
        self.expand = nn.Linear(channels // ratio, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean(dim=(2, 3))
        w = torch.sigmoid(self.expand(torch.relu(self.reduce(w))))
        return x * w[:, :, None, None]


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU, then squeeze-and-excite: the paper's ``conv_block``.

    ``forward`` maps (B, in_channels, H, W) to (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn1 = _bn(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = _bn(out_channels)
        self.se = SqueezeExcite(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.se(x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with a whole-map pooling branch and dilations 1, 6, 12, 18.

    MONAI's SimpleASPP has neither the pooling branch nor BatchNorm after each branch, so it is built here.
    ``forward`` maps (B, in_channels, H, W) to (B, out_channels, H, W).

    Args:
        in_channels: channels of the encoder output.
        out_channels: channels of every branch and of the projection.
    """

    def __init__(self, in_channels: int, out_channels: int = 64) -> None:
        super().__init__()
        self.pool_conv = nn.Conv2d(in_channels, out_channels, 1, bias=True)
        self.pool_bn = _bn(out_channels)
        self.branches = nn.ModuleList(
            [nn.Conv2d(in_channels, out_channels, 1, bias=False)]
            + [nn.Conv2d(in_channels, out_channels, 3, padding=d, dilation=d, bias=False) for d in (6, 12, 18)]
        )
        self.branch_bns = nn.ModuleList([_bn(out_channels) for _ in range(4)])
        self.project = nn.Conv2d(5 * out_channels, out_channels, 1, bias=False)
        self.project_bn = _bn(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool_conv(x.mean(dim=(2, 3), keepdim=True))
        if self.training and pooled.shape[0] == 1:
            # One value per channel has no batch statistics (PyTorch raises, Keras degenerates to beta):
            # a batch of one normalises the pooled branch with the running statistics instead.
            pooled = F.batch_norm(
                pooled,
                self.pool_bn.running_mean,
                self.pool_bn.running_var,
                self.pool_bn.weight,
                self.pool_bn.bias,
                False,
                0.0,
                self.pool_bn.eps,
            )
        else:
            pooled = self.pool_bn(pooled)
        pooled = torch.relu(pooled)
        outs = [pooled.expand(-1, -1, x.shape[2], x.shape[3])]
        for conv, bn in zip(self.branches, self.branch_bns):
            outs.append(torch.relu(bn(conv(x))))
        return torch.relu(self.project_bn(self.project(torch.cat(outs, dim=1))))


class Decoder(nn.Module):
    """x2 bilinear upsampling, concatenation with the skips of that size (deepest first), conv_block.

    Args:
        in_channels: channels of the bridge (the ASPP output).
        skip_channels: total skip channels concatenated at each level, deepest first.
        filters: output channels of each level's conv_block.
    """

    def __init__(self, in_channels: int, skip_channels: list[int], filters: list[int]) -> None:
        super().__init__()
        blocks = []
        for skip, f in zip(skip_channels, filters):
            blocks.append(ConvBlock(in_channels + skip, f))
            in_channels = f
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, skips: list[list[torch.Tensor]]) -> torch.Tensor:
        """Decode ``x`` (B, C, H, W) to (B, filters[-1], H * 2**L, W * 2**L) for L levels.

        Args:
            x: the bridge, (B, in_channels, H, W).
            skips: per level (deepest first), the skip tensors at twice the previous level's size.
        """
        for i, block in enumerate(self.blocks):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = block(torch.cat([x] + skips[i], dim=1))
        return x


class Encoder2(nn.Module):
    """The second U-Net's encoder: conv_block then 2x2 max pool, keeping each block's output as a skip.

    ``forward`` returns the pooled output (B, filters[-1], H / 2**L, W / 2**L) and the L skips, shallowest first.

    Args:
        in_channels: channels of the input (3: the masked image).
        filters: output channels of each block.
    """

    def __init__(self, in_channels: int, filters: list[int]) -> None:
        super().__init__()
        blocks = []
        for f in filters:
            blocks.append(ConvBlock(in_channels, f))
            in_channels = f
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips: list[torch.Tensor] = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return x, skips


class DoubleUNet(nn.Module):
    """Two stacked U-Nets; the second sees the input multiplied by the first one's mask.

    Args:
        in_channels: 1 (grey, repeated to VGG's three channels) or 3 (RGB, or three adjacent slices for 2.5D).
        out_channels: 1 for a binary mask (sigmoid), K >= 2 for K classes with background first (softmax).
        vgg_weights: optional path of a torchvision-format VGG19 state dict (``features.N.weight``) for encoder 1.
        bn_momentum: BatchNorm running-statistics momentum (PyTorch convention). Keras' 0.99 is 0.01 here; a
            short schedule wants 0.1, or the running statistics lag the weights and eval-mode output collapses.

    ``forward`` returns logits. In training mode it returns both stages concatenated along channels
    (``2 * out_channels``, the Keras model's layout) so a loss can supervise each; in eval mode only
    stage 2, the prediction. Any H x W works: the input is padded to a multiple of 16 and cropped back.

    Raises:
        ValueError: ``in_channels`` is not 1 or 3, or ``out_channels`` is below 1.

    Example::

        net = DoubleUNet(in_channels=3, out_channels=1).eval()
        logits = net(torch.rand(1, 3, 250, 300))  # (1, 1, 250, 300)
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        vgg_weights: str | None = None,
        bn_momentum: float = BN_MOMENTUM,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.encoder1 = VGG19Encoder()
        self.aspp1 = ASPP(512)
        self.decoder1 = Decoder(64, [512, 256, 128, 64], [256, 128, 64, 32])
        self.head1 = nn.Conv2d(32, out_channels, 1)
        self.encoder2 = Encoder2(3, [32, 64, 128, 256])
        self.aspp2 = ASPP(256)
        self.decoder2 = Decoder(64, [512 + 256, 256 + 128, 128 + 64, 64 + 32], [256, 128, 64, 32])
        self.head2 = nn.Conv2d(32, out_channels, 1)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = bn_momentum
        if vgg_weights:
            self.encoder1.load_torchvision_state_dict(vgg_weights)

    def _mask(self, logits: torch.Tensor) -> torch.Tensor:
        if self.out_channels == 1:
            return torch.sigmoid(logits)
        return 1.0 - torch.softmax(logits, dim=1)[:, :1]

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of stage 1 and stage 2 for an input whose H and W are multiples of 16.

        Args:
            x: (B, in_channels, H, W), H and W multiples of 16.

        Returns:
            Stage 1's and stage 2's logits, each (B, out_channels, H, W).
        """
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        bridge, skips1 = self.encoder1(x)
        y = self.decoder1(self.aspp1(bridge), [[s] for s in skips1[::-1]])
        out1 = self.head1(y)
        bridge2, skips2 = self.encoder2(x * self._mask(out1))
        skips = [[s1, s2] for s1, s2 in zip(skips1[::-1], skips2[::-1])]
        out2 = self.head2(self.decoder2(self.aspp2(bridge2), skips))
        return out1, out2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images of any size.

        Args:
            x: (B, in_channels, H, W), intensities normalised as in training.

        Returns:
            (B, 2 * out_channels, H, W) in training mode (stage 1 then stage 2), (B, out_channels, H, W)
            in eval mode.
        """
        h, w = x.shape[2], x.shape[3]
        pad_h = (-h) % 16  # four 2x2 poolings: SIZE_MULTIPLE (a literal so TorchScript compiles it)
        pad_w = (-w) % 16
        if pad_h or pad_w:
            x = F.pad(x, [0, pad_w, 0, pad_h])
        out1, out2 = self.forward_stages(x)
        if self.training:
            return torch.cat([out1, out2], dim=1)[:, :, :h, :w]
        return out2[:, :, :h, :w]
