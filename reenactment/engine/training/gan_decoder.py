"""The dual GAN decoder of X-NeMo stage 1 (training only; never part of a released model).

Why it exists (spec sec. 5): the diffusion loss weights every latent pixel equally and lets the
motion encoder get away with coarse, low-frequency motion. A second, image-level path forces the
1-D motion latent to carry subtle expressions: a StyleGAN-like decoder rebuilds the *driving
frame* from an appearance feature of the reference image plus the motion latent, trained with
reconstruction, adversarial, feature-matching and perceptual losses; the gradients flow into the
motion encoder.

Our reading of "dual" (the paper text could not be checked, see the spec): two
discriminators judge every reconstruction,

* an **image** discriminator (is this a plausible frame?), and
* a **pair** discriminator that sees ``[reference ; frame]`` stacked on channels (is this frame
  the reference person with some motion?), which penalises appearance drift introduced through
  the motion path.

Architecture (sizes for 64x64 frames):

* :class:`AppearanceEncoder` - reference image -> feature map at 1/8 resolution;
* :class:`MotionMapping` - flattened 32 x 16 motion tokens -> style vector (MLP);
* :class:`MotionDecoder` - StyleGAN2-style modulated/demodulated 3x3 convs, three 2x upsampling
  stages from the appearance map, RGB out (``tanh``);
* :class:`PatchDiscriminator` - strided convs, spectral norm, returns logits and features;
* :class:`DualDiscriminator` - the two heads above.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


class AppearanceEncoder(nn.Module):
    """Reference image ``(N, 3, S, S)`` -> feature map ``(N, C, S/8, S/8)``."""

    def __init__(self, channels: int = 96) -> None:
        super().__init__()
        c1, c2 = channels // 4, channels // 2
        self.net = nn.Sequential(
            nn.Conv2d(3, c1, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c2, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MotionMapping(nn.Module):
    """Motion tokens ``(N, L, C)`` -> style ``(N, style_dim)``."""

    def __init__(self, token_dim: int = 512, style_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(token_dim, style_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(style_dim, style_dim),
            nn.LeakyReLU(0.2),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # n l c -> n (l c)
        return self.net(tokens.flatten(1))


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated 3x3 convolution with weight demodulation (grouped-conv form)."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size * kernel_size)
        self.affine = nn.Linear(style_dim, in_ch)
        nn.init.ones_(self.affine.bias)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.affine(style)  # (N, Cin)
        weight = self.scale * self.weight[None] * s[:, None, :, None, None]  # (N, Co, Ci, k, k)
        demod = torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4)) + 1e-8)  # (N, Co)
        weight = weight * demod[:, :, None, None, None]
        out_ch = weight.shape[1]
        # Grouped convolution: one group per sample. n c h w -> 1 (n c) h w
        out = F.conv2d(
            x.reshape(1, n * c, h, w),
            weight.reshape(n * out_ch, c, *weight.shape[-2:]),
            padding=self.padding,
            groups=n,
        )
        # 1 (n co) h w -> n co h w
        return out.reshape(n, out_ch, h, w) + self.bias[None, :, None, None]


class _StyledBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, style_dim: int) -> None:
        super().__init__()
        self.conv1 = ModulatedConv2d(in_ch, out_ch, style_dim)
        self.conv2 = ModulatedConv2d(out_ch, out_ch, style_dim)
        self.to_rgb = nn.Conv2d(out_ch, 3, 1)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.leaky_relu(self.conv1(x, style), 0.2)
        x = F.leaky_relu(self.conv2(x, style), 0.2)
        return x, self.to_rgb(x)


class MotionDecoder(nn.Module):
    """Appearance feature map + motion latent -> frame ``(N, 3, S, S)`` in ``[-1, 1]``.

    Args:
        token_dim: Flattened motion-token width (32 x 16 = 512).
        appearance_channels: Channels of the appearance map.
        channels: Channels of the three upsampling stages.
        style_dim: Width of the style vector.
    """

    def __init__(
        self,
        token_dim: int = 512,
        appearance_channels: int = 96,
        channels: tuple[int, int, int] = (96, 64, 32),
        style_dim: int = 128,
    ) -> None:
        super().__init__()
        self.appearance = AppearanceEncoder(appearance_channels)
        self.mapping = MotionMapping(token_dim, style_dim)
        self.head = _StyledBlock(appearance_channels, channels[0], style_dim)
        self.blocks = nn.ModuleList(
            [
                _StyledBlock(channels[0], channels[1], style_dim),
                _StyledBlock(channels[1], channels[2], style_dim),
                _StyledBlock(channels[2], channels[2], style_dim),
            ]
        )

    def forward(self, reference: torch.Tensor, motion_tokens: torch.Tensor) -> torch.Tensor:
        """``reference`` ``(N, 3, S, S)``, ``motion_tokens`` ``(N, 32, 16)``."""
        style = self.mapping(motion_tokens)
        x, rgb = self.head(self.appearance(reference), style)
        for block in self.blocks:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x, new_rgb = block(x, style)
            # Skip-RGB accumulation as in StyleGAN2's "skip" generator.
            rgb = F.interpolate(rgb, scale_factor=2.0, mode="bilinear", align_corners=False)
            rgb = rgb + new_rgb
        return torch.tanh(rgb)


class PatchDiscriminator(nn.Module):
    """Spectral-normalised patch discriminator returning ``(logits, features)``."""

    def __init__(self, in_channels: int = 3, channels: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        layers = []
        prev = in_channels
        for ch in channels:
            layers.append(spectral_norm(nn.Conv2d(prev, ch, 4, stride=2, padding=1)))
            prev = ch
        self.layers = nn.ModuleList(layers)
        self.out = spectral_norm(nn.Conv2d(prev, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.out(x), features


class DualDiscriminator(nn.Module):
    """The image head and the reference-conditioned pair head."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        self.image = PatchDiscriminator(3, channels)
        self.pair = PatchDiscriminator(6, channels)

    def forward(
        self, frame: torch.Tensor, reference: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """Logits and features of both heads for frames ``(N, 3, S, S)``."""
        image_logits, image_features = self.image(frame)
        pair_logits, pair_features = self.pair(torch.cat([reference, frame], dim=1))
        return [image_logits, pair_logits], [image_features, pair_features]


__all__ = [
    "AppearanceEncoder",
    "DualDiscriminator",
    "ModulatedConv2d",
    "MotionDecoder",
    "MotionMapping",
    "PatchDiscriminator",
]
