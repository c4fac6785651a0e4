"""X-NeMo reference UNet ("appearance net").

An SD image-variations 2-D UNet **without** ``conv_norm_out`` / ``conv_out``: its forward returns
the output of the last up block ``(B, block_out_channels[0], H, W)``, which nobody uses at
inference. What matters is the side effect of a *write* pass: every transformer block stores the
input of its self-attention (its ``norm1`` output) in a bank, which the denoising UNet reads
(see :mod:`reenactment.engine.networks.reference_attention`). The official pipeline runs it once,
at timestep 0, on the clean reference latent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from inspect import signature
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from .attention import ReferenceMode, ReferenceTransformerBlock
from .unet_blocks import (
    build_stem,
    build_unet_blocks,
    check_unsupported_unet_options,
    embed_timestep,
    run_unet_body,
    sanitize_sd_unet_config,
)


@dataclass
class UNet2DReferenceOutput(BaseOutput):
    """Output of :class:`UNet2DReferenceModel`.

    Args:
        sample: Last up-block feature map ``(B, block_out_channels[0], H, W)``.
    """

    sample: torch.Tensor


class UNet2DReferenceModel(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """SD 2-D UNet without output head, with reference-bank writing.

    The configuration keys are those of the SD image-variations ``unet/config.json``
    (``out_channels`` is accepted for compatibility and unused: there is no ``conv_out``).

    Args:
        sample_size: Latent size the model was trained at (informative).
        in_channels: Latent channels.
        out_channels: Unused (kept so the SD config loads unchanged).
        center_input_sample: Map the input from [0, 1] to [-1, 1] first.
        flip_sin_to_cos: Timestep embedding layout (cos first).
        freq_shift: Timestep embedding frequency shift.
        down_block_types: ``CrossAttnDownBlock2D`` / ``DownBlock2D`` per level.
        up_block_types: ``UpBlock2D`` / ``CrossAttnUpBlock2D`` per level.
        only_cross_attention: Must be false (not used by X-NeMo).
        block_out_channels: Channels per level.
        layers_per_block: ResNet layers per down block (up blocks get one more).
        downsample_padding: Padding of the stride-2 convolutions.
        mid_block_scale_factor: Output scale of the mid-block ResNets.
        act_fn: ResNet activation.
        norm_num_groups: GroupNorm groups.
        norm_eps: GroupNorm epsilon of the ResNets.
        cross_attention_dim: Width of the CLIP image embedding.
        attention_head_dim: Number of heads per level (legacy diffusers naming).
        dual_cross_attention: Must be false.
        use_linear_projection: Linear instead of 1x1-conv transformer projections.
        num_class_embeds: Must be ``None``.
        upcast_attention: Accepted for config compatibility; SDPA is used either way.
        resnet_time_scale_shift: Must be ``"default"``.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 4,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: Sequence[str] = (
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types: Sequence[str] = (
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
        only_cross_attention: bool = False,
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
        attention_head_dim: int | Sequence[int] = 8,
        dual_cross_attention: bool = False,
        use_linear_projection: bool = False,
        num_class_embeds: int | None = None,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
    ) -> None:
        super().__init__()
        check_unsupported_unet_options(
            only_cross_attention, dual_cross_attention, num_class_embeds, resnet_time_scale_shift
        )
        self.conv_in, self.time_proj, self.time_embedding = build_stem(
            in_channels, block_out_channels, flip_sin_to_cos, freq_shift, act_fn
        )
        self.down_blocks, self.mid_block, self.up_blocks = build_unet_blocks(
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            downsample_padding=downsample_padding,
            mid_block_scale_factor=mid_block_scale_factor,
            act_fn=act_fn,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=attention_head_dim,
            use_linear_projection=use_linear_projection,
        )

    @classmethod
    def from_sd_config(cls, unet_config: Mapping[str, Any]) -> UNet2DReferenceModel:
        """Build from an SD ``unet/config.json`` (weights are not loaded).

        Unlike ``from_config``, keys that would change the architecture but are not implemented
        raise instead of being ignored with a warning.
        """
        accepted = set(signature(cls.__init__).parameters) - {"self"}
        return cls(**sanitize_sd_unet_config(unet_config, accepted))

    def reference_blocks(self) -> dict[str, ReferenceTransformerBlock]:
        """Transformer blocks by path, e.g. ``down_blocks.0.attentions.0.transformer_blocks.0``."""
        return {
            name: module
            for name, module in self.named_modules()
            if isinstance(module, ReferenceTransformerBlock)
        }

    def set_reference_mode(self, mode: ReferenceMode | str) -> None:
        """Switch every transformer block to ``off`` or ``write`` (a reference UNet never reads)."""
        mode = ReferenceMode(mode)
        if mode is ReferenceMode.READ:
            raise ValueError("the reference UNet only writes reference banks")
        for block in self.reference_blocks().values():
            block.reference_mode = mode
            block.reference_cfg = False

    def reference_banks(self) -> dict[str, torch.Tensor]:
        """Banks written by the last write-mode forward, keyed by block path."""
        banks = {}
        for name, block in self.reference_blocks().items():
            if block.reference_bank is None:
                raise RuntimeError(f"block {name} holds no bank; run a forward in write mode")
            banks[name] = block.reference_bank
        return banks

    def clear_reference_banks(self) -> None:
        """Drop stored banks (they hold activations and, in training, autograd graphs)."""
        for block in self.reference_blocks().values():
            block.reference_bank = None

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        return_dict: bool = True,
    ) -> UNet2DReferenceOutput | tuple[torch.Tensor]:
        """Run the UNet on reference latents.

        Args:
            sample: Latents ``(B, C, H, W)``.
            timestep: Scalar, 0-d or ``(B,)`` timestep (X-NeMo uses 0).
            encoder_hidden_states: CLIP image embeddings ``(B, L, D)``.
            return_dict: Return a :class:`UNet2DReferenceOutput` instead of a tuple.
        """
        if self.config["center_input_sample"]:
            sample = 2 * sample - 1.0
        emb = embed_timestep(self.time_proj, self.time_embedding, timestep, sample)
        sample = run_unet_body(
            self.down_blocks,
            self.mid_block,
            self.up_blocks,
            self.conv_in(sample),
            emb,
            encoder_hidden_states,
        )
        if not return_dict:
            return (sample,)
        return UNet2DReferenceOutput(sample=sample)
