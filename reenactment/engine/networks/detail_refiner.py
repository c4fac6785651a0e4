"""A reference-guided detail refiner: decoded frames + the portrait -> frames with its details back.

A small autoencoder's latent (the SynthFace preview model's is 4x16x16 for a 64x64 face) keeps
pose, expression and colours but not the fine marks that make a face that person's - eyes,
glasses, beards come back from the decoder as smears, whatever the denoiser does. Those details
are in the portrait, which every generation has. The refiner looks at a decoded frame and at the
portrait and predicts a residual for the frame: a shared conv encoder reads both images, the
frame's features attend to themselves *and* the portrait's at the coarse levels (the reference
attention of the X-NeMo UNets, here in pixel space: keys and values are the frame's tokens
concatenated with the portrait's, so a frame region can copy the portrait region that shows the
same part of the face, wherever the pose moved it), and a conv decoder with skips writes the
residual.

It sees neither the driver nor the motion tokens, so it cannot bring a performer's identity in;
everything it adds comes from the portrait. Its output projection starts at zero, so an untrained
refiner returns its input exactly and a model folder without one decodes as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .compact_motion_encoder import ResBlock
from .positional import sincos_2d

#: How much faster than its stored value the warp gate moves (see the constructor).
WARP_GATE_SCALE = 100.0


@dataclass
class DetailRefinerOutput(BaseOutput):  # type: ignore[misc]
    """What :meth:`ReferenceDetailRefiner.forward` computed, with ``return_parts=True``.

    Args:
        sample: The refined frames ``(N, 3, S, S)``.
        warped: The portrait warped along the predicted flow ``(N, 3, S, S)`` (``None`` without
            ``warp``): training can supervise the flow through it directly, not only through
            the share of it the mask lets into ``sample``.
        mask: The warped portrait's share of each pixel ``(N, 1, S, S)`` (``None`` without
            ``warp``).
    """

    sample: torch.Tensor
    warped: torch.Tensor | None = None
    mask: torch.Tensor | None = None


class _ReferenceAttention(nn.Module):
    """Frame tokens attend to ``[frame tokens; portrait tokens]``; the output is added back.

    A fixed 2-D sine table is added to queries and keys so that, among regions that look alike,
    the attention can prefer the one at the same place in the portrait, and to the portrait's
    values, so that what a frame region takes from the portrait also says where it took it from
    (what a flow towards the portrait needs).
    """

    def __init__(self, channels: int, heads: int, groups: int, side: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention_heads {heads} must divide the level's {channels} channels")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.Linear(channels, channels)
        # (1, side * side, channels), row-major like the tokens
        self.register_buffer("pos", sincos_2d(channels, side), persistent=False)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        # n c h w -> n (h w) c
        return self.norm(x).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens, ref_tokens = self._tokens(x), self._tokens(reference)
        pos = self.pos.to(tokens.dtype)
        keys_in = torch.cat([tokens + pos, ref_tokens + pos], dim=1)  # n (2 h w) c
        values_in = torch.cat([tokens, ref_tokens + pos], dim=1)

        def heads(t: torch.Tensor) -> torch.Tensor:
            # n l c -> n heads l (c / heads)
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.to_q(tokens + pos)), heads(self.to_k(keys_in)), heads(self.to_v(values_in))
        )
        # n heads l d -> n l c -> n c h w
        out = self.to_out(out.transpose(1, 2).flatten(2)).transpose(1, 2).reshape(n, c, h, w)
        return x + out


class ReferenceDetailRefiner(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """``(frames, portrait)`` -> refined frames, all ``(N, 3, S, S)`` in ``[-1, 1]``.

    Args:
        sample_size: Frame size ``S`` the positional tables are built for (a multiple of
            ``2^(len(channels) - 1)``); frames of another size are refused.
        channels: Channels per level; level ``i`` works at ``S / 2^i``.
        attention_levels: Levels with reference attention (coarse ones: attention costs the
            square of the token count).
        attention_heads: Heads of each reference attention.
        norm_groups: GroupNorm groups (must divide every level's channels).
        warp: Also predict a flow field that warps the portrait onto the frame and a mask that
            blends the warped portrait in (gated by a scalar that starts at zero): sharp details
            can then be moved rather than re-drawn from attention features.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        sample_size: int = 64,
        channels: Sequence[int] = (32, 64, 96),
        attention_levels: Sequence[int] = (1, 2),
        attention_heads: int = 4,
        norm_groups: int = 8,
        warp: bool = False,
    ) -> None:
        super().__init__()
        levels = len(channels)
        if sample_size % 2 ** (levels - 1):
            raise ValueError("sample_size must be a multiple of 2^(len(channels) - 1)")
        if any(not 0 <= level < levels for level in attention_levels):
            raise ValueError(f"attention_levels must be in [0, {levels})")
        self.stem = nn.Conv2d(3, channels[0], 3, padding=1)
        self.encoder = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = channels[0]
        for i, ch in enumerate(channels):
            self.encoder.append(ResBlock(prev, ch, norm_groups))
            if i < levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            prev = ch
        self.attention = nn.ModuleDict(
            {
                str(level): _ReferenceAttention(
                    channels[level], attention_heads, norm_groups, sample_size // 2**level
                )
                for level in attention_levels
            }
        )
        self.decoder = nn.ModuleList()
        for i in reversed(range(levels - 1)):
            # upsampled level i + 1 concatenated with the skip of level i
            self.decoder.append(ResBlock(channels[i + 1] + channels[i], channels[i], norm_groups))
        self.norm_out = nn.GroupNorm(norm_groups, channels[0])
        self.conv_out = nn.Conv2d(channels[0], 3, 3, padding=1)
        # Identity at initialisation: the residual is zero until training moves it.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        if warp:
            # 2 flow channels (normalised offsets) + 1 mask logit; zero flow at first.
            self.warp_out = nn.Conv2d(channels[0], 3, 3, padding=1)
            nn.init.zeros_(self.warp_out.weight)
            nn.init.zeros_(self.warp_out.bias)
            # The warped portrait's share; zero keeps the refiner the identity at first. Adam
            # moves one parameter by about the learning rate per step, so the gate is stored
            # divided by WARP_GATE_SCALE: it can open within a few hundred steps, not thousands.
            self.warp_gate = nn.Parameter(torch.zeros(()))

    def _features(
        self, images: torch.Tensor, reference: Sequence[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Encoder pyramid; with the portrait's pyramid, the attention levels look at it too
        (so deeper levels already build on what the frame took from the portrait)."""
        x = self.stem(images)
        features = []
        for i, block in enumerate(self.encoder):
            if i > 0:
                x = self.downsample[i - 1](x)
            x = block(x)
            if reference is not None and str(i) in self.attention:
                ref = reference[i]
                ref = ref.expand(x.shape[0], -1, -1, -1) if ref.shape[0] == 1 else ref
                x = self.attention[str(i)](x, ref)
            features.append(x)
        return features

    def encode_reference(self, reference: torch.Tensor) -> list[torch.Tensor]:
        """The portrait's feature pyramid followed by the portrait itself, to reuse across many
        frames (``(1 or N, 3, S, S)``)."""
        self._check_size(reference)
        return [*self._features(reference), reference]

    def _check_size(self, images: torch.Tensor) -> None:
        size = int(self.config["sample_size"])
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (size, size):
            raise ValueError(
                f"the refiner takes (N, 3, {size}, {size}) images, got {tuple(images.shape)}"
            )

    @overload
    def forward(
        self,
        frames: torch.Tensor,
        reference: torch.Tensor | None = ...,
        *,
        reference_features: Sequence[torch.Tensor] | None = ...,
        return_parts: Literal[False] = ...,
    ) -> torch.Tensor: ...

    @overload
    def forward(
        self,
        frames: torch.Tensor,
        reference: torch.Tensor | None = ...,
        *,
        reference_features: Sequence[torch.Tensor] | None = ...,
        return_parts: Literal[True],
    ) -> DetailRefinerOutput: ...

    def forward(
        self,
        frames: torch.Tensor,
        reference: torch.Tensor | None = None,
        *,
        reference_features: Sequence[torch.Tensor] | None = None,
        return_parts: bool = False,
    ) -> torch.Tensor | DetailRefinerOutput:
        """Refine ``frames`` with the portrait's details.

        Args:
            frames: Decoded frames ``(N, 3, S, S)``.
            reference: The portrait ``(1 or N, 3, S, S)``; or pass
                ``reference_features`` from :meth:`encode_reference` instead.
            return_parts: Return a :class:`DetailRefinerOutput` (refined frames, warped
                portrait, mask) instead of the refined frames alone.
        """
        self._check_size(frames)
        if reference_features is None:
            if reference is None:
                raise ValueError("the refiner needs the portrait or its features")
            reference_features = self.encode_reference(reference)
        features = self._features(frames, reference_features)
        x = features[-1]
        for step, block in enumerate(self.decoder):
            skip = features[len(features) - 2 - step]
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        h = F.silu(self.norm_out(x))
        out = frames + self.conv_out(h)
        if not self.config["warp"]:
            return DetailRefinerOutput(sample=out) if return_parts else out
        n, _, size, _ = frames.shape
        portrait = reference_features[-1]
        portrait = portrait.expand(n, -1, -1, -1) if portrait.shape[0] == 1 else portrait
        flow_mask = self.warp_out(h)  # n 3 s s
        # identity sampling grid (x, y) in [-1, 1], pixel centres: s s 2
        axis = (torch.arange(size, device=frames.device, dtype=frames.dtype) + 0.5) / size * 2 - 1
        grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1)
        # n 2 s s -> n s s 2
        grid = grid + flow_mask[:, :2].permute(0, 2, 3, 1)
        warped = F.grid_sample(
            portrait, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        gate = self.warp_gate * WARP_GATE_SCALE
        mask = gate * (torch.tanh(flow_mask[:, 2:]) + 1) / 2  # n 1 s s
        out = out + mask * (warped - frames)
        return DetailRefinerOutput(sample=out, warped=warped, mask=mask) if return_parts else out


__all__ = ["DetailRefinerOutput", "ReferenceDetailRefiner"]
