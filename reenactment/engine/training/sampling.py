"""A minimal reenactment sampler for trained models (evaluation, samples, smoke tests).

It follows the release's inference recipe (spec sec. 4) on already-cropped frames: CLIP token and
VAE latent of the reference; motion tokens of the driving frames, and of the reference itself for
the unconditional branch; initial latents = the reference latent blurred (9x9 Gaussian, sigma 18,
reflect) and noised to the first DDIM timestep; DDIM (eta 0) with classifier-free guidance through
:class:`ReferenceAttentionControl` + :func:`guided_noise_prediction`; VAE decode with
``num_frames`` = clip length. Box parameters are ``(0, 0, 1)`` as in the release. No sliding
windows: clips must fit the temporal table (<= 32 frames).

The product pipeline (``pipeline_reenactment.py``) adds face tracking, windows and video I/O; this
module only exists so the trainer and the benchmark do not depend on it.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F

from ..configs import COLOR_MATCH_MODES, strength_timesteps
from ..networks import ReferenceAttentionControl, guided_noise_prediction
from .components import Components, encode_clip, vae_decode, vae_encode

#: The ``initial_latents`` this sampler offers (the pipeline's ``"noise"`` is not among them).
SAMPLER_INITIAL_LATENTS = ("blurred_reference", "reference")
INIT_BLUR_KERNEL = 9
INIT_BLUR_SIGMA = 18.0


def gaussian_blur(latents: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding on ``(N, C, H, W)``."""
    half = kernel // 2
    x = torch.arange(kernel, dtype=torch.float32, device=latents.device) - half
    weights = torch.exp(-(x**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).to(latents.dtype)
    channels = latents.shape[1]
    pad = min(half, latents.shape[-1] - 1, latents.shape[-2] - 1)
    out = F.pad(latents, (pad, pad, pad, pad), mode="reflect")
    if pad < half:
        # Tiny latents: renormalise a shorter kernel instead of over-padding.
        weights = weights[half - pad : half + pad + 1]
        weights = weights / weights.sum()
    k = weights.numel()
    out = F.conv2d(out, weights.view(1, 1, 1, k).expand(channels, 1, 1, k), groups=channels)
    return F.conv2d(out, weights.view(1, 1, k, 1).expand(channels, 1, k, 1), groups=channels)


def motion_condition(
    components: Components, images: torch.Tensor, size: int | None = None
) -> torch.Tensor:
    """Motion input of the denoiser for crops ``(B, 3, F, S, S)`` or ``(B, 3, S, S)``.

    Motion tokens ``(B, F, 32, 16)`` / ``(B, 32, 16)`` for X-NeMo, spatial maps for the baseline.
    Box parameters are ``(0, 0, 1)``.
    """
    size = size or components.config.motion_input_size
    clip = images.ndim == 5
    flat = images.transpose(1, 2).flatten(0, 1) if clip else images
    if flat.shape[-1] != size:
        flat = F.interpolate(flat, size=(size, size), mode="bilinear", antialias=True)
    bbox = flat.new_tensor([0.0, 0.0, 1.0]).expand(flat.shape[0], 3)
    out = components.motion_encoder(flat, bbox)
    if clip:
        # (b f) ... -> b f ...
        out = out.reshape(images.shape[0], images.shape[2], *out.shape[1:])
    return out


#: The generation defaults of a model folder that :func:`reenact` takes (the product pipeline's
#: ``resolution`` and ``paste_back`` do not apply to already-cropped frames).
SAMPLER_SETTINGS = (
    "num_inference_steps",
    "guidance_scale",
    "strength",
    "initial_latents",
    "color_match",
    "refine_details",
)


def recommended_sampler_settings(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The :data:`SAMPLER_SETTINGS` a model or run folder recommends (``_generation_defaults``)."""
    from ..loading import read_generation_defaults
    from .export import resolve_model_folder

    recommended = read_generation_defaults(resolve_model_folder(folder))
    return {key: recommended[key] for key in SAMPLER_SETTINGS if key in recommended}


@torch.no_grad()
def reenact(
    components: Components,
    reference: torch.Tensor,
    driving: torch.Tensor,
    *,
    num_inference_steps: int = 25,
    guidance_scale: float = 2.5,
    seed: int = 0,
    strength: float = 1.0,
    initial_latents: str = "blurred_reference",
    color_match: str = "none",
    refine_details: bool = True,
) -> torch.Tensor:
    """Animate ``reference`` ``(B, 3, S, S)`` with ``driving`` ``(B, 3, F, S, S)`` (``[-1, 1]``).

    ``strength``, ``initial_latents`` (``"blurred_reference"``, the release, or
    ``"reference"``) and ``color_match`` (``"none"`` or ``"reference"``, fitted per clip) have
    the product pipeline's meaning, and so has ``refine_details`` (the components' detail
    refiner, when they have one, corrects the decoded frames with the portrait).

    Returns:
        Frames ``(B, 3, F, S, S)`` in ``[-1, 1]``.
    """
    batch, _, frames, _, _ = driving.shape
    if frames > 32:
        raise ValueError("at most 32 frames per call (temporal position table)")
    device = reference.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for module in (
        components.reference_unet,
        components.denoising_unet,
        components.motion_encoder,
        components.vae,
    ):
        module.eval()
    clip = encode_clip(components.image_encoder, reference)
    ref_latent = vae_encode(components.vae, reference)  # (B, C, h, w)
    motion = motion_condition(components, driving)
    neg_motion = motion_condition(components, reference)
    if neg_motion.ndim == 4 and motion.ndim == 5:
        # Spatial baseline: (B, C, h, w) -> (B, F, C, h, w) per frame.
        neg_motion = neg_motion[:, None].expand_as(motion)

    scheduler = components.inference_scheduler()
    scheduler.set_timesteps(num_inference_steps)
    timesteps = strength_timesteps(scheduler.timesteps, strength)
    first = timesteps[0]
    if initial_latents not in SAMPLER_INITIAL_LATENTS:
        raise ValueError(f"unknown initial latents {initial_latents!r}")
    if color_match not in COLOR_MATCH_MODES:
        raise ValueError(f"unknown colour match {color_match!r}")
    blurred = (
        gaussian_blur(ref_latent, INIT_BLUR_KERNEL, INIT_BLUR_SIGMA)
        if initial_latents == "blurred_reference"
        else ref_latent
    )
    # b c h w -> b c f h w
    init = blurred[:, :, None].expand(-1, -1, frames, -1, -1)
    noise = torch.randn(init.shape, generator=generator).to(device)
    latents = scheduler.add_noise(init, noise, first.reshape(1))

    with ReferenceAttentionControl(
        components.reference_unet, components.denoising_unet, do_classifier_free_guidance=True
    ) as control:
        control.write(ref_latent, clip)
        for t in timesteps:
            step = guided_noise_prediction(
                components.denoising_unet,
                latents,
                t,
                clip,
                motion,
                neg_motion,
                guidance_scale,
            )
            latents = scheduler.step(step.noise_pred, t, latents).prev_sample
    # b c f h w -> (b f) c h w
    flat = latents.transpose(1, 2).flatten(0, 1)
    images = vae_decode(components.vae, flat, num_frames=frames).clamp(-1, 1)
    if refine_details and components.detail_refiner is not None:
        components.detail_refiner.eval()
        # b c h w -> (b f) c h w: every frame with its own clip's portrait
        portraits = reference.repeat_interleave(frames, dim=0)
        images = components.detail_refiner(images, portraits).clamp(-1, 1)
    # (b f) c h w -> b c f h w
    clips = images.reshape(batch, frames, *images.shape[1:]).transpose(1, 2)
    if color_match == "reference":
        clips = torch.stack(
            [_color_matched(clip, portrait) for clip, portrait in zip(clips, reference)]
        )
    return clips


def _color_matched(clip: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """:class:`~reenactment.engine.preprocessing.ColorMatch` of one clip ``(3, F, S, S)`` to its
    reference ``(3, S, S)``, both in ``[-1, 1]``, fitted on all frames of the clip."""
    from ..preprocessing import ColorMatch

    # c f h w -> f h w c, [-1, 1] -> 0..255
    frames = ((clip.permute(1, 2, 3, 0).float().cpu() + 1) * 127.5).numpy()
    portrait = ((reference.permute(1, 2, 0).float().cpu() + 1) * 127.5).numpy()
    matched = ColorMatch.fit(frames, portrait).apply(frames)
    # f h w c -> c f h w, back to [-1, 1]
    out = torch.from_numpy(matched).permute(3, 0, 1, 2) / 127.5 - 1
    return out.to(device=clip.device, dtype=clip.dtype)


__all__ = [
    "SAMPLER_INITIAL_LATENTS",
    "SAMPLER_SETTINGS",
    "gaussian_blur",
    "motion_condition",
    "recommended_sampler_settings",
    "reenact",
]
