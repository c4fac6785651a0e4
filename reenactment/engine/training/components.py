"""Everything a training run builds: the three X-NeMo networks plus VAE, CLIP and scheduler.

Two families of configurations share this code:

* **official size** - SD image-variations UNets, the FAN motion encoder (:class:`MotionEncoder`,
  224x224 crops, 61.7 M parameters), the SVD-xt VAE and CLIP ViT-L/14 read from local folders
  (``vae = {"type": "pretrained", "path": ...}``; never downloaded). This is the GPU recipe.
* **small** - UNets of any ``block_out_channels``, the :class:`CompactMotionEncoder` (same
  interface and token layout as the official encoder, a few hundred thousand parameters, any
  input size) and tiny VAE/CLIP networks. This is what runs on a CPU and what the preview model
  ships.

Choices for the small family (documented in the model card too):

* Motion encoder: :class:`CompactMotionEncoder`. Even at toy widths the FAN encoder works on
  224x224 crops through 112x112 and 56x56 hourglass stages (about 3x the cost of both UNets per
  training step on a CPU); the compact one keeps the official head and token layout (box MLP,
  ``final_proj``, 32 tokens x 16 plus ``pe``) on a small conv/attention backbone at 64x64.
* Schedule: SD's ``beta_end`` 0.012 instead of the release's 0.02 (see :meth:`ModelConfig.small`).

* VAE: a tiny :class:`~diffusers.AutoencoderKLTemporalDecoder` (the SVD VAE class, so the
  inference pipeline decodes it unchanged). Training an SVD-size VAE on a CPU is impossible, so
  *stage 0* of the trainer trains the tiny one briefly as an autoencoder on the same snapshot
  (L1 + random-feature perceptual loss + a small KL term), then calibrates it: the encoder
  output is rescaled (an exact reparametrisation of ``quant_conv`` and ``decoder.conv_in``) so that
  ``0.18215 * latent`` has unit standard deviation, the scaling the pipeline hard-codes.
* CLIP: a tiny :class:`~transformers.CLIPVisionModelWithProjection`, randomly initialised from the
  run seed and **frozen**. Its one embedding token is a fixed random projection of the reference;
  appearance reaches the denoiser through the reference UNet, which is what X-NeMo relies on
  anyway. Freezing keeps the CFG "zero token" meaningful and costs nothing.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder, DDIMScheduler, DDPMScheduler
from torch import nn

from ..configs import scheduler_config, sd_unet_config, unet_additional_kwargs
from ..networks import (
    MotionEncoder,
    ReferenceDetailRefiner,
    UNet2DReferenceModel,
    UNet3DDenoisingModel,
)
from ..networks.compact_motion_encoder import CompactMotionEncoder
from ..networks.unet_3d_denoising import denoising_unet_kwargs

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LATENT_SCALE = 0.18215  # hard-coded by the X-NeMo pipeline for the reference latent


# --------------------------------------------------------------------------------------------
# Model configuration
# --------------------------------------------------------------------------------------------


def small_unet_config(
    block_out_channels: Sequence[int] = (32, 32, 64, 64),
    layers_per_block: int = 1,
    cross_attention_dim: int = 32,
    norm_num_groups: int = 8,
    sample_size: int = 16,
) -> dict[str, Any]:
    """The SD image-variations UNet config with only sizes changed (like the parity fixture)."""
    config = sd_unet_config()
    config.update(
        block_out_channels=list(block_out_channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
    )
    return config


@dataclass
class ModelConfig:
    """Sizes and sources of every network of a run (JSON-serialisable).

    Args:
        unet: SD-style 2-D UNet config (both UNets derive from it, as in the release).
        unet_additional_kwargs: X-NeMo's denoiser extras (motion/temporal modules).
        motion_encoder: ``{"type": "official"}`` or ``{"type": "compact", **kwargs}``.
        vae: ``{"type": "tiny", "block_out_channels": [...], ...}`` or
            ``{"type": "pretrained", "path": "<local folder>"}``.
        image_encoder: ``{"type": "tiny", ...}`` or ``{"type": "pretrained", "path": ...}``.
        scheduler: DDIM/DDPM arguments (the release's inference schedule by default).
        resolution: Frame size the model works at.
        motion_input_size: Size of the driving crops given to the motion encoder.
        variant: ``"xnemo"`` (motion cross-attention) or ``"spatial_baseline"`` (see
            :mod:`.baseline`).
        detail_refiner: Options of an optional
            :class:`~reenactment.engine.networks.ReferenceDetailRefiner` (``{}`` for its
            defaults; it works at ``resolution``), trained in stage 3; None: no refiner.
    """

    unet: dict[str, Any]
    unet_additional_kwargs: dict[str, Any]
    motion_encoder: dict[str, Any]
    vae: dict[str, Any]
    image_encoder: dict[str, Any]
    scheduler: dict[str, Any]
    resolution: int = 64
    motion_input_size: int = 64
    variant: str = "xnemo"
    detail_refiner: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self._check_latent_channels()

    def _check_latent_channels(self) -> None:
        """A tiny VAE's latent channels must be what both UNets read and the denoiser predicts
        (checked here, not as a shape error at the first training step)."""
        if self.vae.get("type") != "tiny":
            return
        channels = int(self.vae.get("latent_channels", 4))
        unet = {k: int(self.unet.get(k, 4)) for k in ("in_channels", "out_channels")}
        if any(value != channels for value in unet.values()):
            raise ValueError(
                f"the VAE has {channels} latent channels but the UNet config has "
                f"in_channels {unet['in_channels']} and out_channels {unet['out_channels']}; "
                "set all three to the same number"
            )

    @classmethod
    def official(cls, vae_path: str, image_encoder_path: str) -> ModelConfig:
        """Full-size networks; VAE and CLIP from local folders."""
        return cls(
            unet=sd_unet_config(),
            unet_additional_kwargs=unet_additional_kwargs(),
            motion_encoder={"type": "official"},
            vae={"type": "pretrained", "path": vae_path},
            image_encoder={"type": "pretrained", "path": image_encoder_path},
            scheduler=scheduler_config(),
            resolution=512,
            motion_input_size=224,
        )

    @classmethod
    def small(cls, **overrides: Any) -> ModelConfig:
        """The CPU-sized configuration of the preview model (64x64 frames, 16x16 latents)."""
        config = cls(
            unet=small_unet_config(),
            unet_additional_kwargs=unet_additional_kwargs(),
            motion_encoder={"type": "compact", "input_size": 64, "channels": [32, 64, 96]},
            vae={
                "type": "tiny",
                # The SVD VAE class hard-codes GroupNorm(32): with 32 channels every norm is an
                # instance norm, which erases absolute colour right before the decoder output;
                # 64 channels (2 per group) keep it.
                "block_out_channels": [64, 64, 64],
                "layers_per_block": 1,
                "latent_channels": 4,
            },
            image_encoder={
                "type": "tiny",
                "image_size": 224,
                "patch_size": 32,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
            },
            # SD's own schedule (beta_end 0.012) instead of the release's 0.02: at the first
            # DDIM step (t = 953) the signal is 14x stronger in SNR, which a small model trained
            # for a few thousand steps needs; the model folder's scheduler/ carries the choice.
            scheduler={**scheduler_config(), "beta_end": 0.012},
            resolution=64,
            motion_input_size=64,
        )
        for key, value in overrides.items():
            if not hasattr(config, key):
                raise ValueError(f"unknown model option {key!r}")
            setattr(config, key, value)
        config._check_latent_channels()
        return config

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        preset = data.get("preset")
        base = cls.small() if preset in (None, "small") else None
        if base is None:
            raise ValueError(f"unknown model preset {preset!r}")
        merged = base.to_dict()
        for key, value in data.items():
            if key == "preset":
                continue
            if key not in merged:
                raise ValueError(f"unknown model option {key!r}")
            same_kind = isinstance(value, Mapping) and value.get("type") in (
                None,
                merged[key].get("type") if isinstance(merged[key], dict) else None,
            )
            if isinstance(merged[key], dict) and isinstance(value, Mapping) and same_kind:
                # Override single options of the preset (a different "type" replaces it).
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "unet": self.unet,
                "unet_additional_kwargs": self.unet_additional_kwargs,
                "motion_encoder": self.motion_encoder,
                "vae": self.vae,
                "image_encoder": self.image_encoder,
                "scheduler": self.scheduler,
                "resolution": self.resolution,
                "motion_input_size": self.motion_input_size,
                "variant": self.variant,
                "detail_refiner": self.detail_refiner,
            }
        )

    @property
    def latent_size(self) -> int:
        if self.vae["type"] == "tiny":
            return self.resolution // 2 ** (len(self.vae["block_out_channels"]) - 1)
        return self.resolution // 8


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


@dataclass
class Components:
    """The networks of one run (``denoising_unet`` may be the spatial baseline wrapper)."""

    reference_unet: UNet2DReferenceModel
    denoising_unet: nn.Module
    motion_encoder: nn.Module
    vae: AutoencoderKLTemporalDecoder
    image_encoder: nn.Module
    noise_scheduler: DDPMScheduler
    config: ModelConfig
    detail_refiner: ReferenceDetailRefiner | None = None

    def inference_scheduler(self) -> DDIMScheduler:
        return DDIMScheduler(**self.config.scheduler)


def build_motion_encoder(spec: Mapping[str, Any]) -> nn.Module:
    kind = spec.get("type", "official")
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    if kind == "official":
        return MotionEncoder(**kwargs)
    if kind == "compact":
        return CompactMotionEncoder(**kwargs)
    raise ValueError(f"unknown motion encoder type {kind!r}")


VAE_TEMPORAL_MARKERS = (".time_mixer.", ".temporal_res_block.", ".time_conv_out.")


def make_vae_decoder_per_frame(vae: AutoencoderKLTemporalDecoder) -> None:
    """Neutralise the temporal layers of an SVD-class VAE decoder (in place).

    The temporal decoder mixes each spatio-temporal ResNet's temporal branch in with a learned
    factor and ends in a temporal convolution (kernel 3, zero padding), so a frame's colours
    depend on its position in the decoded chunk and on the chunk length - a tiny VAE trained on
    2-frame chunks decodes 4-frame chunks with a different colour cast per frame. For the tiny
    VAE the temporal branches are switched off (mix factor -30, i.e. weight ~1e-13) and the last
    convolution becomes the identity along time; :func:`is_vae_temporal_parameter` marks them so
    stage 0 keeps them frozen. The class (and so the pipeline's loading) is unchanged.
    """
    with torch.no_grad():
        for name, module in vae.decoder.named_modules():
            if name.endswith("time_mixer") and hasattr(module, "mix_factor"):
                if not module.switch_spatial_to_temporal_mix or module.merge_strategy != "learned":
                    raise ValueError(f"unexpected time mixer at decoder.{name}")
                module.mix_factor.fill_(-30.0)  # weight of the temporal branch: sigmoid(-30)
        conv = vae.decoder.time_conv_out
        conv.weight.zero_()
        centre = conv.kernel_size[0] // 2
        for channel in range(conv.out_channels):
            conv.weight[channel, channel, centre] = 1.0
        conv.bias.zero_()


def is_vae_temporal_parameter(name: str) -> bool:
    """A parameter of the VAE decoder's temporal layers (frozen for the tiny VAE)."""
    return any(marker in f".{name}" for marker in VAE_TEMPORAL_MARKERS)


def build_vae(spec: Mapping[str, Any]) -> AutoencoderKLTemporalDecoder:
    kind = spec.get("type")
    if kind == "tiny":
        channels = list(spec["block_out_channels"])
        vae = AutoencoderKLTemporalDecoder(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(channels),
            block_out_channels=tuple(channels),
            layers_per_block=int(spec.get("layers_per_block", 1)),
            latent_channels=int(spec.get("latent_channels", 4)),
            scaling_factor=LATENT_SCALE,
        )
        make_vae_decoder_per_frame(vae)
        return vae
    if kind == "pretrained":
        from ..loading import load_svd_vae

        return load_svd_vae(spec["path"])
    raise ValueError(f"unknown VAE type {kind!r}")


def build_image_encoder(spec: Mapping[str, Any], projection_dim: int) -> nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    kind = spec.get("type")
    if kind == "tiny":
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        config = CLIPVisionConfig(projection_dim=projection_dim, **kwargs)
        return CLIPVisionModelWithProjection(config)
    if kind == "pretrained":
        from ..loading import load_clip_image_encoder

        return load_clip_image_encoder(spec["path"])
    raise ValueError(f"unknown image encoder type {kind!r}")


def build_denoising_unet(config: ModelConfig) -> nn.Module:
    if config.variant == "xnemo":
        return UNet3DDenoisingModel(
            **denoising_unet_kwargs(config.unet, config.unet_additional_kwargs)
        )
    if config.variant == "spatial_baseline":
        from .baseline import SpatialMotionDenoiser

        return SpatialMotionDenoiser.from_model_config(config)
    raise ValueError(f"unknown model variant {config.variant!r}")


def build_components(config: ModelConfig, seed: int = 0) -> Components:
    """Instantiate every network of ``config`` with a seeded initialisation (float32, CPU)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reference = UNet2DReferenceModel.from_sd_config(config.unet)
        denoising = build_denoising_unet(config)
        if config.variant == "spatial_baseline":
            from .baseline import SpatialMotionGuider

            motion: nn.Module = SpatialMotionGuider(
                out_channels=int(config.unet["block_out_channels"][0]),
                downsample=int(math.log2(config.resolution // config.latent_size)),
                input_size=config.motion_input_size,
            )
        else:
            motion = build_motion_encoder(config.motion_encoder)
        vae = build_vae(config.vae)
        image_encoder = build_image_encoder(
            config.image_encoder, int(config.unet["cross_attention_dim"])
        )
        refiner = build_detail_refiner(config)
    scheduler_kwargs = {
        k: v
        for k, v in config.scheduler.items()
        if k in ("beta_start", "beta_end", "beta_schedule", "prediction_type", "clip_sample")
    }
    return Components(
        reference_unet=reference,
        denoising_unet=denoising,
        motion_encoder=motion,
        vae=vae,
        image_encoder=image_encoder.eval().requires_grad_(False),
        noise_scheduler=DDPMScheduler(num_train_timesteps=1000, **scheduler_kwargs),
        config=config,
        detail_refiner=refiner,
    )


def build_detail_refiner(config: ModelConfig) -> ReferenceDetailRefiner | None:
    """The configured detail refiner at the model's resolution (None when it has none)."""
    if config.detail_refiner is None:
        return None
    options = dict(config.detail_refiner)
    if options.setdefault("sample_size", config.resolution) != config.resolution:
        raise ValueError(
            f"detail_refiner sample_size {options['sample_size']} must be the model's "
            f"resolution {config.resolution}"
        )
    return ReferenceDetailRefiner(**options)


def clip_pixel_values(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """``(N, 3, H, W)`` in ``[-1, 1]`` -> CLIP input: bicubic resize, ``[0, 1]``, mean/std."""
    x = (images.float() + 1.0) / 2.0
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bicubic", antialias=True, align_corners=False
        ).clamp(0.0, 1.0)
    mean = torch.tensor(CLIP_MEAN, device=x.device)[None, :, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[None, :, None, None]
    return (x - mean) / std


@torch.no_grad()
def encode_clip(image_encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """CLIP ``image_embeds`` of reference images ``(N, 3, H, W)`` -> ``(N, 1, D)``."""
    size = int(image_encoder.config.image_size)  # type: ignore[union-attr]
    pixels = clip_pixel_values(images, size).to(next(image_encoder.parameters()).dtype)
    return image_encoder(pixel_values=pixels).image_embeds[:, None]


def vae_encode(vae: AutoencoderKLTemporalDecoder, images: torch.Tensor) -> torch.Tensor:
    """Posterior means of ``(N, 3, H, W)`` images in ``[-1, 1]``, times 0.18215."""
    return vae.encode(images).latent_dist.mean * LATENT_SCALE


def vae_decode(
    vae: AutoencoderKLTemporalDecoder, latents: torch.Tensor, num_frames: int
) -> torch.Tensor:
    """``(N, 4, h, w)`` scaled latents -> images in ``[-1, 1]`` (``N`` a multiple of frames)."""
    return vae.decode(latents / vae.config.scaling_factor, num_frames=num_frames).sample


__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "LATENT_SCALE",
    "CompactMotionEncoder",
    "Components",
    "ModelConfig",
    "build_components",
    "build_denoising_unet",
    "build_detail_refiner",
    "build_image_encoder",
    "build_motion_encoder",
    "build_vae",
    "clip_pixel_values",
    "encode_clip",
    "is_vae_temporal_parameter",
    "make_vae_decoder_per_frame",
    "small_unet_config",
    "vae_decode",
    "vae_encode",
]
