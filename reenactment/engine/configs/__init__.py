"""Full-size official X-NeMo configurations (pure Python, no heavy imports).

* :data:`SD_IMAGE_VARIATIONS_UNET_CONFIG` - ``sd-image-variations-diffusers/unet/config.json``, the
  base of both UNets (the reference UNet uses it as is; the denoising UNet swaps the block types
  for their 3-D counterparts and adds :data:`XNEMO_UNET_ADDITIONAL_KWARGS`).
* :data:`XNEMO_UNET_ADDITIONAL_KWARGS` - ``unet_additional_kwargs`` of the official
  ``configs/inference/inference_xnemo_stage2.yaml``.
* :data:`XNEMO_SCHEDULER_CONFIG` - the DDIM arguments of the same file (note ``beta_end`` 0.02).
* :data:`MOTION_ENCODER_CONFIG` - constructor values of the motion encoder (its size is fixed).

Use the ``*_config()`` functions to get independent deep copies that can be modified freely.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

TimestepsT = TypeVar("TimestepsT", bound=Sequence[Any])  # a list or a 1-D tensor

SD_IMAGE_VARIATIONS_UNET_CONFIG: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.9.0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
    "use_linear_projection": False,
}

XNEMO_UNET_ADDITIONAL_KWARGS: dict[str, Any] = {
    "use_inflated_groupnorm": True,
    "unet_use_cross_frame_attention": False,
    "unet_use_temporal_attention": False,
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": True,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "cross_attention_dim": 16,
        "attention_block_types": ["Spatial_Cross", "Spatial_Cross"],
        "temporal_position_encoding": False,
        "temporal_position_encoding_max_len": 32,
        "temporal_attention_dim_div": 1,
    },
    "use_temporal_module": True,
    "temporal_module_type": "Vanilla",
    "temporal_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 32,
        "temporal_attention_dim_div": 1,
    },
}

XNEMO_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.02,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

MOTION_ENCODER_CONFIG: dict[str, Any] = {"extra_feat_dim": 3, "out_ch": 16}

# Inference constants hard-wired in the official release (see the spec, sec. 4.0).
GUIDANCE_SCALE: float = 2.5
NUM_INFERENCE_STEPS: int = 35
REFERENCE_LATENT_SCALE: float = 0.18215


def sd_unet_config() -> dict[str, Any]:
    """A deep copy of :data:`SD_IMAGE_VARIATIONS_UNET_CONFIG`."""
    return copy.deepcopy(SD_IMAGE_VARIATIONS_UNET_CONFIG)


def unet_additional_kwargs() -> dict[str, Any]:
    """A deep copy of :data:`XNEMO_UNET_ADDITIONAL_KWARGS`."""
    return copy.deepcopy(XNEMO_UNET_ADDITIONAL_KWARGS)


def scheduler_config() -> dict[str, Any]:
    """A deep copy of :data:`XNEMO_SCHEDULER_CONFIG`."""
    return copy.deepcopy(XNEMO_SCHEDULER_CONFIG)


#: How the denoising may start: the release's blurred reference latent, the reference latent
#: itself, or pure noise (the pipeline's ``initial_latents``; the job API and the CLI offer these).
INITIAL_LATENTS_MODES: tuple[str, ...] = ("blurred_reference", "reference", "noise")

#: Colour correction of the generated faces (the pipeline's ``color_match``): none (the release)
#: or the reference crop's per-channel mean and spread (see ``preprocessing.ColorMatch``).
COLOR_MATCH_MODES: tuple[str, ...] = ("none", "reference")


def strength_timesteps(timesteps: TimestepsT, strength: float) -> TimestepsT:
    """The tail of a denoising schedule that a run of ``strength`` in (0, 1] goes through.

    ``strength`` 1 is the whole schedule (the release); lower values skip the first, noisiest
    steps (SDEdit-style), so the initial latents are noised less and keep more of the portrait.
    At least the last step always runs.
    """
    skip = min(len(timesteps) - 1, int(round(len(timesteps) * (1.0 - strength))))
    return timesteps[skip:]


class GenerationDefaultsError(ValueError):
    """A model folder recommends settings (``_generation_defaults``) the pipeline would refuse."""


def _whole(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


#: What a model folder may recommend, and what each value must be (the pipeline's own checks,
#: minus what needs the networks, e.g. the temporal table's length for ``context_frames``).
RECOMMENDABLE_SETTINGS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "resolution": ("a whole number of pixels >= 8", lambda v: _whole(v, 8)),
    "num_inference_steps": ("a whole number >= 1", lambda v: _whole(v, 1)),
    "guidance_scale": ("a finite number >= 0", lambda v: _real(v) and v >= 0),
    "strength": ("a number in (0, 1]", lambda v: _real(v) and 0 < v <= 1),
    "initial_latents": (f"one of {INITIAL_LATENTS_MODES}", lambda v: v in INITIAL_LATENTS_MODES),
    "color_match": (f"one of {COLOR_MATCH_MODES}", lambda v: v in COLOR_MATCH_MODES),
    "paste_back": ("true or false", lambda v: isinstance(v, bool)),
    "refine_details": ("true or false", lambda v: isinstance(v, bool)),
    "context_frames": ("a whole number >= 1", lambda v: _whole(v, 1)),
    "context_overlap": ("a whole number >= 0", lambda v: _whole(v, 0)),
    "detect_every": ("a whole number >= 1", lambda v: _whole(v, 1)),
}


def check_generation_defaults(defaults: Any, *, tile: int | None = None) -> dict[str, Any]:
    """Check the settings a model folder recommends before anyone runs a job on it.

    Args:
        defaults: ``_generation_defaults`` of ``model_index.json``.
        tile: The multiple of pixels the folder's autoencoder generates at (``resolution`` must
            be one), when known.

    Returns:
        ``defaults`` as a plain dict.

    Raises:
        GenerationDefaultsError: naming the first unknown setting or unusable value.
    """
    if not isinstance(defaults, Mapping):
        raise GenerationDefaultsError("_generation_defaults must be a JSON object")
    unknown = sorted(k for k in defaults if k not in RECOMMENDABLE_SETTINGS)
    if unknown:
        raise GenerationDefaultsError(
            f"unknown setting(s) {', '.join(map(repr, unknown))}; a model may recommend "
            f"{', '.join(RECOMMENDABLE_SETTINGS)}"
        )
    for name, value in defaults.items():
        wanted, accepts = RECOMMENDABLE_SETTINGS[name]
        if not accepts(value):
            raise GenerationDefaultsError(f"{name} must be {wanted}, got {value!r}")
    resolution = defaults.get("resolution")
    if tile and resolution is not None and resolution % tile:
        raise GenerationDefaultsError(
            f"resolution must be a multiple of {tile} (the autoencoder's tile), got {resolution}"
        )
    overlap, frames = defaults.get("context_overlap"), defaults.get("context_frames")
    if overlap is not None and frames is not None and overlap >= frames:
        raise GenerationDefaultsError("context_overlap must be smaller than context_frames")
    return dict(defaults)


def motion_encoder_config() -> dict[str, Any]:
    """A deep copy of :data:`MOTION_ENCODER_CONFIG`."""
    return copy.deepcopy(MOTION_ENCODER_CONFIG)
