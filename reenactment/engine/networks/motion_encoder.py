"""X-NeMo motion encoder: face crop + box parameters -> 32 motion tokens of 16 channels.

Backbone: a FAN-style (face-alignment network) trunk with one hourglass, extended with three patch
self-attention blocks (``att_1`` after the first ConvBlock at 112x112, ``att_2`` after the
trunk at 56x56, ``att_3`` after the hourglass head), ending in a 68-channel heat-map head, a
stride-2 convolution to one 28x28 map and a Linear 784 -> 512 ("expression" feature).

Head: the 512-d feature is concatenated with an MLP embedding of the box parameters
``(dy, dx, scale)``, projected back to 512, cut into 32 tokens of 16 channels and offset by a
fixed sin/cos table ``pe``.

The input size is fixed at 3x224x224 (the final Linear consumes a 28x28 map). BatchNorms must run
in eval mode at inference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .attention import VersatileTransformerBlock
from .checkpointing import CheckpointedModule
from .positional import motion_token_table, sincos_2d

EXPRESSION_DIM = 512
INPUT_SIZE = 224


class ConvBlock(nn.Module):
    """Pre-activation residual block of FAN: three 3x3 convs whose outputs are concatenated.

    ``out = cat(c1, c2, c3) + shortcut`` with ``c1 = conv1(relu(bn1(x)))`` (Co/2 channels),
    ``c2 = conv2(relu(bn2(c1)))`` (Co/4) and ``c3 = conv3(relu(bn3(c2)))`` (Co/4); the shortcut is
    BN -> ReLU -> 1x1 conv when the channel count changes.

    Args:
        in_planes: Input channels.
        out_planes: Output channels.
    """

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        half, quarter = out_planes // 2, out_planes // 4
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, half, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, quarter, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = nn.Conv2d(quarter, quarter, kernel_size=3, padding=1, bias=False)
        self.downsample = (
            nn.Sequential(
                nn.BatchNorm2d(in_planes),
                nn.ReLU(),
                nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False),
            )
            if in_planes != out_planes
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat([out1, out2, out3], dim=1) + residual


class HourGlass(nn.Module):
    """FAN hourglass of a given depth over 256 channels.

    Level ``L``: ``up = b1_L(x)``; ``low = b2_L(maxpool2(x))``; ``low = level L-1 (low)`` or
    ``b2_plus_1(low)`` at the bottom; ``low = b3_L(low)``; ``out = up + bilinear(low -> up size)``.
    Module names (``b1_4``, ``b2_plus_1``, ...) are part of the checkpoint layout.

    Args:
        depth: Number of levels (4 in X-NeMo).
        num_features: Channels (256).
    """

    def __init__(self, depth: int = 4, num_features: int = 256) -> None:
        super().__init__()
        self.depth = depth
        # Dropout (inactive in eval) kept for behavioural parity in training mode.
        self.dropout = nn.Dropout(0.5)
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(num_features, num_features))
            self.add_module(f"b2_{level}", ConvBlock(num_features, num_features))
            if level == 1:
                self.add_module("b2_plus_1", ConvBlock(num_features, num_features))
        for level in range(1, depth + 1):
            self.add_module(f"b3_{level}", ConvBlock(num_features, num_features))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        up = self.dropout(self.get_submodule(f"b1_{level}")(x))
        low = self.get_submodule(f"b2_{level}")(F.max_pool2d(x, 2, stride=2))
        if level > 1:
            low = self._level(level - 1, low)
        else:
            low = self.get_submodule("b2_plus_1")(low)
        low = self.get_submodule(f"b3_{level}")(low)
        return up + F.interpolate(low, size=up.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class PatchEmbed(nn.Module):
    """Non-overlapping ``p x p`` patch projection plus a fixed 2-D sin/cos table.

    The table ``pos_embed`` ``(1, G*G, D)`` is a non-persistent buffer (it is not in the
    checkpoint) and is rebuilt by :meth:`reset_table`; it is owned here rather than borrowed from
    diffusers so that its exact layout cannot change under us.

    Args:
        sample_size: Input height/width.
        patch_size: Patch side ``p``.
        in_channels: Input channels.
        embed_dim: Token width ``D``.
    """

    pos_embed: torch.Tensor

    def __init__(self, sample_size: int, patch_size: int, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.grid_size = sample_size // patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.register_buffer("pos_embed", sincos_2d(embed_dim, self.grid_size), persistent=False)

    def reset_table(self, device: torch.device | None = None) -> None:
        """Recompute ``pos_embed`` (e.g. after loading a model built on the meta device)."""
        if device is None:
            device = self.proj.weight.device
        self.pos_embed = sincos_2d(self.proj.out_channels, self.grid_size).to(
            device=device, dtype=self.proj.weight.dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> tokens ``(N, (H/p)*(W/p), D)`` in row-major grid order."""
        tokens = self.proj(x)
        if tokens.shape[-2:] != (self.grid_size, self.grid_size):
            raise ValueError(f"expected a {self.grid_size}x{self.grid_size} patch grid")
        # n d gh gw -> n (gh gw) d
        tokens = tokens.flatten(2).transpose(1, 2)
        return tokens + self.pos_embed.to(tokens.dtype)


