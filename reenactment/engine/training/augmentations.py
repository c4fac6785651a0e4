"""Augmentations of the driving frames (X-NeMo spec sec. 5): they keep the motion and scramble
identity cues, so the motion encoder cannot smuggle appearance into its 1-D latent.

Every function takes images ``(N, 3, H, W)`` in ``[-1, 1]`` and an explicit
:class:`torch.Generator`; the output has the same shape, and the same generator state gives the
same result. Geometric transforms resample with :func:`torch.nn.functional.grid_sample`
(bilinear, border padding).

* :func:`colour_jitter` - brightness, contrast, saturation and hue (YIQ rotation).
* :func:`random_scale` - zoom about the image centre by a factor in ``[1 - d, 1 + d]``.
* :func:`piecewise_affine_warp` - random displacements of a coarse control grid, each grid cell
  split into two triangles and warped affinely inside each (a true piecewise-affine map).
* :func:`face_centred_crop` - a square around the face box, of random context and small jitter,
  resampled to the input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# RGB <-> YIQ (NTSC); hue is a rotation of the (I, Q) plane.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _uniform(
    n: int, low: float, high: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator).to(device)


def colour_jitter(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    brightness: float = 0.3,
    contrast: float = 0.3,
    saturation: float = 0.3,
    hue: float = 0.08,
) -> torch.Tensor:
    """Per-image random brightness/contrast/saturation and hue rotation (fraction of 2 pi)."""
    n, device = images.shape[0], images.device
    x = (images.float() + 1.0) / 2.0  # [0, 1]
    b = _uniform(n, 1 - brightness, 1 + brightness, generator, device)
    c = _uniform(n, 1 - contrast, 1 + contrast, generator, device)
    s = _uniform(n, 1 - saturation, 1 + saturation, generator, device)
    h = _uniform(n, -hue, hue, generator, device) * 2 * torch.pi
    x = x * b[:, None, None, None]
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]  # (N, 1, H, W)
    mean = grey.mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * c[:, None, None, None] + mean
    grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = (x - grey) * s[:, None, None, None] + grey
    # Hue: rotate (I, Q) by h. rot (N, 3, 3) acting on YIQ.
    cos, sin = torch.cos(h), torch.sin(h)
    rot = torch.zeros(n, 3, 3, device=device)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    to_yiq, to_rgb = _RGB_TO_YIQ.to(device), _YIQ_TO_RGB.to(device)
    mix = to_rgb @ rot @ to_yiq  # (N, 3, 3)
    # n c h w -> n h w c, apply the per-image colour matrix, back to n c h w.
    x = torch.einsum("nij,njhw->nihw", mix, x)
    return (x.clamp(0.0, 1.0) * 2.0 - 1.0).to(images.dtype)


def _sample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    out = F.grid_sample(
        images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.to(images.dtype)


def _base_grid(n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """Identity sampling grid ``(N, H, W, 2)`` in normalised ``(x, y)`` (align_corners False)."""
    theta = torch.eye(2, 3, device=device).expand(n, 2, 3)
    return F.affine_grid(theta, [n, 3, height, width], align_corners=False)


def random_scale(
    images: torch.Tensor, generator: torch.Generator, *, max_delta: float = 0.3
) -> torch.Tensor:
    """Zoom about the centre by ``s`` in ``[1 - max_delta, 1 + max_delta]`` (s > 1 enlarges)."""
    n, _, height, width = images.shape
    scale = _uniform(n, 1 - max_delta, 1 + max_delta, generator, images.device)
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, 0, 0] = 1.0 / scale
    theta[:, 1, 1] = 1.0 / scale
    grid = F.affine_grid(theta, [n, 3, height, width], align_corners=False)
    return _sample(images, grid)


def piecewise_affine_warp(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    grid_cells: int = 4,
    magnitude: float = 0.06,
) -> torch.Tensor:
    """Random piecewise-affine warp on a ``grid_cells x grid_cells`` triangulated mesh.

    The ``(cells + 1)^2`` control points are displaced by up to ``magnitude`` (in normalised
    ``[-1, 1]`` units, border points only along the border); every cell is split along its
    diagonal and each triangle is mapped affinely (barycentric interpolation of its corners'
    displacements), which is continuous across cell and triangle edges.
    """
    n, _, height, width = images.shape
    device = images.device
    g = grid_cells
    disp = (torch.rand(n, g + 1, g + 1, 2, generator=generator).to(device) * 2 - 1) * magnitude
    # Keep the frame's outline in place: border points slide along the border only.
    disp[:, 0, :, 1] = 0.0
    disp[:, g, :, 1] = 0.0
    disp[:, :, 0, 0] = 0.0
    disp[:, :, g, 0] = 0.0
    base = _base_grid(n, height, width, device)  # (N, H, W, 2) x, y in [-1, 1]
    # Cell coordinates of each pixel: p in [0, g].
    px = ((base[..., 0] + 1) / 2 * g).clamp(0, g - 1e-4)
    py = ((base[..., 1] + 1) / 2 * g).clamp(0, g - 1e-4)
    ix, iy = px.floor().long(), py.floor().long()
    u, v = (px - ix)[..., None], (py - iy)[..., None]  # (N, H, W, 1) in [0, 1)
    batch = torch.arange(n, device=device)[:, None, None]

    def corner(dy: int, dx: int) -> torch.Tensor:
        return disp[batch, iy + dy, ix + dx]  # (N, H, W, 2)

    d00, d01, d10, d11 = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
    # Triangle (00, 01, 10) when u + v <= 1, else (11, 10, 01).
    lower = d00 + u * (d01 - d00) + v * (d10 - d00)
    upper = d11 + (1 - u) * (d10 - d11) + (1 - v) * (d01 - d11)
    offset = torch.where(u + v <= 1, lower, upper)
    return _sample(images, base + offset)


def default_face_boxes(
    n: int, height: int, width: int, fraction: float = 0.55, device: torch.device | None = None
) -> torch.Tensor:
    """Centred square boxes ``(N, 4)`` ``[x0, y0, x1, y1]`` of side ``fraction * min(H, W)``."""
    side = fraction * min(height, width)
    cx, cy = width / 2, height / 2
    box = torch.tensor([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
    return box.to(device).expand(n, 4).clone()


def face_centred_crop(
    images: torch.Tensor,
    boxes: torch.Tensor,
    generator: torch.Generator,
    *,
    context: tuple[float, float] = (1.3, 1.9),
    jitter: float = 0.05,
) -> torch.Tensor:
    """Crop a square around each face box and resample it to the input size.

    Args:
        images: ``(N, 3, H, W)``.
        boxes: ``(N, 4)`` face boxes ``[x0, y0, x1, y1]`` in pixels.
        generator: Randomness source.
        context: Range of the crop side relative to ``max(box width, box height)``.
        jitter: Random shift of the crop centre, relative to the crop side.
    """
    n, _, height, width = images.shape
    device = images.device
    boxes = boxes.to(device=device, dtype=torch.float32)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    side = side * _uniform(n, context[0], context[1], generator, device)
    cx = cx + side * _uniform(n, -jitter, jitter, generator, device)
    cy = cy + side * _uniform(n, -jitter, jitter, generator, device)
    # Pixel crop -> normalised affine: x_src = (cx / W * 2 - 1) + (side / W) * x_out.
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = side / width
    theta[:, 0, 2] = cx / width * 2 - 1
    theta[:, 1, 1] = side / height
    theta[:, 1, 2] = cy / height * 2 - 1
    grid = F.affine_grid(theta, [n, 3, height, width], align_corners=False)
    return _sample(images, grid)


@dataclass(frozen=True)
class AugmentationConfig:
    """Probabilities and strengths of the driving-frame augmentations.

    Args:
        colour_jitter: Probability of :func:`colour_jitter` per image.
        scale: Probability of :func:`random_scale`.
        scale_delta: ``d`` of the scale range ``[1 - d, 1 + d]`` (0.3 in X-NeMo).
        warp: Probability of :func:`piecewise_affine_warp`.
        warp_cells: Control-grid cells per side.
        warp_magnitude: Maximum control-point displacement (normalised units).
        face_crop: Probability of :func:`face_centred_crop`.
        face_crop_context: Crop side range relative to the face box.
    """

    colour_jitter: float = 0.8
    scale: float = 0.5
    scale_delta: float = 0.3
    warp: float = 0.5
    warp_cells: int = 4
    warp_magnitude: float = 0.06
    face_crop: float = 0.3
    face_crop_context: tuple[float, float] = (1.3, 1.9)


class DrivingAugmentation:
    """Applies the configured augmentations, each to a random subset of the images.

    Args:
        config: Probabilities and strengths.
    """

    def __init__(self, config: AugmentationConfig | None = None) -> None:
        self.config = config or AugmentationConfig()

    def _subset(self, n: int, p: float, generator: torch.Generator) -> torch.Tensor:
        return torch.nonzero(torch.rand(n, generator=generator) < p).flatten()

    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator,
        boxes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(N, 3, H, W)`` -> augmented copy of the same shape."""
        cfg = self.config
        n, _, height, width = images.shape
        out = images.clone()
        steps: Sequence[tuple[float, str]] = (
            (cfg.face_crop, "crop"),
            (cfg.scale, "scale"),
            (cfg.warp, "warp"),
            (cfg.colour_jitter, "colour"),
        )
        for probability, name in steps:
            # Always draw the subset (even when p == 0) so the stream does not depend on p.
            idx = self._subset(n, probability, generator).to(images.device)
            if idx.numel() == 0:
                continue
            part = out[idx]
            if name == "crop":
                part_boxes = (
                    boxes[idx.cpu()]
                    if boxes is not None
                    else default_face_boxes(idx.numel(), height, width, device=images.device)
                )
                part = face_centred_crop(part, part_boxes, generator, context=cfg.face_crop_context)
            elif name == "scale":
                part = random_scale(part, generator, max_delta=cfg.scale_delta)
            elif name == "warp":
                part = piecewise_affine_warp(
                    part, generator, grid_cells=cfg.warp_cells, magnitude=cfg.warp_magnitude
                )
            else:
                part = colour_jitter(part, generator)
            out[idx] = part
        return out


__all__ = [
    "AugmentationConfig",
    "DrivingAugmentation",
    "colour_jitter",
    "default_face_boxes",
    "face_centred_crop",
    "piecewise_affine_warp",
    "random_scale",
]
