"""Widening a trained model's latent space without changing what it computes.

The preview model's 4x16x16 latent loses what makes a SynthFace character recognisable: its VAE's
round trip alone leaves dlib a face in about a third of the validation portraits, and no denoiser
on those latents can show more. More latent channels keep more of a face, but a new latent space
would mean training every network again. Instead, a model trained on ``C`` channels is widened to
``N > C`` so that, before any training, it computes exactly what it did:

* VAE encoder: the posterior's first ``C`` mean and log-variance rows are the old ones; the new
  mean rows keep the fresh network's random directions at the old rows' norm (they start
  carrying whatever the encoder's last features hold, at about the old channels' scale), the
  new log-variance rows are constant (the old channels' mean bias).
  ``quant_conv`` maps the old channels as before and passes the new ones through.
* VAE decoder, both UNets' ``conv_in``: the new input channels get zero weights (ignored).
* Denoising UNet ``conv_out``: the new output channels are zero (predicted noise 0).

Stage 0 then trains either only the new encoder rows and the decoder
(``vae_encoder_train_channels_from``: the old channels, and the denoiser trained on them, stay
valid) or the whole autoencoder (a new latent space), and stage 1 teaches the UNets to use and
predict the new channels.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

#: Per network: parameters whose shape depends on the latent channels, and the dimension that
#: does (0: output channels, 1: input channels). The VAE's encoder output and ``quant_conv`` are
#: laid out ``[mean (C), log-variance (C)]`` and handled by :func:`_widen_posterior`.
LATENT_DIMENSIONS: dict[str, dict[str, int]] = {
    "vae": {"decoder.conv_in.weight": 1},
    "reference_unet": {"conv_in.weight": 1},
    "denoising_unet": {"conv_in.weight": 1, "conv_out.weight": 0, "conv_out.bias": 0},
}
_POSTERIOR_KEYS = (
    "encoder.conv_out.weight",
    "encoder.conv_out.bias",
    "quant_conv.weight",
    "quant_conv.bias",
)


class LatentExpansionError(ValueError):
    """The weights cannot be widened into the target network (another architecture)."""


def _widen_dimension(old: torch.Tensor, new: torch.Tensor, dim: int) -> torch.Tensor:
    """``new``'s shape, zero, with ``old`` in the leading slots of ``dim``."""
    out = torch.zeros_like(new)
    index = [slice(None)] * old.ndim
    index[dim] = slice(0, old.shape[dim])
    out[tuple(index)] = old.to(out.dtype)
    return out


def _widen_posterior(
    key: str, old: torch.Tensor, new: torch.Tensor, old_channels: int, channels: int
) -> torch.Tensor:
    """Encoder output rows (and ``quant_conv`` columns) ``[mean, logvar]`` from ``old_channels``
    to ``channels`` per half; ``new`` is the freshly initialised target."""
    c, n = old_channels, channels
    out = new.detach().clone().to(old.dtype)
    if key.startswith("encoder.conv_out"):
        # rows: [mean 0:C | logvar C:2C] -> [mean 0:N | logvar N:2N]
        out[:c] = old[:c]
        out[n : n + c] = old[c:]
        if key.endswith("weight"):
            # The decoder reads the new channels through zero weights, so both factors of their
            # first gradients would be small if these rows were too: give each new row the old
            # (calibrated, unit-variance) rows' mean norm, so the new channels start at about
            # the old ones' scale and the decoder learns to read them from the first steps.
            target_norm = old[:c].flatten(1).norm(dim=1).mean()
            norms = out[c:n].flatten(1).norm(dim=1).clamp_min(1e-12)
            out[c:n] *= (target_norm / norms)[:, None, None, None]
            out[n + c :] = 0.0
        else:
            out[c:n] = 0.0
            # New channels: a constant log-variance like the old ones' (only the KL term sees it).
            out[n + c :] = old[c:].mean()
        return out
    # quant_conv (1x1): the old [mean, logvar] block mapped as before, the new channels passed
    # through unchanged and never mixed into the old ones.
    out.zero_()
    if key.endswith("weight"):
        for row in range(2 * n):
            out[row, row] = 1.0
        halves = ((slice(0, c), slice(0, c)), (slice(n, n + c), slice(c, 2 * c)))
        for new_rows, old_rows in halves:
            for new_cols, old_cols in halves:
                out[new_rows, new_cols] = old[old_rows, old_cols]
    else:
        out[:c] = old[:c]
        out[n : n + c] = old[c:]
    return out


def widen_latent_state(
    network: str,
    state: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    old_channels: int,
    channels: int,
) -> dict[str, torch.Tensor]:
    """``state`` (trained with ``old_channels`` latent channels) as a state dict for ``target``
    (a freshly built network with ``channels``), computing the same on the old channels.

    Raises:
        LatentExpansionError: A parameter differs in anything but the latent channels, or the
            channel counts do not widen.
    """
    if not 0 < old_channels < channels:
        raise LatentExpansionError(f"latent channels must grow: {old_channels} -> {channels}")
    missing = sorted(set(target) ^ set(state))
    if missing:
        raise LatentExpansionError(
            f"{network}: parameters differ between the two architectures: {missing[:5]}"
        )
    dims = LATENT_DIMENSIONS.get(network, {})
    out: dict[str, torch.Tensor] = {}
    for key, new in target.items():
        old = state[key]
        if old.shape == new.shape:
            out[key] = old
        elif network == "vae" and key in _POSTERIOR_KEYS:
            out[key] = _widen_posterior(key, old, new, old_channels, channels)
        elif key in dims and _only_latent_dimension_grows(old, new, dims[key], old_channels):
            out[key] = _widen_dimension(old, new, dims[key])
        else:
            raise LatentExpansionError(
                f"{network}.{key}: shape {tuple(old.shape)} cannot be widened to "
                f"{tuple(new.shape)} ({old_channels} -> {channels} latent channels)"
            )
    return out


def _only_latent_dimension_grows(
    old: torch.Tensor, new: torch.Tensor, dim: int, old_channels: int
) -> bool:
    if old.ndim != new.ndim or old.shape[dim] != old_channels:
        return False
    return all(a == b for i, (a, b) in enumerate(zip(old.shape, new.shape)) if i != dim)


__all__ = [
    "LATENT_DIMENSIONS",
    "LatentExpansionError",
    "widen_latent_state",
]
