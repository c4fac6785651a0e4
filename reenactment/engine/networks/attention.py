"""Attention and transformer building blocks shared by the X-NeMo networks.

Everything here works on frame-folded tensors: a video batch ``b c f h w`` is handled as
``(b f) c h w`` (batch-major, row ``b * F + f``) so that every 2-D operation is per frame, and the
blocks that need to know the frame structure receive ``num_frames``.

Contents:

* :class:`Attention` - multi-head (self or cross) attention through
  :func:`torch.nn.functional.scaled_dot_product_attention`, with the diffusers parameter names
  ``to_q`` / ``to_k`` / ``to_v`` / ``to_out.0``.
* :class:`ReferenceTransformerBlock` - the SD transformer block (self-attn, CLIP cross-attn,
  GEGLU feed-forward) with the X-NeMo *reference attention*: in ``write`` mode it stores the input
  of its self-attention in a bank; in ``read`` mode it extends its self-attention keys/values with
  a bank handed over from the reference UNet.
* :class:`SpatialTransformer` - GroupNorm -> 1x1 projection -> transformer blocks -> projection,
  with a residual (diffusers' ``Transformer2DModel`` layout).
* :class:`VersatileAttention` / :class:`VersatileTransformerBlock` - the AnimateDiff-style blocks
  (``attention_blocks`` / ``norms`` / ``ff`` / ``ff_norm``) used by the motion modules (spatial
  cross-attention to motion tokens), the temporal modules (self-attention across frames with a
  sinusoidal position table) and the motion encoder's patch attention (spatial self-attention).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from torch import nn

from .positional import interleaved_sincos


class Attention(nn.Module):
    """Multi-head attention with SDPA.

    Args:
        query_dim: Channels of the queries (and of the output).
        cross_attention_dim: Channels of the key/value source; ``None`` means self-attention
            (keys/values come from the queries' own input, or from an explicit context).
        heads: Number of heads.
        dim_head: Channels per head.
        bias: Whether ``to_q``/``to_k``/``to_v`` have a bias (SD and X-NeMo: no).
        dropout: Dropout after the output projection (kept as ``to_out.1`` for key parity).
    """

    def __init__(
        self,
        query_dim: int,
        cross_attention_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        bias: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        kv_dim = cross_attention_dim if cross_attention_dim is not None else query_dim
        self.heads = heads
        self.is_cross_attention = cross_attention_dim is not None
        self.to_q = nn.Linear(query_dim, inner_dim, bias=bias)
        self.to_k = nn.Linear(kv_dim, inner_dim, bias=bias)
        self.to_v = nn.Linear(kv_dim, inner_dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim), nn.Dropout(dropout)])

    def forward(
        self, hidden_states: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend from ``hidden_states`` ``(N, Lq, query_dim)`` to ``context`` ``(N, Lk, kv_dim)``.

        ``context=None`` means plain self-attention over ``hidden_states``.
        """
        context = hidden_states if context is None else context
        batch, q_len, _ = hidden_states.shape
        query = self.to_q(hidden_states)
        key = self.to_k(context)
        value = self.to_v(context)
        head_dim = query.shape[-1] // self.heads
        # n l (h d) -> n h l d
        query = query.view(batch, q_len, self.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, self.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, self.heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(query, key, value)
        # n h l d -> n l (h d)
        out = out.transpose(1, 2).reshape(batch, q_len, self.heads * head_dim)
        out = self.to_out[0](out)
        return self.to_out[1](out)


class ReferenceMode(enum.StrEnum):
    """What a :class:`ReferenceTransformerBlock` does with reference features.

    * ``OFF`` - plain self-attention (no bank involved).
    * ``WRITE`` - store the self-attention input (the ``norm1`` output) in ``reference_bank``,
      then run normally. Used by the reference UNet.
    * ``READ`` - self-attention keys/values are the block's own tokens followed by the bank's
      tokens. Used by the denoising UNet.
    """

    OFF = "off"
    WRITE = "write"
    READ = "read"


class ReferenceTransformerBlock(nn.Module):
    """SD transformer block with X-NeMo reference attention.

    ``x += attn1(norm1(x) [, bank]); x += attn2(norm2(x), context); x += ff(norm3(x))``.

    The reference-attention state lives on the block (``reference_mode``, ``reference_bank``,
    ``reference_cfg``) and is managed by
    :class:`~reenactment.engine.networks.reference_attention.ReferenceAttentionControl`; the
    block itself never casts the bank to a fixed dtype, it follows its input's dtype.

    Args:
        dim: Channels of the tokens.
        num_attention_heads: Heads of both attentions.
        attention_head_dim: Channels per head.
        cross_attention_dim: Channels of the cross-attention context (CLIP image embedding).
        dropout: Attention/feed-forward dropout.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        cross_attention_dim: int,
        dropout: float = 0.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn1 = Attention(dim, None, num_attention_heads, attention_head_dim, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn2 = Attention(
            dim, cross_attention_dim, num_attention_heads, attention_head_dim, dropout=dropout
        )
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.ff = FeedForward(dim, dropout=dropout, activation_fn="geglu")

        self.reference_mode: ReferenceMode = ReferenceMode.OFF
        # WRITE: (B, L, C) written by the last forward. READ: (B_ref, L_ref, C) handed over.
        self.reference_bank: torch.Tensor | None = None
        # READ under classifier-free guidance: the first half of the batch (the unconditional
        # rows) must not see the reference, so it falls back to plain self-attention.
        self.reference_cfg: bool = False

    def _reference_self_attention(
        self, norm_hidden_states: torch.Tensor, num_frames: int
    ) -> torch.Tensor:
        bank = self.reference_bank
        if bank is None:
            raise RuntimeError(
                "reference attention is in READ mode but no bank was handed over; run the "
                "reference UNet write pass first (ReferenceAttentionControl.write)"
            )
        # Follow the activations' dtype: the official code casts banks to float16
        # unconditionally, which breaks bf16 and silently rounds float32 runs.
        bank = bank.to(device=norm_hidden_states.device, dtype=norm_hidden_states.dtype)
        rows = norm_hidden_states.shape[0]
        # b l c -> (b f) l c : every frame of batch item b sees the bank row of item b.
        bank = bank.repeat_interleave(num_frames, dim=0)
        if bank.shape[0] == num_frames and rows != num_frames:
            # A single reference shared by every batch item: (1 f) l c -> (b f) l c.
            bank = bank.repeat(rows // num_frames, 1, 1)
        if bank.shape[0] != rows:
            raise ValueError(
                f"reference bank holds {bank.shape[0] // num_frames} batch item(s) but the block "
                f"runs {rows // num_frames}; write the bank with the same batch size"
            )
        if not self.reference_cfg:
            context = torch.cat([norm_hidden_states, bank], dim=1)
            return self.attn1(norm_hidden_states, context)
        if rows % 2 != 0:
            raise ValueError(f"classifier-free guidance needs an even batch, got {rows} rows")
        half = rows // 2
        uncond, cond = norm_hidden_states[:half], norm_hidden_states[half:]
        # Unconditional rows: plain self-attention (they never see reference features).
        out_uncond = self.attn1(uncond)
        # Conditional rows: own tokens followed by the reference tokens as keys/values.
        out_cond = self.attn1(cond, torch.cat([cond, bank[half:]], dim=1))
        return torch.cat([out_uncond, out_cond], dim=0)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        num_frames: int = 1,
    ) -> torch.Tensor:
        """Run the block.

        Args:
            hidden_states: Tokens ``((b f), L, C)``.
            encoder_hidden_states: Cross-attention context ``((b f), L_ctx, D)``.
            num_frames: Frames folded into the batch (1 for images).

        Returns:
            Tokens of the same shape as ``hidden_states``.
        """
        norm_hidden_states = self.norm1(hidden_states)
        if self.reference_mode is ReferenceMode.READ:
            attn_output = self._reference_self_attention(norm_hidden_states, num_frames)
        else:
            if self.reference_mode is ReferenceMode.WRITE:
                # Overwrite (never append): a checkpointed re-run must not grow the bank.
                self.reference_bank = norm_hidden_states
            attn_output = self.attn1(norm_hidden_states)
        hidden_states = attn_output + hidden_states
        hidden_states = self.attn2(self.norm2(hidden_states), encoder_hidden_states) + hidden_states
        hidden_states = self.ff(self.norm3(hidden_states)) + hidden_states
        return hidden_states


class SpatialTransformer(nn.Module):
    """Per-frame spatial transformer (diffusers ``Transformer2DModel`` layout).

    ``out = proj_out(blocks(proj_in(GroupNorm(x)))) + x``, with tokens ``(N, H*W, C)``.

    Args:
        num_attention_heads: Heads per attention.
        attention_head_dim: Channels per head.
        in_channels: Channels of the feature map.
        num_layers: Number of :class:`ReferenceTransformerBlock`.
        norm_num_groups: Groups of the input GroupNorm (eps 1e-6).
        cross_attention_dim: Channels of the cross-attention context.
        use_linear_projection: Linear instead of 1x1-conv projections.
        dropout: Dropout inside the blocks.
    """

    def __init__(
        self,
        num_attention_heads: int,
        attention_head_dim: int,
        in_channels: int,
        num_layers: int = 1,
        norm_num_groups: int = 32,
        cross_attention_dim: int = 768,
        use_linear_projection: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6, affine=True)
        if use_linear_projection:
            self.proj_in: nn.Module = nn.Linear(in_channels, inner_dim)
            self.proj_out: nn.Module = nn.Linear(inner_dim, in_channels)
        else:
            self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1)
            self.proj_out = nn.Conv2d(inner_dim, in_channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [
                ReferenceTransformerBlock(
                    inner_dim,
                    num_attention_heads,
                    attention_head_dim,
                    cross_attention_dim=cross_attention_dim,
                    dropout=dropout,
                )
                for _ in range(num_layers)
            ]
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        num_frames: int = 1,
    ) -> torch.Tensor:
        """``hidden_states`` ``(N, C, H, W)`` with ``N = b * num_frames``; context ``(N, L, D)``."""
        batch, _, height, width = hidden_states.shape
        residual = hidden_states
        hidden_states = self.norm(hidden_states)
        if not self.use_linear_projection:
            hidden_states = self.proj_in(hidden_states)
        inner_dim = hidden_states.shape[1]
        # n c h w -> n (h w) c
        hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch, height * width, inner_dim)
        if self.use_linear_projection:
            hidden_states = self.proj_in(hidden_states)
            inner_dim = hidden_states.shape[-1]
        for block in self.transformer_blocks:
            hidden_states = block(hidden_states, encoder_hidden_states, num_frames)
        if self.use_linear_projection:
            hidden_states = self.proj_out(hidden_states)
        # n (h w) c -> n c h w
        hidden_states = hidden_states.reshape(batch, height, width, -1).permute(0, 3, 1, 2)
        if not self.use_linear_projection:
            hidden_states = self.proj_out(hidden_states.contiguous())
        return hidden_states + residual


class TemporalPositionalEncoding(nn.Module):
    """Adds the interleaved sin/cos table ``pe`` ``(1, max_len, dim)`` along the frame axis.

    ``pe`` is a persistent buffer (it is part of the released temporal checkpoint); when a file
    lacks it, :meth:`reset_table` regenerates the identical values.
    """

    pe: torch.Tensor

    def __init__(self, dim: int, max_len: int = 32) -> None:
        super().__init__()
        self.register_buffer("pe", interleaved_sincos(max_len, dim), persistent=True)

    def reset_table(self) -> None:
        """Recompute ``pe`` from the formula (e.g. after building on the meta device)."""
        _, max_len, dim = self.pe.shape
        device = self.pe.device if self.pe.device.type != "meta" else torch.device("cpu")
        dtype = self.pe.dtype
        self.pe = interleaved_sincos(max_len, dim).to(device=device, dtype=dtype)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``hidden_states`` ``(N, F, C)`` with ``F <= max_len``."""
        num_frames = hidden_states.shape[1]
        if num_frames > self.pe.shape[1]:
            raise ValueError(
                f"{num_frames} frames exceed the temporal position table ({self.pe.shape[1]})"
            )
        return hidden_states + self.pe[:, :num_frames].to(hidden_states.dtype)


def _parse_block_type(block_type: str) -> tuple[str, bool]:
    """Parse an official block type, e.g. ``"Spatial_Cross"`` -> ``("spatial", True)``."""
    try:
        mode, kind = block_type.split("_")
    except ValueError as exc:
        raise ValueError(f"unknown attention block type {block_type!r}") from exc
    if mode not in ("Temporal", "Spatial") or kind not in ("Self", "Cross"):
        raise ValueError(f"unknown attention block type {block_type!r}")
    return mode.lower(), kind == "Cross"


class VersatileAttention(Attention):
    """Attention over the spatial tokens of each frame or across frames.

    Args:
        attention_mode: ``"spatial"`` (tokens of one frame) or ``"temporal"`` (the same spatial
            location across the frames of a clip).
        query_dim: Channels of the tokens.
        cross_attention_dim: Context channels for cross-attention, ``None`` for self-attention.
        heads: Number of heads.
        dim_head: Channels per head.
        temporal_position_encoding: Add the sinusoidal table before temporal attention.
        temporal_position_encoding_max_len: Length of that table (maximum frames per forward).
    """

    def __init__(
        self,
        attention_mode: str,
        query_dim: int,
        cross_attention_dim: int | None,
        heads: int,
        dim_head: int,
        temporal_position_encoding: bool = False,
        temporal_position_encoding_max_len: int = 32,
    ) -> None:
        super().__init__(query_dim, cross_attention_dim, heads, dim_head)
        if attention_mode not in ("spatial", "temporal"):
            raise ValueError(f"unknown attention mode {attention_mode!r}")
        self.attention_mode = attention_mode
        self.pos_encoder = (
            TemporalPositionalEncoding(query_dim, temporal_position_encoding_max_len)
            if temporal_position_encoding and attention_mode == "temporal"
            else None
        )

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor | None = None,
        num_frames: int = 1,
    ) -> torch.Tensor:
        """``hidden_states`` ``((b f), L, C)``; ``context`` ``((b f), L_ctx, D)`` when cross."""
        if self.attention_mode == "spatial":
            return super().forward(hidden_states, context if self.is_cross_attention else None)
        rows, tokens, channels = hidden_states.shape
        batch = rows // num_frames
        # (b f) d c -> (b d) f c
        hidden_states = (
            hidden_states.view(batch, num_frames, tokens, channels)
            .transpose(1, 2)
            .reshape(batch * tokens, num_frames, channels)
        )
        if self.pos_encoder is not None:
            hidden_states = self.pos_encoder(hidden_states)
        hidden_states = super().forward(hidden_states)
        # (b d) f c -> (b f) d c
        return (
            hidden_states.view(batch, tokens, num_frames, channels)
            .transpose(1, 2)
            .reshape(rows, tokens, channels)
        )


class VersatileTransformerBlock(nn.Module):
    """AnimateDiff-style block: ``x += attn_k(norm_k(x))`` per attention, ``x += ff(ff_norm(x))``.

    Args:
        dim: Channels of the tokens.
        num_attention_heads: Heads per attention.
        attention_head_dim: Channels per head.
        attention_block_types: E.g. ``("Spatial_Cross", "Spatial_Cross")`` (motion modules),
            ``("Temporal_Self", "Temporal_Self")`` (temporal modules) or ``("Spatial_Self",)``
            (motion-encoder patch attention).
        cross_attention_dim: Context channels of the ``*_Cross`` attentions.
        temporal_position_encoding: Use the sinusoidal table in ``Temporal_*`` attentions.
        temporal_position_encoding_max_len: Length of that table.
    """

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        attention_block_types: Sequence[str] = ("Temporal_Self", "Temporal_Self"),
        cross_attention_dim: int | None = None,
        temporal_position_encoding: bool = False,
        temporal_position_encoding_max_len: int = 32,
    ) -> None:
        super().__init__()
        attention_blocks = []
        norms = []
        for block_type in attention_block_types:
            mode, is_cross = _parse_block_type(block_type)
            attention_blocks.append(
                VersatileAttention(
                    mode,
                    dim,
                    cross_attention_dim if is_cross else None,
                    num_attention_heads,
                    attention_head_dim,
                    temporal_position_encoding=temporal_position_encoding,
                    temporal_position_encoding_max_len=temporal_position_encoding_max_len,
                )
            )
            norms.append(nn.LayerNorm(dim))
        self.attention_blocks = nn.ModuleList(attention_blocks)
        self.norms = nn.ModuleList(norms)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        num_frames: int = 1,
    ) -> torch.Tensor:
        """``hidden_states`` ``((b f), L, C)``; ``encoder_hidden_states`` for cross-attentions."""
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            hidden_states = (
                attention(norm(hidden_states), encoder_hidden_states, num_frames) + hidden_states
            )
        return self.ff(self.ff_norm(hidden_states)) + hidden_states
