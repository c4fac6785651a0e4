"""Deterministic sinusoidal tables used by the X-NeMo networks.

Three different layouts are needed, and each must be reproduced exactly because the tables are
either stored in the released checkpoints (and must equal a freshly built module) or are
non-persistent buffers that have to be regenerated after loading:

* :func:`sincos_1d` - ``[sin(p * w_0..), cos(p * w_0..)]`` (concatenated halves); used for the
  motion-token table ``pe`` of the motion encoder.
* :func:`sincos_2d` - two 1-D tables side by side, first half encoding the column (x), second
  half the row (y); used by the motion encoder's patch attention blocks.
* :func:`interleaved_sincos` - the transformer-style table with sin on even and cos on odd
  channels; used by the temporal modules of the denoising UNet.

The first two are computed in float64 (as the original numpy code did) and returned as float32;
the interleaved one is computed in float32 because that is how the checkpoint tables were made.
"""

from __future__ import annotations

import math

import torch


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Concatenated sin/cos embedding of 1-D positions.

    Args:
        embed_dim: Output channels ``D`` (even).
        positions: Positions of shape ``(M,)`` (any real dtype).

    Returns:
        Tensor of shape ``(M, D)`` in float64: ``[sin(p * w_k), cos(p * w_k)]`` with
        ``w_k = 1 / 10000 ** (k / (D / 2))``, ``k = 0 .. D/2 - 1``.
    """
    if embed_dim % 2 != 0:
        raise ValueError(f"embed_dim must be even, got {embed_dim}")
    half = embed_dim // 2
    omega = torch.arange(half, dtype=torch.float64, device=positions.device) / half
    omega = 1.0 / 10000**omega
    angles = torch.outer(positions.reshape(-1).to(torch.float64), omega)  # (M, D/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def motion_token_table(num_tokens: int, token_dim: int) -> torch.Tensor:
    """The motion encoder's ``pe`` buffer: shape ``(1, num_tokens, token_dim)``, float32."""
    positions = torch.arange(num_tokens, dtype=torch.float64)
    return sincos_1d(token_dim, positions).to(torch.float32).unsqueeze(0)


def sincos_2d(embed_dim: int, grid_size: int) -> torch.Tensor:
    """2-D sin/cos table for a square ``grid_size x grid_size`` patch grid.

    Token ``t = row * grid_size + col``; channels ``0 .. D/2-1`` encode ``col`` and channels
    ``D/2 .. D-1`` encode ``row`` (this column-first order is what the checkpoints were trained
    with). Positions are plain integers (base size equals grid size, interpolation scale 1).

    Returns:
        Float32 tensor of shape ``(1, grid_size ** 2, embed_dim)``.
    """
    if embed_dim % 2 != 0:
        raise ValueError(f"embed_dim must be even, got {embed_dim}")
    coords = torch.arange(grid_size, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # each (G, G), row-major tokens
    emb_col = sincos_1d(embed_dim // 2, cols.reshape(-1))
    emb_row = sincos_1d(embed_dim // 2, rows.reshape(-1))
    return torch.cat([emb_col, emb_row], dim=1).to(torch.float32).unsqueeze(0)


def interleaved_sincos(max_len: int, dim: int) -> torch.Tensor:
    """Transformer-style table ``PE[p, 2i] = sin(p / 10000^(2i/D))``, ``PE[p, 2i+1] = cos(...)``.

    Computed in float32 exactly like the tables stored in the temporal-module checkpoint.

    Returns:
        Float32 tensor of shape ``(1, max_len, dim)``.
    """
    if dim % 2 != 0:
        raise ValueError(f"dim must be even, got {dim}")
    position = torch.arange(max_len).unsqueeze(1)  # (L, 1) int64, promoted below
    div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))  # (D/2,) float32
    table = torch.zeros(1, max_len, dim)
    table[0, :, 0::2] = torch.sin(position * div_term)
    table[0, :, 1::2] = torch.cos(position * div_term)
    return table