class PatchSelfAttention(nn.Module):
    """Patch self-attention block with a residual (``att_1`` / ``att_2`` / ``att_3``).

    ``x_n = GroupNorm(x)``; tokens = patch embedding of ``x_n``; one pre-LN transformer block
    (8 heads x 128, GEGLU); un-patchify: each token of grid cell (h, w) is read as a
    ``(p, p, D / p^2)`` array, ``proj_out`` maps the last axis to C and pixel
    ``(h*p + i, w*p + j)`` receives entry ``(i, j)``; finally add ``x``.

    Args:
        in_channels: Channels ``C`` of the feature map.
        sample_size: Height/width of the feature map.
        patch_size: Patch side ``p``.
        num_attention_heads: Heads.
        attention_head_dim: Channels per head.
        norm_num_groups: GroupNorm groups.
    """

    def __init__(
        self,
        in_channels: int,
        sample_size: int,
        patch_size: int,
        num_attention_heads: int = 8,
        attention_head_dim: int = 128,
        norm_num_groups: int = 32,
    ) -> None:
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        self.patch_size = patch_size
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6, affine=True)
        self.pos_embed = PatchEmbed(sample_size, patch_size, in_channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            [
                VersatileTransformerBlock(
                    inner_dim,
                    num_attention_heads,
                    attention_head_dim,
                    attention_block_types=("Spatial_Self",),
                )
            ]
        )
        self.proj_out = nn.Linear(inner_dim // patch_size**2, in_channels)
        # Zero-initialised so that a fresh block is the identity.
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape."""
        batch, channels, height, width = x.shape
        p = self.patch_size
        grid_h, grid_w = height // p, width // p
        tokens = self.pos_embed(self.norm(x))
        for block in self.transformer_blocks:
            tokens = block(tokens)
        # n (gh gw) (p q c) -> n gh gw p q c
        tokens = tokens.reshape(batch, grid_h, grid_w, p, p, -1)
        tokens = self.proj_out(tokens)
        # n gh gw p q c -> n c (gh p) (gw q)
        out = tokens.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, height, width)
        return out + x


class FANSelfAttentionBackbone(CheckpointedModule):
    """FAN trunk with three patch self-attention blocks: ``(N, 3, 224, 224)`` -> ``(N, 512)``.

    Attribute names (``conv1`` ... ``m0``, ``top_m_0``, ``conv_last0``, ``bn_end0``, ``l0``,
    ``bn5``, ``conv6``, ``fc``, ``att_1..3``) follow the checkpoint layout. With gradient
    checkpointing enabled, the three attention blocks (the memory-heavy part: 784 tokens x 1024) are
    recomputed in backward; BatchNorm layers are not checkpointed, because a recomputation in
    training mode would update their running statistics twice.

    Args:
        channels: Trunk widths ``(c0, c1, c2)``: stem, first ConvBlock (``att_1``), and the
            hourglass level (``att_2``/``att_3``). Official: ``(64, 128, 256)``.
        num_landmarks: Channels of the heat-map head (68 facial landmarks in FAN).
        attention_heads: Heads of the patch attentions (8).
        attention_head_dim: Channels per head (128); ``heads * head_dim`` must be divisible by
            16 (the 4x4 patches of ``att_1``).
        attention_norm_groups: GroupNorm groups of the patch attentions (32).

    Only the defaults match the released checkpoint; smaller values give the seeded demo model
    (:mod:`reenactment.engine.demo_model`) a CPU-fast encoder with the same structure.
    """

    def __init__(
        self,
        channels: tuple[int, int, int] = (64, 128, 256),
        num_landmarks: int = 68,
        attention_heads: int = 8,
        attention_head_dim: int = 128,
        attention_norm_groups: int = 32,
    ) -> None:
        super().__init__()
        c0, c1, c2 = channels
        attention = {
            "num_attention_heads": attention_heads,
            "attention_head_dim": attention_head_dim,
            "norm_num_groups": attention_norm_groups,
        }
        self.conv1 = nn.Conv2d(3, c0, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(c0)
        self.conv2 = ConvBlock(c0, c1)
        self.conv3 = ConvBlock(c1, c1)
        self.conv4 = ConvBlock(c1, c2)
        self.m0 = HourGlass(depth=4, num_features=c2)
        self.top_m_0 = ConvBlock(c2, c2)
        self.conv_last0 = nn.Conv2d(c2, c2, kernel_size=1)
        self.l0 = nn.Conv2d(c2, num_landmarks, kernel_size=1)
        self.bn_end0 = nn.BatchNorm2d(c2)
        self.conv6 = nn.Conv2d(num_landmarks, 1, kernel_size=3, stride=2, padding=1)
        self.fc = nn.Linear(28 * 28, EXPRESSION_DIM)
        self.bn5 = nn.BatchNorm2d(num_landmarks)
        self.att_1 = PatchSelfAttention(c1, sample_size=112, patch_size=4, **attention)
        self.att_2 = PatchSelfAttention(c2, sample_size=56, patch_size=2, **attention)
        self.att_3 = PatchSelfAttention(c2, sample_size=56, patch_size=2, **attention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = self.run_checkpointed
        x = F.relu(self.bn1(self.conv1(x)))  # (N, c0, 112, 112); c0 = 64 officially
        x = run(self.att_1, self.conv2(x))  # (N, c1, 112, 112); c1 = 128
        x = F.max_pool2d(x, 2)  # (N, c1, 56, 56)
        x = run(self.att_2, self.conv4(self.conv3(x)))  # (N, c2, 56, 56); c2 = 256
        x = self.top_m_0(self.m0(x))
        x = run(self.att_3, self.bn_end0(self.conv_last0(x)))  # (N, c2, 56, 56)
        x = F.relu(self.bn5(self.l0(F.relu(x))))  # (N, 68, 56, 56) heat-map head (68 landmarks)
        x = self.conv6(x)  # (N, 1, 28, 28)
        # n 1 h w -> n (h w)
        x = F.relu(x.flatten(1))
        return self.fc(x)


class MotionEncoder(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """Face crops and box parameters -> motion tokens for the denoising UNet.

    Args:
        extra_feat_dim: Box-parameter width (``dy, dx, scale`` = 3).
        out_ch: Channels per motion token (16); the 512-d code is cut into ``512 / out_ch``
            tokens.
        backbone_channels: Trunk widths of :class:`FANSelfAttentionBackbone` (official
            ``(64, 128, 256)``).
        num_landmarks: Heat-map channels of the backbone head (68).
        attention_heads: Heads of the backbone's patch attentions (8).
        attention_head_dim: Channels per head of those attentions (128).
        attention_norm_groups: GroupNorm groups of those attentions (32).

    Only the defaults fit the released ``xnemo_motion_encoder.pth``; the other values exist for
    small seeded test/demo models.
    """

    _supports_gradient_checkpointing = True
    pe: torch.Tensor

    @register_to_config
    def __init__(
        self,
        extra_feat_dim: int = 3,
        out_ch: int = 16,
        backbone_channels: tuple[int, int, int] = (64, 128, 256),
        num_landmarks: int = 68,
        attention_heads: int = 8,
        attention_head_dim: int = 128,
        attention_norm_groups: int = 32,
    ) -> None:
        super().__init__()
        if EXPRESSION_DIM % out_ch != 0:
            raise ValueError(f"out_ch must divide {EXPRESSION_DIM}, got {out_ch}")
        self.model = FANSelfAttentionBackbone(
            channels=tuple(backbone_channels),  # type: ignore[arg-type]  # JSON gives lists
            num_landmarks=num_landmarks,
            attention_heads=attention_heads,
            attention_head_dim=attention_head_dim,
            attention_norm_groups=attention_norm_groups,
        )
        add_motion_head(
            self, extra_feat_dim=extra_feat_dim, out_ch=out_ch, expression_dim=EXPRESSION_DIM
        )

    @property
    def num_tokens(self) -> int:
        """Motion tokens per image (32)."""
        return EXPRESSION_DIM // self.config["out_ch"]

    def reset_tables(self) -> None:
        """Regenerate the non-persistent patch tables (after building on the meta device)."""
        for module in self.modules():
            if isinstance(module, PatchEmbed):
                module.reset_table()

    def encode_face_motion(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone feature before box fusion.

        Args:
            images: ``(N, 3, 224, 224)`` in [-1, 1], or a clip ``(B, 3, F, 224, 224)``.

        Returns:
            ``(N, 512)``, or ``(B, F, 512)`` for a clip.
        """
        if images.ndim == 5:
            batch, channels, frames, height, width = images.shape
            # b c f h w -> (b f) c h w
            flat = images.transpose(1, 2).reshape(batch * frames, channels, height, width)
            # (b f) d -> b f d
            return self.model(flat).reshape(batch, frames, -1)
        return self.model(images)

    def forward(self, images: torch.Tensor, bbox_params: torch.Tensor) -> torch.Tensor:
        """Encode face crops into motion tokens.

        Args:
            images: Face crops ``(N, 3, 224, 224)`` or a clip ``(B, 3, F, 224, 224)``, in [-1, 1].
            bbox_params: ``(N, 3)`` for images; ``(B, F, 3)`` (or ``(B, 3)`` shared by every
                frame) for clips. Order ``(dy, dx, scale)``; the official inference uses
                ``(0, 0, 1)``.

        Returns:
            ``(N, 32, 16)`` for images, ``(B, F, 32, 16)`` for clips.
        """
        return motion_tokens(self, images, bbox_params, self.model)


def add_motion_head(
    encoder: nn.Module, *, extra_feat_dim: int, out_ch: int, expression_dim: int
) -> None:
    """Give ``encoder`` the official motion head: the ``pe`` token table, ``bbox_proj`` and
    ``final_proj`` (names and shapes as in the released checkpoint; shared by both encoders)."""
    encoder.register_buffer(
        "pe", motion_token_table(expression_dim // out_ch, out_ch), persistent=True
    )
    encoder.bbox_proj = nn.Sequential(
        nn.Linear(extra_feat_dim, 64),
        nn.ReLU(),
        nn.Identity(),  # index 2 is kept empty so that `bbox_proj.3` matches the checkpoint
        nn.Linear(64, 64),
    )
    encoder.final_proj = nn.Linear(expression_dim + 64, expression_dim)


def motion_tokens(
    encoder: nn.Module,
    images: torch.Tensor,
    bbox_params: torch.Tensor,
    backbone: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The official motion head around any backbone (shared by both motion encoders).

    ``backbone`` maps ``(N, 3, S, S)`` crops to ``(N, expression_dim)`` features; ``encoder``
    holds ``bbox_proj``, ``final_proj``, the ``pe`` table and ``config["out_ch"]``. Shapes as in
    :meth:`MotionEncoder.forward`.
    """
    if images.ndim == 5:
        batch, channels, frames, height, width = images.shape
        # b c f h w -> (b f) c h w
        flat_images = images.transpose(1, 2).reshape(batch * frames, channels, height, width)
        if bbox_params.ndim == 2:
            # b c -> b f c : one box for the whole clip.
            bbox_params = bbox_params[:, None].expand(batch, frames, bbox_params.shape[-1])
        # b f c -> (b f) c
        flat_params = bbox_params.reshape(batch * frames, -1)
    elif images.ndim == 4:
        flat_images, flat_params = images, bbox_params
    else:
        raise ValueError(f"expected 4-D or 5-D face crops, got shape {tuple(images.shape)}")

    features = backbone(flat_images)  # (N, 512)
    code = encoder.final_proj(torch.cat([features, encoder.bbox_proj(flat_params)], dim=1))
    # n (l c) -> n l c : token l is channels l*c .. l*c + c - 1
    out_ch = int(encoder.config["out_ch"])
    tokens = code.reshape(code.shape[0], -1, out_ch) + encoder.pe.to(code.dtype)
    if images.ndim == 5:
        # (b f) l c -> b f l c
        tokens = tokens.reshape(batch, frames, *tokens.shape[1:])
    return tokens
