"""X-NeMo denoising UNet: the SD UNet inflated to video, with motion and temporal modules.

Frames are folded into the batch once at the input (``b c f h w -> (b f) c h w``) and unfolded at
the output, so every convolution and GroupNorm works per frame ("inflated" GroupNorm; no layer
computes statistics across frames) and the SD 2-D weights load unchanged. Per layer of every
block: ResNet -> spatial transformer (self-attention optionally extended with the reference
UNet's bank, CLIP cross-attention) -> motion module (cross-attention from every spatial token to
the frame's own 32 motion tokens) -> temporal module (self-attention across frames with a
sinusoidal position table); the mid block runs ResNet, then transformer -> motion -> temporal ->
ResNet.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from inspect import signature
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..configs import XNEMO_UNET_ADDITIONAL_KWARGS
from .attention import ReferenceTransformerBlock, TemporalPositionalEncoding
from .unet_blocks import (
    VideoModuleSpec,
    build_stem,
    build_unet_blocks,
    check_unsupported_unet_options,
    embed_timestep,
    run_unet_body,
    sanitize_sd_unet_config,
)

_DOWN_3D = ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D")
_UP_3D = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D")
_TO_3D = {
    "CrossAttnDownBlock2D": "CrossAttnDownBlock3D",
    "DownBlock2D": "DownBlock3D",
    "CrossAttnUpBlock2D": "CrossAttnUpBlock3D",
    "UpBlock2D": "UpBlock3D",
}


@dataclass
class UNet3DDenoisingOutput(BaseOutput):
    """Output of :class:`UNet3DDenoisingModel`.

    Args:
        sample: Predicted noise ``(B, C, F, H, W)``.
    """

    sample: torch.Tensor


class UNet3DDenoisingModel(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """Video epsilon predictor of X-NeMo.

    The defaults build the full-size official network (SD image-variations base, X-NeMo
    ``unet_additional_kwargs``). Use :meth:`from_2d_config` to build it from an SD UNet config
    plus the official additional kwargs, exactly as the release does.

    Args:
        sample_size: Latent size the model was trained at (informative).
        in_channels: Latent channels.
        out_channels: Predicted channels.
        center_input_sample: Map the input from [0, 1] to [-1, 1] first.
        flip_sin_to_cos: Timestep embedding layout (cos first).
        freq_shift: Timestep embedding frequency shift.
        down_block_types: ``CrossAttnDownBlock3D`` / ``DownBlock3D`` per level.
        mid_block_type: Must be ``UNetMidBlock3DCrossAttn``.
        up_block_types: ``UpBlock3D`` / ``CrossAttnUpBlock3D`` per level.
        only_cross_attention: Must be false.
        block_out_channels: Channels per level.
        layers_per_block: ResNet layers per down block (up blocks get one more).
        downsample_padding: Padding of the stride-2 convolutions.
        mid_block_scale_factor: Output scale of the mid-block ResNets.
        act_fn: ResNet activation.
        norm_num_groups: GroupNorm groups of the ResNets and spatial transformers.
        norm_eps: GroupNorm epsilon of the ResNets.
        cross_attention_dim: Width of the CLIP image embedding.
        attention_head_dim: Number of heads per level (legacy diffusers naming).
        dual_cross_attention: Must be false.
        use_linear_projection: Linear instead of 1x1-conv transformer projections.
        class_embed_type: Must be ``None``.
        num_class_embeds: Must be ``None``.
        upcast_attention: Accepted for config compatibility; SDPA is used either way.
        resnet_time_scale_shift: Must be ``"default"``.
        use_inflated_groupnorm: Must be true (per-frame GroupNorm, what X-NeMo uses).
        use_motion_module: Build motion (spatial cross-attention) modules.
        use_temporal_module: Build temporal self-attention modules.
        motion_module_resolutions: Downsampling factors (1, 2, 4, 8) that get modules.
        motion_module_mid_block: Give the mid block modules too.
        motion_module_decoder_only: Only the up blocks get modules.
        motion_module_type: ``"Vanilla"``.
        temporal_module_type: ``"Vanilla"``.
        motion_module_kwargs: Motion-module arguments (heads, block types, context width 16, ...).
        temporal_module_kwargs: Temporal-module arguments (heads, block types, table length, ...).
        unet_use_cross_frame_attention: Must be false (unused by X-NeMo).
        unet_use_temporal_attention: Must be false (unused by X-NeMo).
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
        down_block_types: Sequence[str] = _DOWN_3D,
        mid_block_type: str = "UNetMidBlock3DCrossAttn",
        up_block_types: Sequence[str] = _UP_3D,
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
        class_embed_type: str | None = None,
        num_class_embeds: int | None = None,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
        use_inflated_groupnorm: bool = True,
        use_motion_module: bool = True,
        use_temporal_module: bool = True,
        motion_module_resolutions: Sequence[int] = (1, 2, 4, 8),
        motion_module_mid_block: bool = True,
        motion_module_decoder_only: bool = False,
        motion_module_type: str | None = "Vanilla",
        temporal_module_type: str | None = "Vanilla",
        motion_module_kwargs: Mapping[str, Any] | None = None,
        temporal_module_kwargs: Mapping[str, Any] | None = None,
        unet_use_cross_frame_attention: bool | None = False,
        unet_use_temporal_attention: bool | None = False,
    ) -> None:
        super().__init__()
        check_unsupported_unet_options(
            only_cross_attention, dual_cross_attention, num_class_embeds, resnet_time_scale_shift
        )
        if class_embed_type is not None:
            raise NotImplementedError("class embeddings are not used by X-NeMo")
        if mid_block_type != "UNetMidBlock3DCrossAttn":
            raise ValueError(f"unsupported mid_block_type {mid_block_type!r}")
        if not use_inflated_groupnorm:
            # A GroupNorm over (C, F, H, W) would mix frames; X-NeMo always uses per-frame norms.
            raise NotImplementedError("only use_inflated_groupnorm=True is supported")
        if unet_use_cross_frame_attention or unet_use_temporal_attention:
            raise NotImplementedError("cross-frame / in-transformer temporal attention are unused")
        if motion_module_kwargs is None:
            motion_module_kwargs = XNEMO_UNET_ADDITIONAL_KWARGS["motion_module_kwargs"]
        if temporal_module_kwargs is None:
            temporal_module_kwargs = XNEMO_UNET_ADDITIONAL_KWARGS["temporal_module_kwargs"]

        def video_spec(resolution: int | None, decoder: bool) -> VideoModuleSpec:
            # resolution None = the mid block, gated by motion_module_mid_block instead.
            if resolution is None:
                enabled = motion_module_mid_block
            else:
                enabled = resolution in motion_module_resolutions and (
                    decoder or not motion_module_decoder_only
                )
            return VideoModuleSpec(
                use_motion_module=use_motion_module and enabled,
                use_temporal_module=use_temporal_module and enabled,
                motion_module_type=motion_module_type,
                temporal_module_type=temporal_module_type,
                motion_module_kwargs=copy.deepcopy(dict(motion_module_kwargs)),
                temporal_module_kwargs=copy.deepcopy(dict(temporal_module_kwargs)),
            )

        count = len(block_out_channels)
        video_modules_for = {f"down.{i}": video_spec(2**i, decoder=False) for i in range(count)}
        video_modules_for["mid"] = video_spec(None, decoder=True)
        video_modules_for.update(
            {f"up.{i}": video_spec(2 ** (count - 1 - i), decoder=True) for i in range(count)}
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
            video_modules_for=video_modules_for,
        )
        # A plain GroupNorm on frame-folded maps is the per-frame ("inflated") GroupNorm.
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

    @classmethod
    def from_2d_config(
        cls,
        unet_config: Mapping[str, Any],
        unet_additional_kwargs: Mapping[str, Any] | None = None,
    ) -> UNet3DDenoisingModel:
        """Build from an SD 2-D UNet config plus X-NeMo's ``unet_additional_kwargs``.

        Mirrors the official loader: the down/up block types are replaced by their 3-D
        counterparts and the mid block becomes ``UNetMidBlock3DCrossAttn``. Weights are not
        loaded (see :mod:`reenactment.engine.loading`).

        Args:
            unet_config: The SD ``unet/config.json`` content (``_``-prefixed keys are ignored).
            unet_additional_kwargs: Extra arguments; the official X-NeMo ones when ``None``.
        """
        return cls(**denoising_unet_kwargs(unet_config, unet_additional_kwargs))

    def reference_blocks(self) -> dict[str, ReferenceTransformerBlock]:
        """Spatial transformer blocks by module path (same paths as in the reference UNet)."""
        return {
            name: module
            for name, module in self.named_modules()
            if isinstance(module, ReferenceTransformerBlock)
        }

    def reset_temporal_position_tables(self) -> None:
        """Regenerate every temporal ``pos_encoder.pe`` table from its formula."""
        for module in self.modules():
            if isinstance(module, TemporalPositionalEncoding):
                module.reset_table()

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | Sequence[torch.Tensor],
        motion_hidden_states: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet3DDenoisingOutput | tuple[torch.Tensor]:
        """Predict the noise of a batch of latent clips.

        Args:
            sample: Noisy latents ``(B, C, F, H, W)``.
            timestep: Scalar, 0-d or ``(B,)`` timestep.
            encoder_hidden_states: CLIP image embeddings ``(B, L, D)``, or the official pair
                ``[clip_embeds, motion_tokens]``.
            motion_hidden_states: Motion tokens ``(B, F, 32, 16)`` (or ``(B, 32, 16)`` shared by
                all frames); taken from ``encoder_hidden_states`` when it is a pair.
            return_dict: Return a :class:`UNet3DDenoisingOutput` instead of a tuple.
        """
        if not torch.is_tensor(encoder_hidden_states):
            if len(encoder_hidden_states) != 2 or motion_hidden_states is not None:
                raise ValueError("pass either [clip_embeds, motion_tokens] or both keywords")
            encoder_hidden_states, motion_hidden_states = encoder_hidden_states
        batch, _, num_frames, height, width = sample.shape
        if self.config["center_input_sample"]:
            sample = 2 * sample - 1.0

        emb = embed_timestep(self.time_proj, self.time_embedding, timestep, sample)
        # b d -> (b f) d : the time embedding is shared by the frames of a clip.
        emb = emb.repeat_interleave(num_frames, dim=0)
        context = _fold_per_frame(encoder_hidden_states, batch, num_frames, "clip embeddings")
        motion = (
            _fold_per_frame(motion_hidden_states, batch, num_frames, "motion tokens")
            if motion_hidden_states is not None
            else None
        )

        # b c f h w -> (b f) c h w
        sample = sample.transpose(1, 2).reshape(batch * num_frames, -1, height, width)
        sample = run_unet_body(
            self.down_blocks,
            self.mid_block,
            self.up_blocks,
            self.conv_in(sample),
            emb,
            context,
            motion,
            num_frames,
        )
        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
        # (b f) c h w -> b c f h w
        sample = sample.reshape(batch, num_frames, -1, height, width).transpose(1, 2).contiguous()
        if not return_dict:
            return (sample,)
        return UNet3DDenoisingOutput(sample=sample)


