"""A compact motion encoder: the official head and token layout on a small conv/attention backbone.

The FAN :class:`~.motion_encoder.MotionEncoder` works on 224x224 crops through 112x112 and 56x56
hourglass stages, which costs about three times both UNets per training step on a CPU. The
compact encoder keeps what the denoiser sees identical (box-parameter MLP, ``final_proj``, 32
tokens x 16 plus the ``pe`` table) and swaps the backbone for a few residual stages and one
spatial self-attention block at a small crop size (64 for the SynthFace preview model). It is a
``ModelMixin``/``ConfigMixin`` network, so model folders name it in ``model_index.json`` and the
inference loader builds it like any other network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .attention import VersatileTransformerBlock
from .motion_encoder import add_motion_head, motion_tokens


class ResBlock(nn.Module):
    """Pre-activation residual block (GroupNorm, SiLU, 3x3 conv, twice; 1x1 skip on a width
    change)."""

    def __init__(self, in_ch: int, out_ch: int, groups: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class CompactMotionBackbone(nn.Module):
    """Conv stem, residual downsampling stages, one spatial self-attention block, MLP head.

    ``(N, 3, S, S)`` -> ``(N, expression_dim)``; the last feature map is ``S / 2^len(channels)``
    wide and is flattened (spatial layout matters for expressions) into the final Linear.
    """

    def __init__(
        self,
        input_size: int,
        channels: Sequence[int],
        head_channels: int,
        expression_dim: int,
        attention_heads: int,
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels[0], 3, padding=1)
        stages = []
        prev = channels[0]
        for ch in channels:
            stages.append(
                nn.Sequential(ResBlock(prev, ch), nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            )
            prev = ch
        self.stages = nn.ModuleList(stages)
        self.attention = VersatileTransformerBlock(
            prev, attention_heads, prev // attention_heads, attention_block_types=("Spatial_Self",)
        )
        self.norm_out = nn.GroupNorm(8, prev)
        self.head = nn.Conv2d(prev, head_channels, 1)
        side = input_size // 2 ** len(channels)
        self.fc = nn.Linear(head_channels * side * side, expression_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        n, c, h, w = x.shape
        # n c h w -> n (h w) c
        tokens = x.flatten(2).transpose(1, 2)
        tokens = self.attention(tokens)
        # n (h w) c -> n c h w
        x = tokens.transpose(1, 2).reshape(n, c, h, w)
        x = self.head(F.silu(self.norm_out(x)))
        return self.fc(F.silu(x.flatten(1)))


class CompactMotionEncoder(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """A small drop-in for :class:`MotionEncoder`: same call, same ``(N, 32, 16)`` token layout.

    The head (``bbox_proj``, ``final_proj``, the ``pe`` token table) is the official one; only the
    backbone is a small conv/attention network that accepts ``input_size`` crops (64 for the
    preview model instead of the FAN's fixed 224). Crops of another size are resized.

    Args:
        input_size: Crop size the backbone works at (a multiple of ``2^len(channels)``).
        channels: Channels of the downsampling stages.
        head_channels: Channels of the last map before flattening.
        attention_heads: Heads of the spatial self-attention.
        extra_feat_dim: Box-parameter width (3).
        out_ch: Channels per motion token (16).
        expression_dim: Width of the motion code (512 = 32 tokens x 16).
    """

    _supports_gradient_checkpointing = False
    pe: torch.Tensor

    @register_to_config
    def __init__(
        self,
        input_size: int = 64,
        channels: Sequence[int] = (32, 64, 96),
        head_channels: int = 16,
        attention_heads: int = 4,
        extra_feat_dim: int = 3,
        out_ch: int = 16,
        expression_dim: int = 512,
    ) -> None:
        super().__init__()
        if expression_dim % out_ch:
            raise ValueError("out_ch must divide expression_dim")
        if input_size % 2 ** len(channels):
            raise ValueError("input_size must be a multiple of 2^len(channels)")
        self.model = CompactMotionBackbone(
            input_size, channels, head_channels, expression_dim, attention_heads
        )
        add_motion_head(
            self, extra_feat_dim=extra_feat_dim, out_ch=out_ch, expression_dim=expression_dim
        )

    @property
    def num_tokens(self) -> int:
        return int(self.config["expression_dim"]) // int(self.config["out_ch"])

    def forward(self, images: torch.Tensor, bbox_params: torch.Tensor) -> torch.Tensor:
        """Same contract as :meth:`MotionEncoder.forward` (crops in ``[-1, 1]``)."""
        size = int(self.config["input_size"])

        def backbone(crops: torch.Tensor) -> torch.Tensor:
            if crops.shape[-2:] != (size, size):
                crops = F.interpolate(crops, size=(size, size), mode="bilinear", antialias=True)
            return self.model(crops)

        return motion_tokens(self, images, bbox_params, backbone)


__all__ = ["CompactMotionBackbone", "CompactMotionEncoder", "ResBlock"]
