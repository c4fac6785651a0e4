"""Training losses: the diffusion objective and the GAN-decoder losses.

* :func:`diffusion_loss` - MSE between predicted and true noise (epsilon prediction, the
  release's ``prediction_type``).
* :func:`reconstruction_loss` - L1 on pixels.
* :func:`hinge_discriminator_loss` / :func:`hinge_generator_loss` - hinge GAN losses over any
  number of discriminator heads.
* :func:`feature_matching_loss` - L1 between discriminator features of real and fake images.
* :class:`RandomFeaturePerceptualLoss` - the perceptual term. X-NeMo uses a VGG perceptual
  loss; nothing is ever downloaded here, so VGG weights are not available. Instead a fixed,
  randomly initialised (seeded, frozen) multi-scale conv network provides the features: random
  conv features are known to preserve local structure and edges well enough to act as a
  perceptual proxy, and, unlike a network trained on some other data, they carry no licence.
  The weights are regenerated from the seed, so they are never saved.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def diffusion_loss(noise_pred: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the noise prediction (computed in float32)."""
    return F.mse_loss(noise_pred.float(), noise.float())


def reconstruction_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean absolute error on pixels."""
    return F.l1_loss(fake.float(), real.float())


def hinge_discriminator_loss(
    real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]
) -> torch.Tensor:
    """``sum_heads mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``."""
    loss = torch.zeros((), device=real_logits[0].device)
    for real, fake in zip(real_logits, fake_logits, strict=True):
        loss = loss + F.relu(1.0 - real.float()).mean() + F.relu(1.0 + fake.float()).mean()
    return loss


def hinge_generator_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_heads -mean(D(fake))``."""
    loss = fake_logits[0].new_zeros((), dtype=torch.float32)
    for logits in fake_logits:
        loss = loss - logits.float().mean()
    return loss


def feature_matching_loss(
    real_features: Sequence[Sequence[torch.Tensor]],
    fake_features: Sequence[Sequence[torch.Tensor]],
) -> torch.Tensor:
    """Mean L1 between discriminator features (real features detached), averaged per head."""
    total = fake_features[0][0].new_zeros((), dtype=torch.float32)
    for real_head, fake_head in zip(real_features, fake_features, strict=True):
        head = total.new_zeros(())
        for real, fake in zip(real_head, fake_head, strict=True):
            head = head + F.l1_loss(fake.float(), real.detach().float())
        total = total + head / max(len(real_head), 1)
    return total


class RandomFeaturePerceptualLoss(nn.Module):
    """L1 distance between features of a frozen random conv network (seeded).

    Four stages (3x3 conv, LeakyReLU, 2x average pool), orthogonal initialisation; the features of
    each stage are compared after per-channel normalisation, equally weighted.

    Args:
        channels: Channels of the stages.
        seed: Seed of the random weights (part of the loss definition).
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 96, 128), seed: int = 1234) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        layers = []
        prev = 3
        for ch in channels:
            conv = nn.Conv2d(prev, ch, 3, padding=1)
            weight = torch.empty(ch, prev * 9)
            # Orthogonal rows (or columns) keep feature scales comparable across stages.
            rows, cols = max(ch, prev * 9), min(ch, prev * 9)
            q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=generator))
            weight.copy_(q[:ch, : prev * 9] if ch >= prev * 9 else q[: prev * 9, :ch].T)
            conv.weight.data.copy_(weight.view(ch, prev, 3, 3) * (2.0**0.5))
            conv.bias.data.zero_()
            layers.append(conv)
            prev = ch
        self.convs = nn.ModuleList(layers)
        self.requires_grad_(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
            x = F.avg_pool2d(x, 2)
        return feats

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, H, W)`` in ``[-1, 1]``; returns a scalar."""
        loss = torch.zeros((), device=fake.device)
        fake_feats = self._features(fake.float())
        with torch.no_grad():
            real_feats = self._features(real.float())
        for f, r in zip(fake_feats, real_feats, strict=True):
            scale = r.std(dim=(0, 2, 3), keepdim=True) + 1e-4
            loss = loss + F.l1_loss(f / scale, r / scale)
        return loss / len(self.convs)


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL divergence of a diagonal Gaussian to N(0, I), averaged over elements."""
    return 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).mean()


__all__ = [
    "RandomFeaturePerceptualLoss",
    "diffusion_loss",
    "feature_matching_loss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "kl_loss",
    "reconstruction_loss",
]
