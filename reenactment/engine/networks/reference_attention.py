"""Reference attention between the two UNets, and one classifier-free-guided denoising step.

The reference UNet runs once on the clean reference latent at timestep 0 with all transformer
blocks in *write* mode; each block keeps the input of its self-attention (``norm1`` output,
``(B_ref, H*W, C)``) in a bank. The banks are handed to the denoising UNet's transformer blocks
paired by **block path** (the two networks share their block layout), which then attend over
``[own tokens ; reference tokens]`` in their self-attention. Under classifier-free guidance the
unconditional half of the batch (the first ``B/2`` rows, CFG order is ``[uncond, cond]``) keeps
plain self-attention. The same banks serve every denoising step and context window.

Typical use::

    control = ReferenceAttentionControl(reference_unet, denoising_unet,
                                        do_classifier_free_guidance=True)
    with control:
        control.write(reference_latents, clip_embeds)      # reference pass at t = 0
        for t in scheduler.timesteps:
            step = guided_noise_prediction(denoising_unet, latents, t, clip_embeds,
                                           motion_tokens, neg_motion_tokens, guidance_scale=2.5)
            latents = scheduler.step(step.noise_pred, t, latents).prev_sample
    # leaving the block clears every bank
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

import torch

from .attention import ReferenceMode, ReferenceTransformerBlock
from .unet_2d_reference import UNet2DReferenceModel
from .unet_3d_denoising import UNet3DDenoisingModel

ReferenceBanks = dict[str, torch.Tensor]
"""Reference features by transformer-block path, each ``(B_ref, H*W, C)``."""


def cfg_clip_embeds(clip_embeds: torch.Tensor) -> torch.Tensor:
    """``(B, L, D)`` -> ``(2B, L, D)`` = ``[zeros, clip]`` (the unconditional token is zero)."""
    return torch.cat([torch.zeros_like(clip_embeds), clip_embeds], dim=0)


def cfg_motion_tokens(motion_tokens: torch.Tensor, neg_motion_tokens: torch.Tensor) -> torch.Tensor:
    """Stack unconditional and conditional motion tokens in CFG order.

    Args:
        motion_tokens: Driving-frame tokens ``(B, F, L, C)``.
        neg_motion_tokens: Tokens of the reference face ``(B, L, C)`` (broadcast over frames) or
            already per frame ``(B, F, L, C)``.

    Returns:
        ``(2B, F, L, C)`` = ``[neg, motion]``.
    """
    if neg_motion_tokens.ndim == 3:
        # b l c -> b f l c
        neg_motion_tokens = neg_motion_tokens.unsqueeze(1).expand_as(motion_tokens)
    return torch.cat([neg_motion_tokens, motion_tokens], dim=0)


def _paired_blocks(
    reference_unet: UNet2DReferenceModel, denoising_unet: UNet3DDenoisingModel
) -> dict[str, tuple[ReferenceTransformerBlock, ReferenceTransformerBlock]]:
    writers = reference_unet.reference_blocks()
    readers = denoising_unet.reference_blocks()
    if writers.keys() != readers.keys():
        only_ref = sorted(writers.keys() - readers.keys())
        only_den = sorted(readers.keys() - writers.keys())
        raise ValueError(
            "reference and denoising UNets have different transformer blocks "
            f"(only in reference: {only_ref}; only in denoiser: {only_den})"
        )
    return {name: (writers[name], readers[name]) for name in writers}


def run_reference_pass(
    reference_unet: UNet2DReferenceModel,
    reference_latents: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor | int = 0,
) -> ReferenceBanks:
    """Run the reference UNet in write mode and return its banks.

    Args:
        reference_unet: The appearance network.
        reference_latents: Clean reference latents ``(B_ref, 4, h, w)`` (already scaled).
        encoder_hidden_states: CLIP embeddings ``(B_ref, 1, D)``.
        timestep: Always 0 in X-NeMo (the reference is clean).

    Returns:
        Banks keyed by block path; the reference UNet is left in ``off`` mode and empty.
    """
    reference_unet.set_reference_mode(ReferenceMode.WRITE)
    try:
        reference_unet(reference_latents, timestep, encoder_hidden_states, return_dict=False)
        return reference_unet.reference_banks()
    finally:
        reference_unet.clear_reference_banks()
        reference_unet.set_reference_mode(ReferenceMode.OFF)


def load_reference_banks(
    denoising_unet: UNet3DDenoisingModel,
    banks: Mapping[str, torch.Tensor],
    *,
    do_classifier_free_guidance: bool,
    dtype: torch.dtype | None = None,
) -> None:
    """Put every denoiser transformer block into read mode with its bank.

    Args:
        denoising_unet: The video network.
        banks: Banks keyed by block path (from :func:`run_reference_pass`).
        do_classifier_free_guidance: The first half of each batch is unconditional and must not
            see the reference.
        dtype: Bank dtype; by default the denoiser's own dtype. (The official code casts to
            float16 unconditionally; pass ``torch.float16`` only to reproduce that rounding.)
    """
    blocks = denoising_unet.reference_blocks()
    if banks.keys() != blocks.keys():
        missing = sorted(blocks.keys() - banks.keys())
        extra = sorted(banks.keys() - blocks.keys())
        raise ValueError(f"bank/block mismatch (missing banks: {missing}; unknown banks: {extra})")
    target = dtype if dtype is not None else denoising_unet.dtype
    for name, block in blocks.items():
        block.reference_bank = banks[name].to(dtype=target)
        block.reference_mode = ReferenceMode.READ
        block.reference_cfg = do_classifier_free_guidance


def clear_reference_banks(*unets: UNet2DReferenceModel | UNet3DDenoisingModel) -> None:
    """Drop all banks and switch every transformer block back to plain self-attention."""
    for unet in unets:
        for block in unet.reference_blocks().values():
            block.reference_bank = None
            block.reference_mode = ReferenceMode.OFF
            block.reference_cfg = False


class ReferenceAttentionControl:
    """Couples a reference UNet (writer) with a denoising UNet (reader).

    Pairing is by transformer-block path and is checked at construction. Use as a context
    manager to guarantee the banks are released.

    Args:
        reference_unet: The appearance network.
        denoising_unet: The video network.
        do_classifier_free_guidance: Run the reference pass on ``[zero CLIP, CLIP]`` and keep the
            unconditional denoiser rows free of reference features.
        bank_dtype: Override the bank dtype (default: the denoiser's dtype).
    """

    def __init__(
        self,
        reference_unet: UNet2DReferenceModel,
        denoising_unet: UNet3DDenoisingModel,
        *,
        do_classifier_free_guidance: bool,
        bank_dtype: torch.dtype | None = None,
    ) -> None:
        _paired_blocks(reference_unet, denoising_unet)
        self.reference_unet = reference_unet
        self.denoising_unet = denoising_unet
        self.do_classifier_free_guidance = do_classifier_free_guidance
        self.bank_dtype = bank_dtype

    def write(self, reference_latents: torch.Tensor, clip_embeds: torch.Tensor) -> ReferenceBanks:
        """Reference pass at timestep 0 and hand-over to the denoiser.

        Args:
            reference_latents: ``(B, 4, h, w)`` scaled reference latents.
            clip_embeds: Conditional CLIP image embeddings ``(B, 1, D)``; under CFG the batch is
                doubled to ``[zeros, clip]`` here.

        Returns:
            The banks as written (before any dtype cast), keyed by block path.
        """
        if self.do_classifier_free_guidance:
            # b c h w -> (2 b) c h w : the same latent for the [uncond, cond] CLIP pair.
            reference_latents = reference_latents.repeat(2, 1, 1, 1)
            clip_embeds = cfg_clip_embeds(clip_embeds)
        banks = run_reference_pass(self.reference_unet, reference_latents, clip_embeds, 0)
        self.hand_over(banks)
        return banks

    def hand_over(self, banks: Mapping[str, torch.Tensor]) -> None:
        """Give precomputed banks to the denoiser (read mode)."""
        load_reference_banks(
            self.denoising_unet,
            banks,
            do_classifier_free_guidance=self.do_classifier_free_guidance,
            dtype=self.bank_dtype,
        )

    def clear(self) -> None:
        """Release the banks of both networks and restore plain self-attention."""
        clear_reference_banks(self.reference_unet, self.denoising_unet)

    def __enter__(self) -> ReferenceAttentionControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.clear()


@dataclass
class GuidedNoisePrediction:
    """Result of :func:`guided_noise_prediction`.

    Args:
        noise_pred: Guided prediction ``u + s * (c - u)``, ``(B, C, F, H, W)``.
        noise_pred_cfg_batch: Raw denoiser output ``(2B, C, F, H, W)`` in ``[uncond, cond]`` order.
    """

    noise_pred: torch.Tensor
    noise_pred_cfg_batch: torch.Tensor


def guided_noise_prediction(
    denoising_unet: UNet3DDenoisingModel,
    latents: torch.Tensor,
    timestep: torch.Tensor | int,
    clip_embeds: torch.Tensor,
    motion_tokens: torch.Tensor,
    neg_motion_tokens: torch.Tensor,
    guidance_scale: float,
) -> GuidedNoisePrediction:
    """One classifier-free-guided noise prediction of the denoising UNet.

    The unconditional branch differs from the conditional one in three ways: zero CLIP embedding,
    the reference face's own motion tokens, and (when banks were loaded with CFG) no reference
    attention. Latents and timestep are shared.

    Args:
        denoising_unet: The video network (banks loaded with ``do_classifier_free_guidance=True``
            for reference attention; without banks it runs plain).
        latents: Noisy latents ``(B, 4, F, h, w)``.
        timestep: Current timestep (0-d tensor or int).
        clip_embeds: Conditional CLIP embeddings ``(B, 1, D)``.
        motion_tokens: Driving motion tokens ``(B, F, 32, 16)``.
        neg_motion_tokens: Reference-face motion tokens ``(B, 32, 16)``.
        guidance_scale: ``s`` in ``u + s * (c - u)`` (2.5 in the release).
    """
    prediction = denoising_unet(
        # b c f h w -> (2 b) c f h w : both halves denoise the same latents.
        latents.repeat(2, 1, 1, 1, 1),
        timestep,
        cfg_clip_embeds(clip_embeds),
        cfg_motion_tokens(motion_tokens, neg_motion_tokens),
        return_dict=False,
    )[0]
    uncond, cond = prediction.chunk(2)
    return GuidedNoisePrediction(
        noise_pred=uncond + guidance_scale * (cond - uncond), noise_pred_cfg_batch=prediction
    )