def _fold_per_frame(tensor: torch.Tensor, batch: int, num_frames: int, what: str) -> torch.Tensor:
    """Per-clip ``(B, L, D)`` or per-frame ``(B, F, L, D)`` conditioning -> ``((b f), L, D)``."""
    if tensor.ndim == 4:
        if tensor.shape[:2] != (batch, num_frames):
            raise ValueError(
                f"{what} of shape {tuple(tensor.shape)} do not match {batch} clip(s) x "
                f"{num_frames} frame(s)"
            )
        # b f l d -> (b f) l d
        return tensor.reshape(batch * num_frames, *tensor.shape[2:])
    if tensor.ndim == 3:
        if tensor.shape[0] == batch * num_frames and num_frames > 1:
            return tensor  # already one row per frame-image
        if tensor.shape[0] != batch:
            raise ValueError(f"{what} batch {tensor.shape[0]} does not match {batch} clip(s)")
        # b l d -> (b f) l d
        return tensor.repeat_interleave(num_frames, dim=0)
    raise ValueError(f"{what} must be 3-D or 4-D, got shape {tuple(tensor.shape)}")


def denoising_unet_kwargs(
    unet_config: Mapping[str, Any],
    unet_additional_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Constructor arguments of :class:`UNet3DDenoisingModel` from an SD config + extra kwargs.

    Raises:
        ValueError: On a config key the network does not understand (instead of ignoring it).
    """
    if unet_additional_kwargs is None:
        unet_additional_kwargs = XNEMO_UNET_ADDITIONAL_KWARGS
    accepted = set(signature(UNet3DDenoisingModel.__init__).parameters) - {"self"}
    base = {k: v for k, v in unet_config.items() if k != "mid_block_type"}
    kwargs = sanitize_sd_unet_config(base, accepted)
    down_types = kwargs.get("down_block_types", _DOWN_3D)
    up_types = kwargs.get("up_block_types", _UP_3D)
    kwargs["down_block_types"] = [_TO_3D.get(t, t) for t in down_types]
    kwargs["up_block_types"] = [_TO_3D.get(t, t) for t in up_types]
    # The official loader forces the 3-D mid block whatever the 2-D config says.
    kwargs["mid_block_type"] = "UNetMidBlock3DCrossAttn"
    extra = copy.deepcopy(dict(unet_additional_kwargs))
    unknown = sorted(k for k in extra if k not in accepted)
    if unknown:
        raise ValueError(f"unsupported unet_additional_kwargs: {', '.join(unknown)}")
    kwargs.update(extra)
    return kwargs
