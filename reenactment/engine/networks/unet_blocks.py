"""UNet down/mid/up blocks shared by the reference (2-D) and denoising (3-D) UNets.

All blocks run on frame-folded feature maps ``(b f) c h w``; a 2-D UNet simply uses
``num_frames = 1``. Because every convolution and GroupNorm then sees one frame at a time, this
is exactly the "inflated" (per-frame) behaviour of the X-NeMo 3-D UNet, and the 2-D weights of
the SD UNet apply unchanged.

A block is built for a video network when ``video_modules`` is given: it then owns the
``motion_modules`` and ``temporal_modules`` lists (entries may be ``None`` where a resolution is
excluded), and each layer runs ``ResNet -> [spatial transformer] -> motion -> temporal``.
The reference UNet passes ``video_modules=None`` and gets plain SD blocks with the same names.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from .attention import SpatialTransformer
from .checkpointing import CheckpointedModule
from .video_modules import VideoModule, build_video_module


@dataclass(frozen=True)
class AttentionSpec:
    """How the spatial transformers of a block are built.

    Args:
        num_attention_heads: Heads (head width = channels / heads).
        cross_attention_dim: Width of the CLIP image embedding.
        use_linear_projection: Linear instead of 1x1-conv projections.
    """

    num_attention_heads: int
    cross_attention_dim: int
    use_linear_projection: bool = False


@dataclass(frozen=True)
class VideoModuleSpec:
    """Which motion/temporal modules a block gets.

    Args:
        use_motion_module: Build motion (spatial cross-attention) modules in this block.
        use_temporal_module: Build temporal self-attention modules in this block.
        motion_module_type: Official type name (``"Vanilla"``).
        temporal_module_type: Official type name (``"Vanilla"``).
        motion_module_kwargs: Constructor arguments of the motion modules.
        temporal_module_kwargs: Constructor arguments of the temporal modules.
    """

    use_motion_module: bool
    use_temporal_module: bool
    motion_module_type: str | None = "Vanilla"
    temporal_module_type: str | None = "Vanilla"
    motion_module_kwargs: dict[str, Any] = field(default_factory=dict)
    temporal_module_kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self, channels: int) -> tuple[VideoModule | None, VideoModule | None]:
        motion = (
            build_video_module(channels, self.motion_module_type, self.motion_module_kwargs)
            if self.use_motion_module
            else None
        )
        temporal = (
            build_video_module(channels, self.temporal_module_type, self.temporal_module_kwargs)
            if self.use_temporal_module
            else None
        )
        return motion, temporal


class _UNetBlock(CheckpointedModule):
    """Common per-layer logic of the down/mid/up blocks."""

    def _init_layers(
        self,
        layer_channels: int,
        num_layers: int,
        attention: AttentionSpec | None,
        video_modules: VideoModuleSpec | None,
        norm_num_groups: int,
    ) -> None:
        self.has_cross_attention = attention is not None
        self.is_video = video_modules is not None
        if attention is not None:
            heads = attention.num_attention_heads
            self.attentions = nn.ModuleList(
                [
                    SpatialTransformer(
                        heads,
                        layer_channels // heads,
                        in_channels=layer_channels,
                        norm_num_groups=norm_num_groups,
                        cross_attention_dim=attention.cross_attention_dim,
                        use_linear_projection=attention.use_linear_projection,
                    )
                    for _ in range(num_layers)
                ]
            )
        if video_modules is not None:
            built = [video_modules.build(layer_channels) for _ in range(num_layers)]
            # Attribute names are part of the checkpoint layout: `motion_modules` are the spatial
            # motion cross-attentions, `temporal_modules` the attentions across frames.
            # Entries are None where a resolution is excluded (no keys, as in the release).
            motion: list[Any] = [motion for motion, _ in built]
            temporal: list[Any] = [temporal for _, temporal in built]
            self.motion_modules = nn.ModuleList(motion)
            self.temporal_modules = nn.ModuleList(temporal)

    def _run(self, module: nn.Module, *args: Any) -> torch.Tensor:
        return cast(torch.Tensor, self.run_checkpointed(module, *args))

    def _layer_tail(
        self,
        index: int,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        motion_hidden_states: torch.Tensor | None,
        num_frames: int,
    ) -> torch.Tensor:
        """Spatial transformer, motion module and temporal module of layer ``index``."""
        if self.has_cross_attention:
            hidden_states = self._run(
                self.attentions[index], hidden_states, encoder_hidden_states, num_frames
            )
        if self.is_video:
            motion_module = self.motion_modules[index]
            if motion_module is not None:
                if motion_hidden_states is None:
                    raise ValueError("motion tokens are required by the motion modules")
                hidden_states = self._run(
                    motion_module, hidden_states, num_frames, motion_hidden_states
                )
            temporal_module = self.temporal_modules[index]
            if temporal_module is not None:
                hidden_states = self._run(temporal_module, hidden_states, num_frames)
        return hidden_states


class DownBlock(_UNetBlock):
    """Encoder block: ``num_layers`` x (ResNet -> [transformer] -> [motion] -> [temporal]), then an
    optional stride-2 convolution.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        temb_channels: Width of the time embedding.
        num_layers: Layers in the block.
        add_downsample: Append a stride-2 3x3 convolution.
        resnet_eps: GroupNorm epsilon of the ResNets.
        resnet_act_fn: Activation of the ResNets.
        norm_num_groups: GroupNorm groups (ResNets and spatial transformers).
        downsample_padding: Padding of the downsampling convolution.
        output_scale_factor: ResNet output scale.
        attention: Spatial-transformer spec, ``None`` for a block without attention.
        video_modules: Motion/temporal spec, ``None`` for an image network.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        add_downsample: bool,
        resnet_eps: float,
        resnet_act_fn: str,
        norm_num_groups: int,
        downsample_padding: int = 1,
        output_scale_factor: float = 1.0,
        attention: AttentionSpec | None = None,
        video_modules: VideoModuleSpec | None = None,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(
                    in_channels=in_channels if i == 0 else out_channels,
                    out_channels=out_channels,
                    temb_channels=temb_channels,
                    eps=resnet_eps,
                    groups=norm_num_groups,
                    non_linearity=resnet_act_fn,
                    output_scale_factor=output_scale_factor,
                )
                for i in range(num_layers)
            ]
        )
        self._init_layers(out_channels, num_layers, attention, video_modules, norm_num_groups)
        self.downsamplers = (
            nn.ModuleList(
                [
                    Downsample2D(
                        out_channels,
                        use_conv=True,
                        out_channels=out_channels,
                        padding=downsample_padding,
                        name="op",
                    )
                ]
            )
            if add_downsample
            else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        motion_hidden_states: torch.Tensor | None = None,
        num_frames: int = 1,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Returns the block output and the skip tensors ``((b f), C, H, W)`` for the decoder."""
        output_states: tuple[torch.Tensor, ...] = ()
        for index, resnet in enumerate(self.resnets):
            hidden_states = self._run(resnet, hidden_states, temb)
            hidden_states = self._layer_tail(
                index, hidden_states, encoder_hidden_states, motion_hidden_states, num_frames
            )
            output_states += (hidden_states,)
        if self.downsamplers is not None:
            for downsampler in self.downsamplers:
                hidden_states = downsampler(hidden_states)
            output_states += (hidden_states,)
        return hidden_states, output_states


class MidBlock(_UNetBlock):
    """Bottleneck: ResNet, then ``num_layers`` x (transformer -> [motion] -> [temporal] -> ResNet).

    Args:
        in_channels: Channels (unchanged through the block).
        temb_channels: Width of the time embedding.
        resnet_eps: GroupNorm epsilon of the ResNets.
        resnet_act_fn: Activation of the ResNets.
        norm_num_groups: GroupNorm groups.
        output_scale_factor: ResNet output scale (``mid_block_scale_factor``).
        attention: Spatial-transformer spec.
        video_modules: Motion/temporal spec, ``None`` for an image network.
        num_layers: Transformer/ResNet pairs after the first ResNet.
    """

    def __init__(
        self,
        in_channels: int,
        temb_channels: int,
        resnet_eps: float,
        resnet_act_fn: str,
        norm_num_groups: int,
        output_scale_factor: float,
        attention: AttentionSpec,
        video_modules: VideoModuleSpec | None = None,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(
                    in_channels=in_channels,
                    out_channels=in_channels,
                    temb_channels=temb_channels,
                    eps=resnet_eps,
                    groups=norm_num_groups,
                    non_linearity=resnet_act_fn,
                    output_scale_factor=output_scale_factor,
                )
                for _ in range(num_layers + 1)
            ]
        )
        self._init_layers(in_channels, num_layers, attention, video_modules, norm_num_groups)

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        motion_hidden_states: torch.Tensor | None = None,
        num_frames: int = 1,
    ) -> torch.Tensor:
        """``hidden_states`` ``((b f), C, H, W)`` -> same shape."""
        hidden_states = self._run(self.resnets[0], hidden_states, temb)
        for index, resnet in enumerate(self.resnets[1:]):
            hidden_states = self._layer_tail(
                index, hidden_states, encoder_hidden_states, motion_hidden_states, num_frames
            )
            hidden_states = self._run(resnet, hidden_states, temb)
        return hidden_states


class UpBlock(_UNetBlock):
    """Decoder block: ``num_layers`` x (concat skip -> ResNet -> [transformer] -> [motion] ->
    [temporal]), then an optional nearest x2 upsampling + 3x3 convolution.

    Args:
        in_channels: Channels of the deepest skip tensor consumed by the last layer.
        prev_output_channel: Channels coming from the previous (deeper) block.
        out_channels: Output channels.
        temb_channels: Width of the time embedding.
        num_layers: Layers in the block.
        add_upsample: Append the upsampler.
        resnet_eps: GroupNorm epsilon of the ResNets.
        resnet_act_fn: Activation of the ResNets.
        norm_num_groups: GroupNorm groups.
        output_scale_factor: ResNet output scale.
        attention: Spatial-transformer spec, ``None`` for a block without attention.
        video_modules: Motion/temporal spec, ``None`` for an image network.
    """

    def __init__(
        self,
        in_channels: int,
        prev_output_channel: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        add_upsample: bool,
        resnet_eps: float,
        resnet_act_fn: str,
        norm_num_groups: int,
        output_scale_factor: float = 1.0,
        attention: AttentionSpec | None = None,
        video_modules: VideoModuleSpec | None = None,
    ) -> None:
        super().__init__()
        resnets = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in_channels = prev_output_channel if i == 0 else out_channels
            resnets.append(
                ResnetBlock2D(
                    in_channels=resnet_in_channels + skip_channels,
                    out_channels=out_channels,
                    temb_channels=temb_channels,
                    eps=resnet_eps,
                    groups=norm_num_groups,
                    non_linearity=resnet_act_fn,
                    output_scale_factor=output_scale_factor,
                )
            )
        self.resnets = nn.ModuleList(resnets)
        self._init_layers(out_channels, num_layers, attention, video_modules, norm_num_groups)
        self.upsamplers = (
            nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
            if add_upsample
            else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        res_hidden_states_tuple: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        motion_hidden_states: torch.Tensor | None = None,
        num_frames: int = 1,
        upsample_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Consume ``len(self.resnets)`` skip tensors from the end of the skip tuple."""
        for index, resnet in enumerate(self.resnets):
            skip = res_hidden_states_tuple[-1]
            res_hidden_states_tuple = res_hidden_states_tuple[:-1]
            hidden_states = torch.cat([hidden_states, skip], dim=1)
            hidden_states = self._run(resnet, hidden_states, temb)
            hidden_states = self._layer_tail(
                index, hidden_states, encoder_hidden_states, motion_hidden_states, num_frames
            )
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden_states = upsampler(hidden_states, upsample_size)
        return hidden_states


# --- UNet assembly helpers shared by the 2-D and 3-D UNets ---------------------------------

_ATTENTION_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock3D")
_PLAIN_DOWN = ("DownBlock2D", "DownBlock3D")
_ATTENTION_UP = ("CrossAttnUpBlock2D", "CrossAttnUpBlock3D")
_PLAIN_UP = ("UpBlock2D", "UpBlock3D")


def block_has_attention(block_type: str) -> bool:
    """Whether an official/diffusers block type name carries spatial transformers."""
    if block_type in _ATTENTION_DOWN or block_type in _ATTENTION_UP:
        return True
    if block_type in _PLAIN_DOWN or block_type in _PLAIN_UP:
        return False
    raise ValueError(f"unsupported UNet block type {block_type!r}")


def per_block(value: int | Sequence[int], count: int, name: str) -> list[int]:
    """Expand an int-or-list config value to one entry per block."""
    if isinstance(value, int):
        return [value] * count
    values = list(value)
    if len(values) != count:
        raise ValueError(f"{name} must have {count} entries, got {len(values)}")
    return values


def timestep_batch(
    timestep: torch.Tensor | float | int, batch: int, device: torch.device
) -> torch.Tensor:
    """Broadcast a scalar / 0-d / (1,) / (B,) timestep to shape ``(batch,)``."""
    if not torch.is_tensor(timestep):
        dtype = torch.float64 if isinstance(timestep, float) else torch.int64
        timestep = torch.tensor([timestep], dtype=dtype, device=device)
    elif timestep.ndim == 0:
        timestep = timestep[None].to(device)
    # (1,) or (B,) -> (B,)
    return timestep.to(device).expand(batch)


def check_unsupported_unet_options(
    only_cross_attention: bool | Sequence[bool],
    dual_cross_attention: bool,
    num_class_embeds: int | None,
    resnet_time_scale_shift: str,
) -> None:
    """Reject SD UNet options that X-NeMo never uses (rather than silently ignoring them)."""
    if (isinstance(only_cross_attention, bool) and only_cross_attention) or (
        not isinstance(only_cross_attention, bool) and any(only_cross_attention)
    ):
        raise NotImplementedError("only_cross_attention is not used by X-NeMo")
    if dual_cross_attention:
        raise NotImplementedError("dual_cross_attention is not used by X-NeMo")
    if num_class_embeds is not None:
        raise NotImplementedError("class embeddings are not used by X-NeMo")
    if resnet_time_scale_shift != "default":
        raise NotImplementedError("only resnet_time_scale_shift='default' is supported")


def build_stem(
    in_channels: int,
    block_out_channels: Sequence[int],
    flip_sin_to_cos: bool,
    freq_shift: int,
    act_fn: str,
) -> tuple[nn.Conv2d, Timesteps, TimestepEmbedding]:
    """``conv_in``, sinusoidal timestep projection and the 2-layer time-embedding MLP."""
    base = block_out_channels[0]
    conv_in = nn.Conv2d(in_channels, base, kernel_size=3, padding=1)
    time_proj = Timesteps(base, flip_sin_to_cos, freq_shift)
    time_embedding = TimestepEmbedding(base, base * 4, act_fn=act_fn)
    return conv_in, time_proj, time_embedding


def build_unet_blocks(
    *,
    down_block_types: Sequence[str],
    up_block_types: Sequence[str],
    block_out_channels: Sequence[int],
    layers_per_block: int,
    downsample_padding: int,
    mid_block_scale_factor: float,
    act_fn: str,
    norm_num_groups: int,
    norm_eps: float,
    cross_attention_dim: int,
    attention_head_dim: int | Sequence[int],
    use_linear_projection: bool,
    video_modules_for: dict[str, VideoModuleSpec] | None = None,
) -> tuple[nn.ModuleList, MidBlock, nn.ModuleList]:
    """Build the down blocks, mid block and up blocks of an SD-layout UNet.

    ``video_modules_for`` (used by the 3-D UNet) maps ``"down.<i>"``, ``"mid"`` and ``"up.<i>"`` to
    a :class:`~reenactment.engine.networks.unet_blocks.VideoModuleSpec`; ``None`` builds an
    image UNet.
    """
    count = len(down_block_types)
    if len(up_block_types) != count or len(block_out_channels) != count:
        raise ValueError("down/up block types and block_out_channels must have the same length")
    heads = per_block(attention_head_dim, count, "attention_head_dim")
    temb_channels = block_out_channels[0] * 4
    video = video_modules_for or {}

    def spec(has_attention: bool, num_heads: int) -> AttentionSpec | None:
        if not has_attention:
            return None
        return AttentionSpec(num_heads, cross_attention_dim, use_linear_projection)

    down_blocks = nn.ModuleList()
    output_channel = block_out_channels[0]
    for i, block_type in enumerate(down_block_types):
        input_channel, output_channel = output_channel, block_out_channels[i]
        down_blocks.append(
            DownBlock(
                in_channels=input_channel,
                out_channels=output_channel,
                temb_channels=temb_channels,
                num_layers=layers_per_block,
                add_downsample=i < count - 1,
                resnet_eps=norm_eps,
                resnet_act_fn=act_fn,
                norm_num_groups=norm_num_groups,
                downsample_padding=downsample_padding,
                attention=spec(block_has_attention(block_type), heads[i]),
                video_modules=video.get(f"down.{i}"),
            )
        )

    mid_block = MidBlock(
        in_channels=block_out_channels[-1],
        temb_channels=temb_channels,
        resnet_eps=norm_eps,
        resnet_act_fn=act_fn,
        norm_num_groups=norm_num_groups,
        output_scale_factor=mid_block_scale_factor,
        attention=AttentionSpec(heads[-1], cross_attention_dim, use_linear_projection),
        video_modules=video.get("mid"),
    )

    up_blocks = nn.ModuleList()
    reversed_channels = list(reversed(block_out_channels))
    reversed_heads = list(reversed(heads))
    output_channel = reversed_channels[0]
    for i, block_type in enumerate(up_block_types):
        prev_output_channel, output_channel = output_channel, reversed_channels[i]
        input_channel = reversed_channels[min(i + 1, count - 1)]
        up_blocks.append(
            UpBlock(
                in_channels=input_channel,
                prev_output_channel=prev_output_channel,
                out_channels=output_channel,
                temb_channels=temb_channels,
                num_layers=layers_per_block + 1,
                add_upsample=i < count - 1,
                resnet_eps=norm_eps,
                resnet_act_fn=act_fn,
                norm_num_groups=norm_num_groups,
                attention=spec(block_has_attention(block_type), reversed_heads[i]),
                video_modules=video.get(f"up.{i}"),
            )
        )
    return down_blocks, mid_block, up_blocks


def embed_timestep(
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    timestep: torch.Tensor | float | int,
    sample: torch.Tensor,
) -> torch.Tensor:
    """Sinusoidal projection + MLP of the timestep, one row per batch item ``(B, 4 * C0)``."""
    timesteps = timestep_batch(timestep, sample.shape[0], sample.device)
    t_emb = time_proj(timesteps)
    # The projection always returns float32; the MLP may run in half precision.
    t_emb = t_emb.to(dtype=time_embedding.linear_1.weight.dtype)
    return time_embedding(t_emb)


def run_unet_body(
    down_blocks: nn.ModuleList,
    mid_block: MidBlock,
    up_blocks: nn.ModuleList,
    sample: torch.Tensor,
    emb: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    motion_hidden_states: torch.Tensor | None = None,
    num_frames: int = 1,
) -> torch.Tensor:
    """Encoder, bottleneck and decoder of an SD-layout UNet on ``(N, C, H, W)`` features.

    Args:
        down_blocks: :class:`DownBlock` list.
        mid_block: The bottleneck.
        up_blocks: :class:`UpBlock` list.
        sample: Output of ``conv_in`` ``(N, C0, H, W)`` with ``N = b * num_frames``.
        emb: Time embedding per row ``(N, 4 * C0)``.
        encoder_hidden_states: CLIP context per row ``(N, L, D)``.
        motion_hidden_states: Motion tokens per row ``(N, 32, 16)`` (video UNet only).
        num_frames: Frames folded into the batch.

    Returns:
        The last up block's output ``(N, C0, H, W)``.
    """
    # Odd sizes: force each upsampler to the size of the matching skip tensor.
    factor = 2 ** sum(cast(UpBlock, block).upsamplers is not None for block in up_blocks)
    forward_upsample_size = any(size % factor != 0 for size in sample.shape[-2:])

    skips: tuple[torch.Tensor, ...] = (sample,)
    for block in down_blocks:
        sample, res_samples = cast(DownBlock, block)(
            sample, emb, encoder_hidden_states, motion_hidden_states, num_frames
        )
        skips += res_samples

    sample = mid_block(sample, emb, encoder_hidden_states, motion_hidden_states, num_frames)

    for index, block in enumerate(up_blocks):
        up_block = cast(UpBlock, block)
        count = len(up_block.resnets)
        res_samples, skips = skips[-count:], skips[:-count]
        upsample_size = None
        if forward_upsample_size and index < len(up_blocks) - 1:
            upsample_size = (skips[-1].shape[2], skips[-1].shape[3])
        sample = up_block(
            sample,
            res_samples,
            emb,
            encoder_hidden_states,
            motion_hidden_states,
            num_frames,
            upsample_size,
        )
    return sample


# Keys of newer diffusers `UNet2DConditionModel` configs that X-NeMo does not implement, with the
# value at which they have no effect. Such keys are dropped; any other value is an error, so that
# a config asking for a different architecture is never silently built as SD 1.x.
NEUTRAL_SD_UNET_KEYS: dict[str, Any] = {
    "addition_embed_type": None,
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": None,
    "attention_type": "default",
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_norm": None,
    "dropout": 0.0,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "mid_block_only_cross_attention": None,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "num_attention_heads": None,
    "projection_class_embeddings_input_dim": None,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "reverse_transformer_layers_per_block": None,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": 1,
}


def sanitize_sd_unet_config(config: Mapping[str, Any], accepted: Iterable[str]) -> dict[str, Any]:
    """Constructor kwargs from an SD UNet ``config.json``.

    Drops ``_``-prefixed metadata and neutral keys of newer diffusers versions; raises on keys that
    are neither accepted nor neutral.

    Args:
        config: The SD UNet config.
        accepted: Parameter names of the target constructor.

    Raises:
        ValueError: Naming every key that would change the architecture but is not supported.
    """
    accepted = set(accepted)
    kwargs: dict[str, Any] = {}
    unsupported = []
    for key, value in config.items():
        if key.startswith("_"):
            continue
        if key in accepted:
            kwargs[key] = copy.deepcopy(value)
        elif key in NEUTRAL_SD_UNET_KEYS and value == NEUTRAL_SD_UNET_KEYS[key]:
            continue
        else:
            unsupported.append(f"{key}={value!r}")
    if unsupported:
        raise ValueError(f"unsupported UNet config values: {', '.join(sorted(unsupported))}")
    return kwargs
