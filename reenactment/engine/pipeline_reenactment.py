"""The X-NeMo reenactment pipeline: a portrait animated by the face motion of a driving video.

One :meth:`ReenactmentPipeline.__call__` runs the whole job: check the inputs, encode the
reference (CLIP token, VAE latent, reference-face motion tokens, reference-UNet banks), set the
timesteps, then stream the driving video through face tracking and the motion encoder and, segment
by segment, build the initial latents, run the denoising loop over overlapping context windows,
decode with the temporal VAE and stream the frames into the output video.

Defaults reproduce the official release (``xnemo-spec.md`` §4): DDIM with the inference
scheduler config (``beta_end`` 0.02), 35 steps, guidance 2.5, initial latents = the Gaussian-blurred
reference latent noised to the first timestep, unconditional branch = zero CLIP token + the
reference face's own motion tokens + no reference attention, 24-frame context windows overlapping
by 4 ("uniform", closed loop, a fresh window offset per step) whose predictions are averaged, SVD
temporal VAE decoding in chunks of 25 frames. Each of these is a keyword argument.

What the release gets wrong and this pipeline fixes:

* Window offsets come from the pipeline's seeded generator (the release uses Python's unseeded
  ``random``), so the same seed gives the same video.
* No frame cap, and memory that does not grow with the video's length: driving frames are
  streamed in (decode -> face tracking -> motion tokens; only 2 KB of tokens per frame are kept),
  decoded frames are streamed out to the encoder chunk by chunk, and long videos are denoised in
  *segments* (below).
* The output frame rate is the driving video's; its audio is muxed in and trimmed to the video.
* Landscape and portrait driving videos: the performer's face is tracked in the full frame
  (smoothed boxes); nothing is cut to the left square.

Segments (long videos)
----------------------
The denoising loop visits every context window at every step, so all latents of the frames being
denoised must exist together. A video longer than ``segment_frames`` (default 500, the release's
own frame cap, so every video the release can process at all is denoised in one pass, as the
release does) is cut into consecutive segments of about ``segment_frames`` new frames. Each
segment after the first *carries* the last ``segment_overlap`` frames (default: the window overlap,
4) of the previous one: at every step their latents are overwritten with the previous segment's
latents at that same step (a few KB per step are kept), so the windows at the start of the new
segment denoise next to exactly what the previous segment produced, and the carried frames are
not emitted again. Trade-off: information flows forward only (a segment cannot influence the one
before it) and only through the carried frames, whereas the single-pass loop couples every frame
with its neighbours on both sides (and, in the closed loop, the end with the start); in exchange
memory is bounded by the segment length, and the extra work is ``segment_overlap`` frames per
segment (<1 % with the defaults). The last segment absorbs a short tail (it has between one
context window and ``segment_frames + context_frames - 1`` new frames) instead of a tiny segment
being denoised on its own.

Numerics that differ from the release on purpose (all far below what the networks resolve): the
latents and the averaged noise predictions are kept in float32 while the networks run in their
own dtype (the release keeps float16 latents); the reference banks keep the denoiser's dtype
(the release casts them to float16; ``bank_dtype=torch.float16`` reproduces that); decoded frames
are rounded to 8 bits (the release truncates).

Progress and cancellation: ``callback_on_step_end(pipe, step_index, timestep, callback_kwargs)``
as in diffusers; ``callback_kwargs`` also carries the segment, window and frame counts.
``pipe.interrupt()`` (or setting ``pipe._interrupt = True``, e.g. from the callback) or a
``cancel`` callable returning true stops at the next window or step; the partial output file is
removed and :class:`GenerationCancelled` is raised.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import numpy as np
import torch
import torch.nn.functional as F

# Imported from their defining modules: type checkers resolve the package-level names to the
# placeholder classes diffusers uses when torch is missing.
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .configs import (
    COLOR_MATCH_MODES,
    INITIAL_LATENTS_MODES,
    REFERENCE_LATENT_SCALE,
    scheduler_config,
    strength_timesteps,
)
from .faces import FaceBackend, get_face_backend
from .loading import incomplete_model_reason, vae_scale_factor
from .networks import (
    CompactMotionEncoder,
    MotionEncoder,
    ReferenceDetailRefiner,
    UNet2DReferenceModel,
    UNet3DDenoisingModel,
    clear_reference_banks,
    load_reference_banks,
    run_reference_pass,
)
from .preprocessing import (
    MOTION_SIZE,
    ColorMatch,
    DrivingFrame,
    ReferenceFace,
    preprocess_reference,
    resize_rgb,
    track_driving_faces,
)
from .preprocessing import paste_back as paste_face_back
from .video_io import VideoWriter, iter_frames, load_image, probe_video

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl_temporal_decoder import (
        AutoencoderKLTemporalDecoder,
    )
    from diffusers.schedulers.scheduling_utils import SchedulerMixin
    from transformers import CLIPVisionModelWithProjection

PathLike = str | os.PathLike[str]

#: Release defaults (xnemo-spec.md §4.0).
NUM_INFERENCE_STEPS = 35
GUIDANCE_SCALE = 2.5
CONTEXT_FRAMES = 24
CONTEXT_OVERLAP = 4
CONTEXT_STRIDE = 1
DECODE_CHUNK_SIZE = 25
BLUR_KERNEL_SIZE = 9
BLUR_SIGMA = 18.0
GENERATION_SIZE = 512
#: Longest run denoised in one pass; the release stops at 500 frames, so every video it can
#: process is denoised here exactly as it does.
DEFAULT_SEGMENT_FRAMES = 500
#: Driving frames are downscaled to this longer side before tracking (bounds the memory held
#: for the 20-frame smoothing look-ahead; the motion crop is 224 px anyway).
DRIVING_MAX_SIDE = 1280
#: OpenAI CLIP normalisation (what a default ``CLIPImageProcessor`` applies).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

CallbackOnStepEnd = Callable[["ReenactmentPipeline", int, torch.Tensor, dict[str, Any]], Any]


class GenerationCancelled(Exception):
    """The generation was interrupted; no output file was left behind.

    Args:
        frames_done: Frames that had been generated (and discarded) when it stopped.
    """

    def __init__(self, message: str = "generation cancelled", *, frames_done: int = 0) -> None:
        super().__init__(message)
        self.frames_done = frames_done


class PipelineInputError(ValueError):
    """A setting or input of the call that the pipeline cannot honour (checked before any work)."""


@dataclass
class ReenactmentPipelineOutput:
    """Result of :meth:`ReenactmentPipeline.__call__`.

    Args:
        path: The written MP4 (``None`` when no ``output_path`` was given).
        frames: The frames as ``(H, W, 3)`` uint8 arrays when no ``output_path`` was given
            (or ``return_frames=True``); ``None`` otherwise (frames were streamed out).
        num_frames: Frames generated (= driving frames).
        fps: Output frame rate (the driving video's, exact).
        size: ``(width, height)`` of the frames (the encoder pads odd sides by one pixel).
        has_audio: The output carries the driving video's audio.
        seed: Seed of the CPU generator (drawn and recorded when none was given).
        num_segments: Denoising segments the video was cut into.
        parameters: Every setting that determines the output (for reproducibility manifests).
        timings: Seconds spent per phase, plus ``frames_per_second``.
    """

    path: Path | None
    frames: list[np.ndarray] | None
    num_frames: int
    fps: Fraction
    size: tuple[int, int]
    has_audio: bool
    seed: int | None
    num_segments: int
    parameters: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ReferenceEncoding:
    """Everything the reference contributes, computed once per call.

    Args:
        clip_embeds: CLIP image embedding ``(1, 1, D)``.
        latents: Scaled VAE posterior mean of the generation crop ``(1, C, h, w)``.
        motion_tokens: Motion tokens of the reference face's motion crop, box ``(0, 0, 1)``:
            ``(1, 32, 16)`` (the unconditional branch's motion).
    """

    clip_embeds: torch.Tensor
    latents: torch.Tensor
    motion_tokens: torch.Tensor


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def _ordered_halving(value: int) -> float:
    """The 64-bit bit-reversal of ``value`` as a fraction of 2**64 (0 for step 0)."""
    return int(f"{value:064b}"[::-1], 2) / (1 << 64)


def uniform_context_windows(
    num_frames: int,
    context_size: int = CONTEXT_FRAMES,
    context_stride: int = CONTEXT_STRIDE,
    context_overlap: int = CONTEXT_OVERLAP,
    *,
    closed_loop: bool = True,
    offset: int = 0,
    step: int = 0,
) -> list[list[int]]:
    """The release's "uniform" context schedule (AnimateDiff-style) for one denoising step.

    With ``step`` 0 (what the release always passes): windows start at ``0, s, 2s, ...`` with
    ``s = context_size - context_overlap`` while below ``num_frames`` (closed loop) or below
    ``num_frames - context_overlap`` (open loop); window ``j`` covers frames
    ``(e + offset) mod num_frames`` for ``e = j .. j + context_size - 1``, so the last window
    wraps around to the start. A video no longer than one window is a single window of all
    frames.

    Args:
        num_frames: Frames being denoised together.
        context_size: Frames per window (at most the temporal table length, 32).
        context_stride: Dilation levels (1 = contiguous windows only).
        context_overlap: Frames shared by consecutive windows.
        closed_loop: Wrap the last window around to the first frames.
        offset: Shift of every window (drawn per step).
        step: Denoising step index (the release fixes it at 0).

    Returns:
        Frame indices per window.
    """
    if num_frames <= context_size:
        return [list(range(num_frames))]
    stride_levels = min(context_stride, int(np.ceil(np.log2(num_frames / context_size))) + 1)
    windows = []
    for context_step in (1 << np.arange(stride_levels)).tolist():
        pad = int(round(num_frames * _ordered_halving(step)))
        start = int(_ordered_halving(step) * context_step) + pad
        stop = num_frames + pad + (0 if closed_loop else -context_overlap)
        for j in range(start, stop, context_size * context_step - context_overlap):
            windows.append(
                [
                    (e + offset) % num_frames
                    for e in range(j, j + context_size * context_step, context_step)
                ]
            )
    return windows


def gaussian_blur(
    latents: torch.Tensor, kernel_size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA
) -> torch.Tensor:
    """Per-channel Gaussian blur with reflect padding (torchvision ``GaussianBlur`` semantics).

    Args:
        latents: ``(N, C, H, W)``.
        kernel_size: Odd kernel side (9 in the release).
        sigma: Standard deviation in pixels (18 in the release: nearly a box filter).

    Returns:
        Blurred ``(N, C, H, W)``. Maps no larger than half the kernel (where reflect padding is
        undefined) are padded by replication instead.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    if kernel_size == 1 or sigma <= 0:
        return latents
    half = kernel_size // 2
    x = torch.linspace(-half, half, kernel_size, dtype=torch.float32)
    kernel_1d = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel_1d = kernel_1d / kernel_1d.sum()
    channels = latents.shape[1]
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]).to(latents.device, latents.dtype)
    # k k -> c 1 k k : one depthwise filter per channel
    kernel = kernel.expand(channels, 1, kernel_size, kernel_size)
    mode = "reflect" if min(latents.shape[-2:]) > half else "replicate"
    padded = F.pad(latents, (half, half, half, half), mode=mode)
    return F.conv2d(padded, kernel, groups=channels)


