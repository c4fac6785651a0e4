"""Motion modules and temporal modules of the denoising UNet (AnimateDiff "Vanilla" layout).

Both kinds share one wrapper, :class:`VideoModule`, whose single child is named
``temporal_transformer`` (the released checkpoints use that name for both kinds, even though the
motion modules are purely spatial):

* motion module - two ``Spatial_Cross`` attentions: every spatial token of a frame attends to that
  frame's 32 motion tokens (keys/values projected from 16 channels);
* temporal module - two ``Temporal_Self`` attentions: every spatial location attends across the
  frames of the clip, with the interleaved sin/cos table added before each attention.

The wrapper is ``x + proj_out(blocks(proj_in(GroupNorm_32(x))))`` per frame; ``proj_out`` is
zero-initialised so a fresh module is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .attention import TemporalPositionalEncoding, VersatileTransformerBlock


class VideoTransformer(nn.Module):
    """GroupNorm -> Linear -> transformer blocks -> Linear, with a residual.

    Args:
        in_channels: Channels of the feature map.
        num_attention_heads: Heads per attention.
        attention_head_dim: Channels per head.
        num_layers: Number of :class:`VersatileTransformerBlock`.
        attention_block_types: Attention kinds inside each block.
        cross_attention_dim: Context channels for ``*_Cross`` attentions (16 for motion tokens).
        temporal_position_encoding: Use the temporal sin/cos table.
        temporal_position_encoding_max_len: Its length (maximum frames per forward).
        norm_num_groups: GroupNorm groups (32 in X-NeMo, independent of the UNet's own setting).
    """

    def __init__(
        self,
        in_channels: int,
        num_attention_heads: int,
        attention_head_dim: int,
        num_layers: int,
        attention_block_types: Sequence[str],
        cross_attention_dim: int | None,
        temporal_position_encoding: bool,
        temporal_position_encoding_max_len: int,
        norm_num_groups: int = 32,
    ) -> None:
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(in_channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            [
                VersatileTransformerBlock(
                    inner_dim,
                    num_attention_heads,
                    attention_head_dim,
                    attention_block_types=attention_block_types,
                    cross_attention_dim=cross_attention_dim,
                    temporal_position_encoding=temporal_position_encoding,
                    temporal_position_encoding_max_len=temporal_position_encoding_max_len,
                )
                for _ in range(num_layers)
            ]
        )
        self.proj_out = nn.Linear(inner_dim, in_channels)

    def forward(
        self,
        hidden_states: torch.Tensor,
        num_frames: int,
        encoder_hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``hidden_states`` ``((b f), C, H, W)``; context ``((b f), L, D)`` or ``None``."""
        batch, channels, height, width = hidden_states.shape
        residual = hidden_states
        hidden_states = self.norm(hidden_states)
        # n c h w -> n (h w) c
        hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        hidden_states = self.proj_in(hidden_states)
        for block in self.transformer_blocks:
            hidden_states = block(hidden_states, encoder_hidden_states, num_frames)
        hidden_states = self.proj_out(hidden_states)
        # n (h w) c -> n c h w
        hidden_states = hidden_states.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        return hidden_states + residual


class VideoModule(nn.Module):
    """A motion or temporal module ("Vanilla" type) operating on frame-folded feature maps.

    Args:
        in_channels: Channels of the feature map.
        num_attention_heads: Heads per attention.
        num_transformer_block: Transformer blocks.
        attention_block_types: ``("Spatial_Cross", "Spatial_Cross")`` for motion modules,
            ``("Temporal_Self", "Temporal_Self")`` for temporal modules.
        cross_attention_dim: Context channels of the cross-attentions (motion-token width).
        temporal_position_encoding: Add the sin/cos table in temporal attentions.
        temporal_position_encoding_max_len: Table length, i.e. the maximum frames per forward.
        temporal_attention_dim_div: Divides the per-head width (1 in X-NeMo).
        zero_initialize: Zero ``proj_out`` so a fresh module is the identity.
    """

    def __init__(
        self,
        in_channels: int,
        num_attention_heads: int = 8,
        num_transformer_block: int = 1,
        attention_block_types: Sequence[str] = ("Temporal_Self", "Temporal_Self"),
        cross_attention_dim: int | None = 768,
        temporal_position_encoding: bool = False,
        temporal_position_encoding_max_len: int = 24,
        temporal_attention_dim_div: int = 1,
        zero_initialize: bool = True,
    ) -> None:
        super().__init__()
        self.temporal_transformer = VideoTransformer(
            in_channels=in_channels,
            num_attention_heads=num_attention_heads,
            attention_head_dim=in_channels // num_attention_heads // temporal_attention_dim_div,
            num_layers=num_transformer_block,
            attention_block_types=attention_block_types,
            cross_attention_dim=cross_attention_dim,
            temporal_position_encoding=temporal_position_encoding,
            temporal_position_encoding_max_len=temporal_position_encoding_max_len,
        )
        if zero_initialize:
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        num_frames: int,
        encoder_hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``hidden_states`` ``((b f), C, H, W)`` -> same shape."""
        return self.temporal_transformer(hidden_states, num_frames, encoder_hidden_states)

    def positional_encoders(self) -> list[TemporalPositionalEncoding]:
        """The temporal position tables inside this module (empty for motion modules)."""
        return [m for m in self.modules() if isinstance(m, TemporalPositionalEncoding)]


def build_video_module(
    in_channels: int, module_type: str | None, module_kwargs: dict[str, Any] | None
) -> VideoModule:
    """Build a motion/temporal module from the official ``*_module_type`` / ``*_module_kwargs``."""
    if module_type != "Vanilla":
        raise ValueError(f"unsupported motion/temporal module type {module_type!r}")
    return VideoModule(in_channels=in_channels, **(module_kwargs or {}))
