"""Ablation baseline: motion injected as an added spatial feature map instead of cross-attention.

X-NeMo's central claim is that a 1-D motion latent read through cross-attention leaks less of
the driver's identity than spatially aligned control (pose-guider / ControlNet style), where the
driving face's shape can pass straight into the denoiser's feature maps. This module is the
spatial alternative, trained by the same trainer with the same data, budget and everything else
unchanged:

* :class:`SpatialMotionGuider` (takes the place of the motion encoder) - a small conv net from
  the (augmented) driving crop to a feature map at latent resolution with
  ``block_out_channels[0]`` channels, last conv zero-initialised (a fresh guider adds nothing),
  like AnimateAnyone's pose guider.
* :class:`SpatialMotionDenoiser` - the X-NeMo denoising UNet built **without** motion modules,
  whose ``conv_in`` output gets the guider map added before the first down block.

Everything else - reference UNet and reference attention, CLIP token, temporal modules,
classifier-free guidance (the unconditional branch gets the guider map of the reference image,
the analogue of the reference's motion tokens) - is identical. There is no 1-D motion latent,
so the GAN decoder of stage 1 does not apply to this variant.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..networks.attention import ReferenceTransformerBlock
from ..networks.unet_3d_denoising import UNet3DDenoisingModel, denoising_unet_kwargs
from ..networks.unet_blocks import embed_timestep, run_unet_body

if TYPE_CHECKING:
    from .components import ModelConfig


class SpatialMotionGuider(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """Driving crop -> additive feature map ``(B, F, C, h, w)`` (or ``(N, C, h, w)`` for images).

    Args:
        out_channels: Channels of the map (the denoiser's first level width).
        downsample: Number of stride-2 stages (image size / latent size = ``2^downsample``).
        channels: Hidden channels.
        input_size: Crop size (inputs of another size are resized).
    """

    @register_to_config
    def __init__(
        self,
        out_channels: int = 32,
        downsample: int = 2,
        channels: Sequence[int] = (16, 32, 64),
        input_size: int = 64,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, padding=1), nn.SiLU()]
        prev = channels[0]
        for i in range(downsample):
            ch = channels[min(i + 1, len(channels) - 1)]
            layers += [nn.Conv2d(prev, ch, 3, stride=2, padding=1), nn.SiLU()]
            prev = ch
        layers += [nn.Conv2d(prev, prev, 3, padding=1), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(prev, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(
        self, images: torch.Tensor, bbox_params: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Crops ``(N, 3, S, S)`` or ``(B, 3, F, S, S)`` in ``[-1, 1]``; box parameters unused."""
        clip = images.ndim == 5
        if clip:
            batch, channels, frames, height, width = images.shape
            # b c f h w -> (b f) c h w
            images = images.transpose(1, 2).reshape(batch * frames, channels, height, width)
        size = int(self.config["input_size"])
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
        out = self.conv_out(self.net(images))
        if clip:
            # (b f) c h w -> b f c h w
            out = out.reshape(batch, frames, *out.shape[1:])
        return out


class SpatialMotionDenoiser(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """The X-NeMo denoiser without motion modules, conditioned by an added spatial map.

    Args:
        unet_kwargs: Constructor arguments of :class:`UNet3DDenoisingModel` (with
            ``use_motion_module`` false).
    """

    @register_to_config
    def __init__(self, unet_kwargs: dict[str, Any]) -> None:
        super().__init__()
        kwargs = copy.deepcopy(dict(unet_kwargs))
        kwargs["use_motion_module"] = False
        self.unet = UNet3DDenoisingModel(**kwargs)

    @classmethod
    def from_model_config(cls, config: ModelConfig) -> SpatialMotionDenoiser:
        return cls(unet_kwargs=denoising_unet_kwargs(config.unet, config.unet_additional_kwargs))

    def reference_blocks(self) -> dict[str, ReferenceTransformerBlock]:
        """Transformer blocks by the same paths as the reference UNet's."""
        return self.unet.reference_blocks()

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | Sequence[torch.Tensor],
        motion_hidden_states: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> tuple[torch.Tensor]:
        """Same call as :meth:`UNet3DDenoisingModel.forward`; the motion input is the guider map
        ``(B, F, C, h, w)`` (or ``(B, C, h, w)`` shared by all frames)."""
        if not torch.is_tensor(encoder_hidden_states):
            encoder_hidden_states, motion_hidden_states = encoder_hidden_states
        unet = self.unet
        batch, _, num_frames, height, width = sample.shape
        emb = embed_timestep(unet.time_proj, unet.time_embedding, timestep, sample)
        # b d -> (b f) d
        emb = emb.repeat_interleave(num_frames, dim=0)
        # b l d -> (b f) l d
        context = encoder_hidden_states.repeat_interleave(num_frames, dim=0)
        # b c f h w -> (b f) c h w
        sample = sample.transpose(1, 2).reshape(batch * num_frames, -1, height, width)
        hidden = unet.conv_in(sample)
        if motion_hidden_states is not None:
            if motion_hidden_states.ndim == 4:
                # b c h w -> (b f) c h w
                motion = motion_hidden_states.repeat_interleave(num_frames, dim=0)
            else:
                # b f c h w -> (b f) c h w
                motion = motion_hidden_states.reshape(batch * num_frames, *hidden.shape[1:])
            hidden = hidden + motion.to(hidden.dtype)
        hidden = run_unet_body(
            unet.down_blocks, unet.mid_block, unet.up_blocks, hidden, emb, context, None, num_frames
        )
        out = unet.conv_out(unet.conv_act(unet.conv_norm_out(hidden)))
        # (b f) c h w -> b c f h w
        out = out.reshape(batch, num_frames, -1, height, width).transpose(1, 2).contiguous()
        return (out,)


__all__ = ["SpatialMotionDenoiser", "SpatialMotionGuider"]