def plan_segments(total_frames: int, segment_frames: int, lookahead: int) -> list[int]:
    """New frames per segment for a video of ``total_frames`` (what the streaming splitter does).

    Segments of ``segment_frames`` are cut while at least ``lookahead`` more frames follow; the
    rest forms the last segment (so it is never shorter than ``lookahead`` unless the video is).
    """
    sizes = []
    remaining = total_frames
    while remaining >= segment_frames + lookahead:
        sizes.append(segment_frames)
        remaining -= segment_frames
    if remaining > 0:
        sizes.append(remaining)
    return sizes


def _as_uint8_frames(images: torch.Tensor) -> np.ndarray:
    """Decoded ``(N, 3, H, W)`` in [-1, 1] -> ``(N, H, W, 3)`` uint8 (x/2 + 0.5, clamp, round)."""
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    # n c h w -> n h w c
    return images.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "half": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        return names[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16") from None


_F = TypeVar("_F", bound=Callable[..., Any])


def _one_call_at_a_time(method: _F) -> _F:
    """Run ``method`` exclusively per pipeline instance, with a fresh interrupt flag.

    The reference banks live inside the denoiser, so two concurrent calls on one instance
    would mix them; the second one is refused instead.
    """

    @functools.wraps(method)
    def wrapper(self: ReenactmentPipeline, *args: Any, **kwargs: Any) -> Any:
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(
                "this pipeline is already generating: one call at a time per instance (the "
                "reference features live inside its denoiser)"
            )
        try:
            self._interrupt = False  # a request made before this call does not carry over
            return method(self, *args, **kwargs)
        finally:
            self._busy.release()

    return cast(_F, wrapper)


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------


class ReenactmentPipeline(DiffusionPipeline):
    """X-NeMo portrait reenactment (diffusers ``DiffusionPipeline``).

    Args:
        vae: SVD-xt temporal-decoder VAE (``AutoencoderKLTemporalDecoder``; an ``AutoencoderKL``
            also works, decoding frame-wise).
        image_encoder: CLIP vision model with projection (its ``image_embeds`` width must be the
            UNets' ``cross_attention_dim``).
        reference_unet: Appearance network (writes reference banks).
        denoising_unet: Video denoiser with motion and temporal modules.
        motion_encoder: Face crop + box parameters -> motion tokens.
        scheduler: A diffusers scheduler; DDIM with the release's config by default.
        detail_refiner: Optional :class:`~reenactment.engine.networks.ReferenceDetailRefiner`
            (the release has none): corrects every decoded frame with the portrait.

    An instance runs one call at a time (the reference features live inside its denoiser); a
    second concurrent call raises ``RuntimeError``. Load one pipeline per worker process.
    """

    _callback_tensor_inputs = ["latents", "noise_pred"]
    _optional_components = ["detail_refiner"]

    # Set by ``register_modules``; declared for type checkers.
    vae: AutoencoderKLTemporalDecoder
    image_encoder: CLIPVisionModelWithProjection
    reference_unet: UNet2DReferenceModel
    denoising_unet: UNet3DDenoisingModel
    motion_encoder: MotionEncoder | CompactMotionEncoder
    scheduler: Any  # a diffusers scheduler: set_timesteps / scale_model_input / step / add_noise
    detail_refiner: ReferenceDetailRefiner | None

    def __init__(
        self,
        vae: AutoencoderKLTemporalDecoder,
        image_encoder: CLIPVisionModelWithProjection,
        reference_unet: UNet2DReferenceModel,
        denoising_unet: UNet3DDenoisingModel,
        motion_encoder: MotionEncoder | CompactMotionEncoder,
        scheduler: SchedulerMixin,
        detail_refiner: ReferenceDetailRefiner | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            image_encoder=image_encoder,
            reference_unet=reference_unet,
            denoising_unet=denoising_unet,
            motion_encoder=motion_encoder,
            scheduler=scheduler,
            detail_refiner=detail_refiner,
        )
        self.vae_scale_factor = vae_scale_factor(self.vae.config)
        self._interrupt = False
        # The reference banks live inside the denoiser: one call at a time per instance.
        self._busy = threading.Lock()

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def from_model_folder(
        cls,
        folder: PathLike,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        vae_dtype: torch.dtype | str | None = None,
    ) -> ReenactmentPipeline:
        """Load a pipeline from a local folder (nothing is ever downloaded).

        Two layouts are accepted:

        * ours: ``model_index.json`` plus ``reference_unet/``, ``denoising_unet/``,
          ``motion_encoder/``, ``image_encoder/``, ``vae/`` and ``scheduler/`` (each written by
          ``save_pretrained``), e.g. from :func:`reenactment.engine.demo_model.build_tiny_model`,
          and ``detail_refiner/`` when the index names one;
        * the release's ``pretrained_weights/``: the four ``xnemo_*.pth`` (or ``.safetensors``)
          files next to ``sd-image-variations-diffusers/`` (its ``image_encoder`` and
          ``unet/config.json``) and ``stable-video-diffusion-img2vid-xt/`` (its ``vae``).

        Args:
            folder: The model folder.
            device: Where to run.
            dtype: Dtype of the UNets, motion encoder and CLIP: float32 on CPU, float16 on GPU
                by default (the release runs everything in float16).
            vae_dtype: Dtype of the VAE: float16 on GPU as in the release, float32 on CPU.

        Raises:
            ModelFolderNotFoundError: When the folder matches neither layout (the message says
                what was looked for).
        """
        folder = Path(folder)
        device = torch.device(device)
        model_dtype = _resolve_dtype(dtype, device)
        with _quiet_loading():
            return cls._load_folder(folder, device, model_dtype, vae_dtype)

    @classmethod
    def _load_folder(
        cls,
        folder: Path,
        device: torch.device,
        model_dtype: torch.dtype,
        vae_dtype: torch.dtype | str | None,
    ) -> ReenactmentPipeline:
        from .loading import (
            OFFICIAL_FILES,
            ModelFolderNotFoundError,
            load_clip_image_encoder,
            load_detail_refiner,
            load_official_checkpoints,
            load_svd_vae,
            load_unet_config_file,
            load_xnemo_model,
        )

        if vae_dtype is None:
            decode_dtype = torch.float16 if device.type == "cuda" else torch.float32
        else:
            decode_dtype = _resolve_dtype(vae_dtype, device)
        if not folder.is_dir():
            raise ModelFolderNotFoundError(f"model folder not found: {folder}")
        detail_refiner = None
        index_path = folder / "model_index.json"
        if index_path.is_file():
            try:
                index = json.loads(index_path.read_text())
            except (OSError, ValueError) as exc:
                raise ModelFolderNotFoundError(f"{index_path}: unreadable ({exc})") from exc
            if not isinstance(index, dict):
                raise ModelFolderNotFoundError(f"{index_path}: not a JSON object")
            incomplete = incomplete_model_reason(folder)
            if incomplete:
                raise ModelFolderNotFoundError(incomplete)
            networks = load_xnemo_model(folder, dtype=model_dtype, device=device)
            image_encoder = load_clip_image_encoder(folder, dtype=model_dtype, device=device)
            vae = load_svd_vae(folder, dtype=decode_dtype, device=device)
            scheduler = _load_scheduler(folder / "scheduler", index.get("scheduler"))
            detail_refiner = load_detail_refiner(folder, dtype=decode_dtype, device=device)
        elif any(
            (folder / Path(name).with_suffix(suffix).name).is_file()
            for name in OFFICIAL_FILES
            for suffix in (".pth", ".safetensors")
        ):
            sd_folder = folder / "sd-image-variations-diffusers"
            svd_folder = folder / "stable-video-diffusion-img2vid-xt"
            unet_config_path = sd_folder / "unet" / "config.json"
            unet_config = (
                load_unet_config_file(unet_config_path) if unet_config_path.is_file() else None
            )
            networks, _ = load_official_checkpoints(
                folder, unet_config, dtype=model_dtype, device=device
            )
            image_encoder = load_clip_image_encoder(sd_folder, dtype=model_dtype, device=device)
            vae = load_svd_vae(svd_folder, dtype=decode_dtype, device=device)
            scheduler = DDIMScheduler(**scheduler_config())
        else:
            raise ModelFolderNotFoundError(
                f"{folder} is not a model folder: expected either model_index.json with "
                "reference_unet/, denoising_unet/, motion_encoder/, image_encoder/, vae/ and "
                "scheduler/ (our layout), or the release's xnemo_*.pth files with "
                "sd-image-variations-diffusers/ and stable-video-diffusion-img2vid-xt/ next to them"
            )
        return cls(
            vae=vae,  # type: ignore[arg-type]  # loading.py names the top-level diffusers class
            image_encoder=image_encoder,
            reference_unet=networks.reference_unet,
            denoising_unet=networks.denoising_unet,
            motion_encoder=networks.motion_encoder,
            scheduler=scheduler,
            detail_refiner=detail_refiner,
        )

    # -- state ---------------------------------------------------------------------------------

    @property
    def interrupted(self) -> bool:
        """True once an interrupt was requested for the running call."""
        return bool(self._interrupt)

    def interrupt(self) -> None:
        """Ask the running call to stop at the next window or step (thread-safe flag)."""
        self._interrupt = True

    @property
    def model_dtype(self) -> torch.dtype:
        return self.denoising_unet.dtype

    # -- encoding ------------------------------------------------------------------------------

    def _clip_pixels(self, generation_crop: np.ndarray) -> torch.Tensor:
        """Generation crop -> CLIP input: PIL bicubic to the encoder's size, OpenAI normalised."""
        configured = self.image_encoder.config.image_size
        size = int(configured if isinstance(configured, int) else 224)
        image = Image.fromarray(generation_crop).resize((size, size), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        # h w c -> 1 c h w
        pixels = pixels.permute(2, 0, 1).unsqueeze(0)
        # (3,) -> 1 3 1 1, per-channel statistics
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        return (pixels - mean) / std

    @staticmethod
    def _to_unit_range(images: np.ndarray) -> torch.Tensor:
        """``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float32 in [-1, 1]."""
        tensor = torch.from_numpy(np.array(images, dtype=np.float32)).div_(127.5).sub_(1.0)
        # n h w c -> n c h w
        return tensor.permute(0, 3, 1, 2)

    def encode_motion(
        self,
        crops: Sequence[np.ndarray] | np.ndarray,
        bbox_params: Sequence[np.ndarray] | np.ndarray,
    ) -> torch.Tensor:
        """Motion tokens of 224x224 face crops.

        Args:
            crops: ``N`` crops ``(224, 224, 3)`` uint8 (other sizes are resized, Lanczos).
            bbox_params: ``N`` box parameters ``(dy, dx, s)``.

        Returns:
            ``(N, 32, 16)`` in the motion encoder's dtype, on the execution device.
        """
        device = self._execution_device
        encoder_dtype = self.motion_encoder.dtype
        arrays = [
            crop
            if crop.shape[:2] == (MOTION_SIZE, MOTION_SIZE)
            else resize_rgb(crop, MOTION_SIZE, resample="lanczos")
            for crop in crops
        ]
        images = self._to_unit_range(np.stack(arrays)).to(device, encoder_dtype)
        params = torch.as_tensor(np.asarray(bbox_params, dtype=np.float32)).to(
            device, encoder_dtype
        )
        return self.motion_encoder(images, params)

    def encode_reference(
        self, reference: ReferenceFace, *, resolution: int = GENERATION_SIZE
    ) -> ReferenceEncoding:
        """CLIP token, VAE latent and unconditional motion tokens of the prepared portrait.

        Args:
            reference: The portrait's crops (from
                :func:`~reenactment.engine.preprocessing.preprocess_reference`).
            resolution: Generation size; the crop is resized to it when it differs.
        """
        device = self._execution_device
        crop = resize_rgb(reference.generation_crop, resolution)
        clip_pixels = self._clip_pixels(crop).to(device, self.image_encoder.dtype)
        # (1, D) -> (1, 1, D): one cross-attention token
        clip_embeds = self.image_encoder(pixel_values=clip_pixels).image_embeds.unsqueeze(1)
        vae_input = self._to_unit_range(crop[None]).to(device, self.vae.dtype)
        latents = self.vae.encode(vae_input).latent_dist.mean * REFERENCE_LATENT_SCALE
        neutral = np.array([[0.0, 0.0, 1.0]], dtype=np.float32)
        motion_tokens = self.encode_motion([reference.motion_crop], neutral)
        return ReferenceEncoding(
            clip_embeds=clip_embeds.to(self.model_dtype),
            latents=latents.float(),
            motion_tokens=motion_tokens,
        )

    # -- initial latents -----------------------------------------------------------------------

    def initial_latents(
        self,
        reference_latents: torch.Tensor,
        noise: torch.Tensor,
        first_timestep: torch.Tensor,
        *,
        mode: Literal["blurred_reference", "reference", "noise"] = "blurred_reference",
        blur_kernel_size: int = BLUR_KERNEL_SIZE,
        blur_sigma: float = BLUR_SIGMA,
    ) -> torch.Tensor:
        """x_T for a run of frames.

        Args:
            reference_latents: ``(1, C, h, w)`` (C: the VAE's latent channels).
            noise: ``(1, C, F, h, w)`` standard normal.
            first_timestep: The first (largest) timestep.
            mode: ``"blurred_reference"`` (release): the reference latent, blurred, repeated over
                the frames and noised to ``first_timestep`` with ``scheduler.add_noise``;
                ``"reference"``: the same without the blur (with ``strength`` < 1 the output
                keeps more of the portrait's colours and layout); ``"noise"``: pure noise scaled
                by the scheduler's ``init_noise_sigma``.
        """
        if mode == "noise":
            return noise * self.scheduler.init_noise_sigma
        if mode not in ("blurred_reference", "reference"):
            raise ValueError(f"unknown initial-latents mode {mode!r}")
        blurred = (
            gaussian_blur(reference_latents.float(), blur_kernel_size, blur_sigma)
            if mode == "blurred_reference"
            else reference_latents.float()
        )
        # 1 c h w -> 1 c f h w
        repeated = blurred.unsqueeze(2).expand(-1, -1, noise.shape[2], -1, -1)
        # 0-d timestep -> (1,): one timestep for every frame, as the release's per-frame calls
        return self.scheduler.add_noise(repeated, noise, first_timestep.reshape(1))

    # -- denoising -----------------------------------------------------------------------------

    def _step_kwargs(self, generator: torch.Generator | None, eta: float) -> dict[str, Any]:
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        kwargs: dict[str, Any] = {}
        if "eta" in accepted:
            kwargs["eta"] = eta
        if "generator" in accepted:
            kwargs["generator"] = generator
        return kwargs

    def denoise_latents(
        self,
        latents: torch.Tensor,
        motion_tokens: torch.Tensor,
        clip_embeds: torch.Tensor,
        negative_motion_tokens: torch.Tensor | None,
        *,
        timesteps: torch.Tensor,
        guidance_scale: float = GUIDANCE_SCALE,
        negative_clip: Literal["zeros", "reference"] = "zeros",
        context_frames: int = CONTEXT_FRAMES,
        context_overlap: int = CONTEXT_OVERLAP,
        context_stride: int = CONTEXT_STRIDE,
        closed_loop: bool = True,
        offsets: Callable[[], int] | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        carry_in: Sequence[torch.Tensor] | None = None,
        carry_out: int = 0,
        on_step_end: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
        | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run every denoising step over overlapping context windows of one run of frames.

        The reference banks must already be loaded into the denoiser (``__call__`` does this
        once). Per step: windows from :func:`uniform_context_windows` with a fresh offset, one
        classifier-free-guided forward per window, the predictions of frames covered by several
        windows averaged (both CFG halves), then guidance and one scheduler step over all frames.

        Args:
            latents: x_T ``(1, C, F, h, w)`` (float32 recommended; the forward casts).
            motion_tokens: Driving tokens ``(1, F, 32, 16)``.
            clip_embeds: Conditional CLIP token ``(1, 1, D)``.
            negative_motion_tokens: Unconditional tokens ``(1, 32, 16)`` or ``(1, F, 32, 16)``
                (``None`` without guidance).
            timesteps: The scheduler's timesteps (``set_timesteps`` already called).
            guidance_scale: ``u + s (c - u)``; at most 1 disables guidance (one branch).
            negative_clip: Unconditional CLIP token: zeros (release) or the reference's own.
            context_frames: Window length (<= the temporal table length, 32).
            context_overlap: Frames shared by consecutive windows.
            context_stride: Dilation levels of the uniform schedule.
            closed_loop: Let the last window wrap around to the first frames.
            offsets: Called once per step for the window offset (``None``: always 0).
            eta: DDIM eta (0: deterministic).
            generator: For schedulers that draw noise in ``step``.
            carry_in: Per-step latents ``(1, C, K, h, w)`` forced onto the first ``K`` frames at
                the start of every step (the previous segment's trajectory).
            carry_out: Return the trajectory of the last ``carry_out`` frames (latents at the
                start of every step).
            on_step_end: ``f(step_index, t, latents, noise_pred, num_windows) -> latents``.
            should_stop: Polled before every window and step; true raises
                :class:`GenerationCancelled`.

        Returns:
            The denoised latents ``(1, C, F, h, w)`` and the carried-out trajectory.
        """
        latents = latents.clone()  # carried frames are written in place
        device = latents.device
        num_frames = latents.shape[2]
        do_cfg = guidance_scale > 1.0
        unet_dtype = self.model_dtype
        if do_cfg:
            if negative_motion_tokens is None:
                raise ValueError("guidance needs negative_motion_tokens")
            negative_clip_embeds = (
                torch.zeros_like(clip_embeds) if negative_clip == "zeros" else clip_embeds
            )
            # [uncond, cond] along the batch: (2, 1, D)
            clip_input = torch.cat([negative_clip_embeds, clip_embeds]).to(unet_dtype)
        else:
            clip_input = clip_embeds.to(unet_dtype)
        step_kwargs = self._step_kwargs(generator, eta)
        trajectory: list[torch.Tensor] = []
        branches = 2 if do_cfg else 1
        for step_index, t in enumerate(timesteps):
            if should_stop is not None and should_stop():
                raise GenerationCancelled()
            if carry_in is not None:
                latents[:, :, : carry_in[step_index].shape[2]] = carry_in[step_index]
            if carry_out:
                trajectory.append(latents[:, :, num_frames - carry_out :].clone())
            offset = offsets() if offsets is not None else 0
            windows = uniform_context_windows(
                num_frames,
                context_frames,
                context_stride,
                context_overlap,
                closed_loop=closed_loop,
                offset=offset,
            )
            noise_pred = torch.zeros(
                (branches, *latents.shape[1:]), device=device, dtype=torch.float32
            )
            counter = torch.zeros((1, 1, num_frames, 1, 1), device=device, dtype=torch.float32)
            for window in windows:
                if should_stop is not None and should_stop():
                    raise GenerationCancelled()
                index = torch.tensor(window, device=device)
                # 1 c f h w -> (branches) c n h w, n = window length (one row per CFG branch)
                window_latents = latents[:, :, index].repeat(branches, 1, 1, 1, 1)
                window_latents = self.scheduler.scale_model_input(window_latents, t)
                window_tokens = motion_tokens[:, index]
                if do_cfg:
                    assert negative_motion_tokens is not None
                    # 1 l c -> 1 n l c (the reference's tokens for every frame of the window)
                    negative = (
                        negative_motion_tokens[:, index]
                        if negative_motion_tokens.ndim == 4
                        else negative_motion_tokens.unsqueeze(1).expand_as(window_tokens)
                    )
                    # [uncond, cond]: (2, w, 32, 16)
                    window_tokens = torch.cat([negative, window_tokens])
                prediction = self.denoising_unet(
                    window_latents.to(unet_dtype),
                    t,
                    [clip_input, window_tokens.to(unet_dtype)],
                    return_dict=False,
                )[0]
                # Same indexing semantics as the release (a repeated index counts once).
                noise_pred[:, :, index] = noise_pred[:, :, index] + prediction.float()
                counter[:, :, index] = counter[:, :, index] + 1
            noise_pred = noise_pred / counter
            if do_cfg:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
            if on_step_end is not None:
                latents = on_step_end(step_index, t, latents, noise_pred, len(windows))
        return latents, trajectory

    # -- decoding ------------------------------------------------------------------------------

    def decode_latents(
        self,
        latents: torch.Tensor,
        *,
        decode_chunk_size: int = DECODE_CHUNK_SIZE,
        refiner_features: Sequence[torch.Tensor] | None = None,
    ) -> Iterator[np.ndarray]:
        """Decode ``(1, C, F, h, w)`` latents chunk by chunk into uint8 ``(n, H, W, 3)`` arrays.

        The SVD temporal decoder gets ``num_frames`` = the chunk length (chunks are independent,
        as in the release); a plain ``AutoencoderKL`` decodes frame-wise. With
        ``refiner_features`` (:meth:`encode_refiner_reference`) the detail refiner corrects each
        decoded chunk with the portrait.
        """
        scale = getattr(self.vae.config, "scaling_factor", REFERENCE_LATENT_SCALE)
        # 1 c f h w -> f c h w
        flat = (latents[0].transpose(0, 1) / scale).to(self.vae.dtype)
        temporal = "num_frames" in inspect.signature(self.vae.decode).parameters
        for start in range(0, flat.shape[0], decode_chunk_size):
            chunk = flat[start : start + decode_chunk_size]
            if temporal:
                images = self.vae.decode(chunk, num_frames=chunk.shape[0]).sample
            else:
                images = self.vae.decode(chunk).sample
            if refiner_features is not None:
                assert self.detail_refiner is not None
                images = self.detail_refiner(
                    images.clamp(-1, 1).to(self.detail_refiner.dtype),
                    reference_features=refiner_features,
                )
            yield _as_uint8_frames(images)

    def encode_refiner_reference(
        self, reference: ReferenceFace, *, resolution: int
    ) -> list[torch.Tensor] | None:
        """The detail refiner's features of the portrait crop (None without a refiner)."""
        if self.detail_refiner is None:
            return None
        crop = resize_rgb(reference.generation_crop, resolution)
        pixels = self._to_unit_range(crop[None]).to(
            self._execution_device, self.detail_refiner.dtype
        )
        return self.detail_refiner.encode_reference(pixels)

    # -- checks --------------------------------------------------------------------------------

    def check_inputs(
        self,
        *,
        num_inference_steps: int,
        guidance_scale: float,
        resolution: int,
        context_frames: int,
        strength: float = 1.0,
        context_overlap: int,
        context_stride: int,
        segment_frames: int,
        segment_overlap: int,
        decode_chunk_size: int,
        window_offsets: Any,
        callback_on_step_end_tensor_inputs: Sequence[str],
        output_path: PathLike | None,
        fps: Any,
        driving_is_path: bool,
        refine_details: bool = False,
        choices: Mapping[str, tuple[Any, tuple[Any, ...]]] = {},  # noqa: B006 - read only
    ) -> None:
        """Raise :class:`PipelineInputError` for settings the pipeline cannot honour.

        Called before any work is done, so a bad option costs nothing.
        """
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise PipelineInputError(f"{name} must be one of {allowed}, got {value!r}")
        if num_inference_steps < 1:
            raise PipelineInputError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if not (math.isfinite(strength) and 0 < strength <= 1):
            raise PipelineInputError(f"strength must be in (0, 1], got {strength}")
        if not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise PipelineInputError(
                f"guidance_scale must be a finite number >= 0, got {guidance_scale}"
            )
        multiple = self.vae_scale_factor
        if resolution < multiple or resolution % multiple:
            raise PipelineInputError(
                f"resolution must be a positive multiple of {multiple}, got {resolution}"
            )
        if not isinstance(refine_details, bool):
            raise PipelineInputError(
                f"refine_details must be true or false, got {refine_details!r}"
            )
        if refine_details and self.detail_refiner is not None:
            refiner_size = int(self.detail_refiner.config["sample_size"])
            if resolution != refiner_size:
                raise PipelineInputError(
                    f"this model's detail refiner works at {refiner_size} px: generate at "
                    f"resolution {refiner_size}, or turn refine_details off to generate at "
                    f"{resolution}"
                )
        max_frames = _temporal_table_length(self.denoising_unet)
        if not 1 <= context_frames <= max_frames:
            raise PipelineInputError(
                f"context_frames must be within 1..{max_frames} (the temporal position table), "
                f"got {context_frames}"
            )
        if not 0 <= context_overlap < context_frames:
            raise PipelineInputError("context_overlap must be >= 0 and smaller than context_frames")
        if context_stride < 1:
            raise PipelineInputError("context_stride must be >= 1")
        if segment_frames < context_frames:
            raise PipelineInputError(
                f"segment_frames ({segment_frames}) must be at least context_frames "
                f"({context_frames})"
            )
        if not 0 <= segment_overlap < segment_frames:
            raise PipelineInputError("segment_overlap must be >= 0 and smaller than segment_frames")
        if decode_chunk_size < 1:
            raise PipelineInputError("decode_chunk_size must be >= 1")
        if not (window_offsets in ("random", "none") or isinstance(window_offsets, Sequence)):
            raise PipelineInputError(
                "window_offsets must be 'random', 'none' or a sequence of integers"
            )
        unknown = [
            k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs
        ]
        if unknown:
            raise PipelineInputError(
                f"callback_on_step_end_tensor_inputs {unknown} not among "
                f"{self._callback_tensor_inputs}"
            )
        if output_path is not None:
            parent = Path(output_path).parent
            if not parent.is_dir():
                raise PipelineInputError(f"output folder does not exist: {parent}")
            if not driving_is_path and fps is None:
                raise PipelineInputError(
                    "fps is required when driving frames are given without a video"
                )

    # -- the call ------------------------------------------------------------------------------

    @torch.no_grad()
    @_one_call_at_a_time
    def __call__(
        self,
        reference: ReferenceFace | np.ndarray | Image.Image | PathLike,
        driving: PathLike | Iterable[DrivingFrame],
        *,
        output_path: PathLike | None = None,
        return_frames: bool | None = None,
        fps: Fraction | float | None = None,
        audio: bool = True,
        crf: int = 18,
        num_inference_steps: int = NUM_INFERENCE_STEPS,
        guidance_scale: float = GUIDANCE_SCALE,
        eta: float = 0.0,
        strength: float = 1.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        resolution: int = GENERATION_SIZE,
        context_frames: int = CONTEXT_FRAMES,
        context_overlap: int = CONTEXT_OVERLAP,
        context_stride: int = CONTEXT_STRIDE,
        closed_loop: bool = True,
        window_offsets: Literal["random", "none"] | Sequence[int] = "random",
        segment_frames: int = DEFAULT_SEGMENT_FRAMES,
        segment_overlap: int | None = None,
        initial_latents: Literal["blurred_reference", "reference", "noise"] = "blurred_reference",
        blur_kernel_size: int = BLUR_KERNEL_SIZE,
        blur_sigma: float = BLUR_SIGMA,
        negative_clip: Literal["zeros", "reference"] = "zeros",
        negative_motion: Literal["reference", "zeros"] = "reference",
        negative_reference_attention: bool = False,
        bank_dtype: torch.dtype | None = None,
        bbox_mode: Literal["neutral", "tracked"] = "neutral",
        decode_chunk_size: int = DECODE_CHUNK_SIZE,
        paste_back: bool = False,
        feather: float = 0.12,
        color_match: Literal["none", "reference"] = "none",
        refine_details: bool = True,
        face_backend: FaceBackend | str = "dlib",
        detect_every: int = 1,
        max_gap_seconds: float = 1.0,
        driving_max_side: int | None = DRIVING_MAX_SIDE,
        motion_batch_size: int = CONTEXT_FRAMES,
        callback_on_step_end: CallbackOnStepEnd | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        cancel: Callable[[], bool] | None = None,
    ) -> ReenactmentPipelineOutput:
        r"""Animate ``reference`` with the face motion of ``driving``.

        Args:
            reference: The portrait: prepared crops (:class:`ReferenceFace`), an RGB uint8 array,
                a PIL image or an image file. It must show exactly one dominant face.
            driving: The driving video file, or already prepared :class:`DrivingFrame`\ s (then
                give ``fps``; no audio).
            output_path: Write an H.264 MP4 here (atomically: a temporary file renamed when
                complete; nothing is left behind on failure or cancellation).
            return_frames: Also return the frames in memory (default: only without
                ``output_path``). Memory then grows with the video's length.
            fps: Output frame rate for ``DrivingFrame`` input (a video's own rate is used
                otherwise).
            audio: Mux the driving video's audio (re-encoded, trimmed to the video).
            crf: H.264 quality (18 = visually lossless, as the release).
            num_inference_steps: Denoising steps (release: 35).
            strength: Share of the ``num_inference_steps`` schedule that is run (release: 1.0,
                every step from the first timestep). Below 1 the initial latents are noised only
                to a later timestep and the first steps are skipped (SDEdit-style): small models
                keep the portrait's appearance better, at the cost of weaker large motions.
            guidance_scale: Classifier-free guidance (release: 2.5; <= 1 disables it).
            eta: DDIM eta (release: 0).
            seed: Seed of the CPU generator that draws the initial noise and the window offsets;
                a random one is drawn (and returned) when neither it nor ``generator`` is given.
            generator: A generator instead of ``seed``.
            resolution: Generation size in pixels (release: 512).
            context_frames: Frames per context window (release: 24, at most 32).
            context_overlap: Frames shared by consecutive windows (release: 4).
            context_stride: Dilation levels of the uniform schedule (release: 1).
            closed_loop: Let the last window wrap around to the first frames (release: true).
            window_offsets: ``"random"``: one offset per step drawn from the seeded generator
                (the release draws from Python's unseeded ``random``); ``"none"``: 0; or explicit
                offsets, one per step and segment, in order.
            segment_frames: Longest run of frames denoised together (module docs).
            segment_overlap: Frames carried from one segment into the next (default:
                ``context_overlap``).
            initial_latents: ``"blurred_reference"`` (release), ``"reference"`` (unblurred) or
                ``"noise"``.
            blur_kernel_size: Blur kernel of the initial latents (release: 9).
            blur_sigma: Blur sigma (release: 18).
            negative_clip: Unconditional CLIP token: ``"zeros"`` (release) or ``"reference"``.
            negative_motion: Unconditional motion: the ``"reference"`` face's own tokens
                (release) or ``"zeros"``.
            negative_reference_attention: Let the unconditional branch read the reference banks
                too (release: no).
            bank_dtype: Dtype of the reference banks (default: the denoiser's; the release casts
                them to float16).
            bbox_mode: Box parameters of the driving frames: ``"neutral"`` ``(0, 0, 1)`` as the
                release, or ``"tracked"`` (relative to the reference face).
            decode_chunk_size: Frames per temporal-VAE decode call (release: 25).
            paste_back: Composite each generated face into the full portrait (feathered mask)
                instead of returning the bare square crop.
            feather: Width of the mask's soft edge as a fraction of the crop.
            color_match: ``"none"`` (release) or ``"reference"``: give the generated faces the
                reference crop's per-channel colour mean and spread
                (:class:`~reenactment.engine.preprocessing.ColorMatch`, fitted on the first
                decoded frames and held for the whole video), for small models whose colours
                drift.
            refine_details: Run the model's detail refiner on every decoded frame (before
                ``color_match``), when the model folder has one: it corrects the frame with the
                portrait (for the preview model mostly colours and large shapes, see its model
                card). Ignored (and recorded as false) for models without one, such as the
                release.
            face_backend: Face detector (name or instance) for the portrait and driving video.
            detect_every: Detect the driving face every N frames (boxes in between are
                interpolated; release: every frame).
            max_gap_seconds: Longest tolerated run of driving frames without a face.
            driving_max_side: Downscale driving frames to this longer side before tracking.
            motion_batch_size: Driving crops per motion-encoder call.
            callback_on_step_end: ``f(pipe, step_index, timestep, callback_kwargs)`` after every
                step; ``callback_kwargs`` holds the tensors named in
                ``callback_on_step_end_tensor_inputs`` and ``segment_index``, ``num_segments``
                (``None`` when the length is unknown), ``step_index``, ``num_inference_steps``,
                ``num_windows``, ``frames_done``, ``segment_frames``, ``total_frames`` and
                ``progress`` (0..1 or ``None``). A returned dict may replace ``latents``.
            callback_on_step_end_tensor_inputs: Tensors passed to the callback (``latents``,
                ``noise_pred``).
            cancel: Polled before every window and step; returning true cancels.

        Returns:
            :class:`ReenactmentPipelineOutput`.

        Raises:
            GenerationCancelled: After an interrupt; the partial output was removed.
            reenactment.engine.video_io.MediaInputError: Unusable portrait or driving video.
            reenactment.engine.faces.NoFaceError, reenactment.engine.faces.MultipleFacesError:
                The portrait has no face, or several similarly large ones.
            reenactment.engine.preprocessing.DrivingFaceLostError: The driving face is missing
                for longer than ``max_gap_seconds`` (the message names the second).
        """
        started = time.perf_counter()
        segment_overlap = context_overlap if segment_overlap is None else segment_overlap
        driving_is_path = isinstance(driving, str | os.PathLike)
        self.check_inputs(
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            resolution=resolution,
            context_frames=context_frames,
            strength=strength,
            context_overlap=context_overlap,
            context_stride=context_stride,
            segment_frames=segment_frames,
            segment_overlap=segment_overlap,
            decode_chunk_size=decode_chunk_size,
            window_offsets=window_offsets,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            output_path=output_path,
            fps=fps,
            driving_is_path=driving_is_path,
            refine_details=refine_details,
            choices={
                "initial_latents": (initial_latents, INITIAL_LATENTS_MODES),
                "color_match": (color_match, COLOR_MATCH_MODES),
                "negative_clip": (negative_clip, ("zeros", "reference")),
                "negative_motion": (negative_motion, ("reference", "zeros")),
                "bbox_mode": (bbox_mode, ("neutral", "tracked")),
            },
        )
        if return_frames is None:
            return_frames = output_path is None
        # What runs is what is recorded: a model without a refiner refines nothing.
        refine_details = refine_details and self.detail_refiner is not None
        device = self._execution_device
        timings: dict[str, float] = {}

        # 1. Inputs: the portrait's crops and the (lazy) stream of prepared driving frames.
        backend = get_face_backend(face_backend) if isinstance(face_backend, str) else face_backend
        mark = time.perf_counter()
        reference_face = self._prepare_reference(reference, backend, resolution)
        total_frames: int | None = None
        audio_source: Path | None = None
        generators: list[Any] = []  # closed at the end, so no file stays open on failure
        if driving_is_path:
            driving_path = Path(driving)  # type: ignore[arg-type]
            info = probe_video(driving_path)
            out_fps = info.fps
            total_frames = info.frame_count
            audio_source = driving_path if audio and info.has_audio else None
            decoded = iter_frames(driving_path, max_side=driving_max_side)
            generators.append(decoded)
            tracked = track_driving_faces(
                decoded,
                backend=backend,
                reference=reference_face,
                fps=float(info.fps),
                detect_every=detect_every,
                max_gap_seconds=max_gap_seconds,
            )
            generators.append(tracked)
            frames_in: Iterable[DrivingFrame] = tracked
        else:
            out_fps = Fraction(fps).limit_denominator(1001) if fps is not None else Fraction(25)
            frames_in = driving  # type: ignore[assignment]
            total_frames = len(driving) if hasattr(driving, "__len__") else None  # type: ignore[arg-type]
        timings["reference_detection_s"] = time.perf_counter() - mark

        # 2. Seeds: one CPU generator for the noise, a second one (seeded from it) for offsets.
        if generator is None:
            seed = secrets.randbits(63) if seed is None else int(seed)
            generator = torch.Generator(device="cpu").manual_seed(seed)
        else:
            seed = int(generator.initial_seed())
        offset_seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        offset_generator = torch.Generator(device="cpu").manual_seed(offset_seed)
        explicit_offsets = list(window_offsets) if not isinstance(window_offsets, str) else None

        def next_offset() -> int:
            if explicit_offsets is not None:
                if not explicit_offsets:
                    raise PipelineInputError(
                        "window_offsets ran out: give one offset per step and segment"
                    )
                return int(explicit_offsets.pop(0))
            if window_offsets == "none":
                return 0
            return int(torch.randint(0, context_frames, (1,), generator=offset_generator).item())

        parameters = self._parameters(
            locals_=locals(),
            backend=backend,
            seed=seed,
            offset_seed=offset_seed,
            segment_overlap=segment_overlap,
            fps=out_fps,
        )
        box = reference_face.detection.box
        parameters["reference_face_box"] = [box.x0, box.y0, box.x1, box.y1]
        parameters["reference_crop"] = {
            "x0": reference_face.crop.x0,
            "y0": reference_face.crop.y0,
            "size": reference_face.crop.size,
        }

        do_cfg = guidance_scale > 1.0
        writer: VideoWriter | None = None
        collected: list[np.ndarray] = []
        frames_done = 0
        num_segments = 0
        size: tuple[int, int] = (0, 0)
        try:
            # 3. Reference encoding and the reference-UNet pass (once).
            mark = time.perf_counter()
            encoding = self.encode_reference(reference_face, resolution=resolution)
            refiner_features = (
                self.encode_refiner_reference(reference_face, resolution=resolution)
                if refine_details
                else None
            )
            negative_tokens: torch.Tensor | None = None
            if do_cfg:
                negative_tokens = (
                    encoding.motion_tokens
                    if negative_motion == "reference"
                    else torch.zeros_like(encoding.motion_tokens)
                )
                negative_clip_embeds = (
                    torch.zeros_like(encoding.clip_embeds)
                    if negative_clip == "zeros"
                    else encoding.clip_embeds
                )
                # b c h w -> (2 b) c h w with CLIP tokens [uncond, cond]
                banks = run_reference_pass(
                    self.reference_unet,
                    encoding.latents.to(self.reference_unet.dtype).repeat(2, 1, 1, 1),
                    torch.cat([negative_clip_embeds, encoding.clip_embeds]).to(
                        self.reference_unet.dtype
                    ),
                    0,
                )
            else:
                banks = run_reference_pass(
                    self.reference_unet,
                    encoding.latents.to(self.reference_unet.dtype),
                    encoding.clip_embeds.to(self.reference_unet.dtype),
                    0,
                )
            load_reference_banks(
                self.denoising_unet,
                banks,
                do_classifier_free_guidance=do_cfg and not negative_reference_attention,
                dtype=bank_dtype,
            )
            del banks
            timings["reference_encoding_s"] = time.perf_counter() - mark

            # 4. Timesteps.
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            timesteps = strength_timesteps(self.scheduler.timesteps, strength)
            latent_size = resolution // self.vae_scale_factor
            # 4 for SVD's VAE; a widened preview model's VAE has more.
            latent_channels = int(self.vae.config.latent_channels)
            lookahead = context_frames
            plan = (
                plan_segments(total_frames, segment_frames, lookahead)
                if total_frames is not None
                else None
            )
            timings.update(tracking_s=0.0, motion_s=0.0, denoise_s=0.0, decode_s=0.0, write_s=0.0)

            def should_stop() -> bool:
                return bool(self._interrupt) or (cancel is not None and bool(cancel()))

            carry_tokens: torch.Tensor | None = None
            carry_trajectory: list[torch.Tensor] | None = None
            colors: ColorMatch | None = None
            motion_chunks = self._motion_token_stream(
                frames_in, bbox_mode, motion_batch_size, timings, should_stop
            )
            for segment_index, new_tokens, is_last in _split_segments(
                motion_chunks, segment_frames, lookahead
            ):
                num_segments += 1
                num_new = new_tokens.shape[0]
                carried = 0 if carry_tokens is None else carry_tokens.shape[0]
                # (carried + new) l c : carried frames first, along the frame axis
                tokens = (
                    new_tokens if carry_tokens is None else torch.cat([carry_tokens, new_tokens])
                )
                # f l c -> 1 f l c
                tokens = tokens.unsqueeze(0)

                # 5. Initial latents: one noise draw per new frame, in frame order, so the noise
                # of a frame does not depend on how the video is cut into segments.
                self.scheduler.set_timesteps(num_inference_steps, device=device)
                noise = torch.stack(
                    [
                        randn_tensor(
                            (1, latent_channels, latent_size, latent_size),
                            generator=generator,
                            device=device,
                            dtype=torch.float32,
                        )
                        for _ in range(num_new)
                    ],
                    dim=2,
                )  # (1, C, f, h, w)
                new_latents = self.initial_latents(
                    encoding.latents.to(device),
                    noise,
                    timesteps[0],
                    mode=initial_latents,
                    blur_kernel_size=blur_kernel_size,
                    blur_sigma=blur_sigma,
                )
                if carried:
                    assert carry_trajectory is not None
                    # 1 c k h w + 1 c f h w -> 1 c (k + f) h w
                    latents = torch.cat([carry_trajectory[0], new_latents], dim=2)
                else:
                    latents = new_latents
                del noise, new_latents

                # 6. Denoising loop.
                reporter = _StepReporter(
                    pipe=self,
                    callback=callback_on_step_end,
                    tensor_inputs=tuple(callback_on_step_end_tensor_inputs),
                    info={
                        "segment_index": segment_index,
                        "num_segments": len(plan) if plan is not None else None,
                        "num_inference_steps": len(timesteps),
                        "frames_done": frames_done,
                        "segment_frames": num_new,
                        "total_frames": total_frames,
                    },
                )
                mark = time.perf_counter()
                carry_out = 0 if is_last else min(segment_overlap, tokens.shape[1])
                latents, trajectory = self.denoise_latents(
                    latents,
                    tokens,
                    encoding.clip_embeds,
                    negative_tokens,
                    timesteps=timesteps,
                    guidance_scale=guidance_scale,
                    negative_clip=negative_clip,
                    context_frames=context_frames,
                    context_overlap=context_overlap,
                    context_stride=context_stride,
                    closed_loop=closed_loop,
                    offsets=next_offset,
                    eta=eta,
                    generator=generator,
                    carry_in=carry_trajectory,
                    carry_out=carry_out,
                    on_step_end=reporter,
                    should_stop=should_stop,
                )
                timings["denoise_s"] += time.perf_counter() - mark
                carry_tokens = tokens[0, tokens.shape[1] - carry_out :] if carry_out else None
                carry_trajectory = trajectory or None

                # 7. Decode the new frames and stream them out.
                mark = time.perf_counter()
                for chunk in self.decode_latents(
                    latents[:, :, carried:],
                    decode_chunk_size=decode_chunk_size,
                    refiner_features=refiner_features,
                ):
                    decoded_at = time.perf_counter()
                    timings["decode_s"] += decoded_at - mark
                    if color_match == "reference" and colors is None:
                        reference_crop = resize_rgb(
                            reference_face.generation_crop, chunk[0].shape[0]
                        )
                        colors = ColorMatch.fit(chunk, reference_crop)
                    for image in chunk:
                        if colors is not None:
                            image = colors.apply(image)
                        frame = (
                            paste_face_back(
                                reference_face.image, image, reference_face.crop, feather=feather
                            )
                            if paste_back
                            else np.ascontiguousarray(image)
                        )
                        size = (frame.shape[1], frame.shape[0])
                        if output_path is not None:
                            if writer is None:
                                writer = VideoWriter(
                                    output_path, out_fps, audio_source=audio_source, crf=crf
                                )
                            writer.write(frame)
                        if return_frames:
                            collected.append(frame)
                        frames_done += 1
                    mark = time.perf_counter()
                    timings["write_s"] += mark - decoded_at
                # Nothing of this segment outlives it (the last frame would pin ~1 MB at 512x512
                # paste-back while the next segment runs).
                del latents, chunk, image, frame
                if should_stop():
                    raise GenerationCancelled(frames_done=frames_done)
            if frames_done == 0:
                raise PipelineInputError("the driving input produced no frames")
            path = writer.close() if writer is not None else None
            has_audio = bool(writer is not None and writer.has_audio)
            if writer is not None:
                size = writer.size or size
        except GenerationCancelled as exc:
            if writer is not None:
                writer.abort()
            raise GenerationCancelled(frames_done=frames_done) from exc
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            clear_reference_banks(self.reference_unet, self.denoising_unet)
            self._interrupt = False
            for stream in reversed(generators):
                close = getattr(stream, "close", None)
                if callable(close):
                    close()

        total = time.perf_counter() - started
        timings["total_s"] = total
        timings["frames_per_second"] = frames_done / total if total > 0 else 0.0
        parameters["num_segments"] = num_segments
        return ReenactmentPipelineOutput(
            path=path,
            frames=collected if return_frames else None,
            num_frames=frames_done,
            fps=out_fps,
            size=size,
            has_audio=has_audio,
            seed=seed,
            num_segments=num_segments,
            parameters=parameters,
            timings=timings,
        )

    # -- helpers of __call__ -------------------------------------------------------------------

    @staticmethod
    def _prepare_reference(
        reference: ReferenceFace | np.ndarray | Image.Image | PathLike,
        backend: FaceBackend,
        resolution: int,
    ) -> ReferenceFace:
        if isinstance(reference, ReferenceFace):
            return reference
        if isinstance(reference, Image.Image):
            image = np.asarray(reference.convert("RGB"))
        elif isinstance(reference, np.ndarray):
            image = reference
        else:
            image, _ = load_image(reference)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"the portrait must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}"
            )
        return preprocess_reference(image, backend, generation_size=resolution)

    def _motion_token_stream(
        self,
        frames: Iterable[DrivingFrame],
        bbox_mode: str,
        batch_size: int,
        timings: dict[str, float],
        should_stop: Callable[[], bool],
    ) -> Iterator[torch.Tensor]:
        """Prepared driving frames -> motion tokens ``(n, 32, 16)`` in batches (crops dropped)."""
        if bbox_mode not in ("neutral", "tracked"):
            raise PipelineInputError(f"unknown bbox_mode {bbox_mode!r}")
        crops: list[np.ndarray] = []
        params: list[np.ndarray] = []
        neutral = np.array([0.0, 0.0, 1.0], dtype=np.float32)

        def flush() -> torch.Tensor:
            mark = time.perf_counter()
            tokens = self.encode_motion(crops, params)
            timings["motion_s"] += time.perf_counter() - mark
            crops.clear()
            params.clear()
            return tokens

        iterator = iter(frames)
        while True:
            if should_stop():
                raise GenerationCancelled()
            mark = time.perf_counter()
            frame = next(iterator, None)
            timings["tracking_s"] += time.perf_counter() - mark
            if frame is None:
                break
            crops.append(frame.motion_crop)
            params.append(neutral if bbox_mode == "neutral" else frame.bbox_param)
            if len(crops) >= batch_size:
                yield flush()
        if crops:
            yield flush()

    def _parameters(
        self,
        *,
        locals_: Mapping[str, Any],
        backend: FaceBackend,
        seed: int,
        offset_seed: int,
        segment_overlap: int,
        fps: Fraction,
    ) -> dict[str, Any]:
        """Everything that determines the output, JSON-friendly, for a reproducibility manifest."""
        keys = (
            "num_inference_steps",
            "guidance_scale",
            "eta",
            "strength",
            "resolution",
            "context_frames",
            "context_overlap",
            "context_stride",
            "closed_loop",
            "segment_frames",
            "initial_latents",
            "blur_kernel_size",
            "blur_sigma",
            "negative_clip",
            "negative_motion",
            "negative_reference_attention",
            "bbox_mode",
            "decode_chunk_size",
            "paste_back",
            "feather",
            "color_match",
            "refine_details",
            "detect_every",
            "max_gap_seconds",
            "driving_max_side",
            "audio",
            "crf",
        )
        parameters: dict[str, Any] = {key: locals_[key] for key in keys}
        offsets = locals_["window_offsets"]
        parameters.update(
            seed=seed,
            offset_seed=offset_seed,
            window_offsets=offsets if isinstance(offsets, str) else [int(o) for o in offsets],
            segment_overlap=segment_overlap,
            fps=str(fps),
            bank_dtype=str(locals_["bank_dtype"] or self.model_dtype).removeprefix("torch."),
            scheduler={"class": type(self.scheduler).__name__, **dict(self.scheduler.config)},
            device=str(self._execution_device),
            dtype=str(self.model_dtype).removeprefix("torch."),
            vae_dtype=str(self.vae.dtype).removeprefix("torch."),
            face_backend={"name": backend.info.name, "fingerprint": backend.info.fingerprint},
            components={
                name: f"{type(module).__module__}.{type(module).__name__}"
                for name, module in self.components.items()
                if module is not None
            },
        )
        return json.loads(json.dumps(parameters, default=_json_default))


@dataclass
class _StepReporter:
    """Calls ``callback_on_step_end`` with the tensors asked for plus the progress counters."""

    pipe: ReenactmentPipeline
    callback: CallbackOnStepEnd | None
    tensor_inputs: tuple[str, ...]
    info: dict[str, Any]

    def __call__(
        self,
        step_index: int,
        timestep: torch.Tensor,
        latents: torch.Tensor,
        noise_pred: torch.Tensor,
        num_windows: int,
    ) -> torch.Tensor:
        if self.callback is None:
            return latents
        tensors = {"latents": latents, "noise_pred": noise_pred}
        kwargs: dict[str, Any] = {name: tensors[name] for name in self.tensor_inputs}
        total = self.info["total_frames"]
        progress = None
        if total:
            steps = self.info["num_inference_steps"]
            done = self.info["frames_done"] + self.info["segment_frames"] * (step_index + 1) / steps
            progress = min(1.0, done / total)
        kwargs.update(self.info, step_index=step_index, num_windows=num_windows, progress=progress)
        returned = self.callback(self.pipe, step_index, timestep, kwargs)
        if isinstance(returned, Mapping) and "latents" in returned:
            return returned["latents"]
        return latents


def _json_default(value: Any) -> Any:
    if isinstance(value, Fraction):
        return str(value)
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return repr(value)


def _split_segments(
    chunks: Iterable[torch.Tensor], segment_frames: int, lookahead: int
) -> Iterator[tuple[int, torch.Tensor, bool]]:
    """Regroup streamed token chunks ``(n, 32, 16)`` into segments (see :func:`plan_segments`).

    Yields ``(segment index, tokens of the segment's new frames, is last)``. At most
    ``segment_frames + lookahead + chunk size`` frames' tokens are held.
    """
    pending: list[torch.Tensor] = []
    count = 0
    index = 0
    for chunk in chunks:
        pending.append(chunk)
        count += chunk.shape[0]
        while count >= segment_frames + lookahead:
            tokens = torch.cat(pending)  # n l c, frames in order
            # Copies, not views: a view would keep the whole concatenation alive.
            segment, rest = tokens[:segment_frames].clone(), tokens[segment_frames:].clone()
            del tokens
            pending, count = [rest], rest.shape[0]
            yield index, segment, False
            index += 1
    if count:
        yield index, torch.cat(pending), True


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Silence the libraries' loading chatter (progress bars, the 'install accelerate' advice)
    while components load from local folders; errors still surface as exceptions."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_level = diffusers_logging.get_verbosity()
    transformers_level = transformers_logging.get_verbosity()
    transformers_bars = transformers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(diffusers_level)
        transformers_logging.set_verbosity(transformers_level)
        if transformers_bars:
            transformers_logging.enable_progress_bar()


def _temporal_table_length(unet: UNet3DDenoisingModel) -> int:
    kwargs = unet.config.get("temporal_module_kwargs") or {}
    return int(kwargs.get("temporal_position_encoding_max_len", 32))


def _load_scheduler(folder: Path, entry: Any) -> SchedulerMixin:
    """The scheduler of our layout; only diffusers scheduler classes are accepted."""
    import diffusers
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    from .loading import ModelFolderNotFoundError

    name = "DDIMScheduler"
    if isinstance(entry, list | tuple) and len(entry) == 2:
        name = str(entry[1])
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ModelFolderNotFoundError(f"{folder}: unknown scheduler class {name!r}")
    if not (folder / "scheduler_config.json").is_file():
        raise ModelFolderNotFoundError(f"{folder}: no scheduler_config.json")
    scheduler = cls.from_pretrained(str(folder), local_files_only=True)
    return scheduler[0] if isinstance(scheduler, tuple) else scheduler


__all__ = [
    "DEFAULT_SEGMENT_FRAMES",
    "GenerationCancelled",
    "PipelineInputError",
    "ReenactmentPipeline",
    "ReenactmentPipelineOutput",
    "ReferenceEncoding",
    "gaussian_blur",
    "plan_segments",
    "uniform_context_windows",
]
