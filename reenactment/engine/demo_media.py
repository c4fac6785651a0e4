"""Sample media for demos and tests, made from scikit-image's bundled photographs.

The astronaut is the demo portrait; the cameraman is the demo driving performer. His face is
small in the original (about 80 px), below what face detectors find reliably, so it is cut out
and enlarged; the driving clip moves it with a slow, small sway, nod and tilt.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def demo_portrait() -> np.ndarray:
    """The astronaut photo (RGB uint8, 512x512)."""
    from skimage import data

    return np.asarray(data.astronaut())


def demo_performer_face(size: int = 256) -> np.ndarray:
    """The cameraman's face cut out and enlarged (RGB uint8, ``size`` x ``size``)."""
    from skimage import data

    camera = np.stack([data.camera()] * 3, axis=-1)
    crop = camera[60:252, 124:316]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BICUBIC))


def demo_driving_frames(count: int = 48, size: int = 256) -> list[np.ndarray]:
    """``count`` frames of the performer's face with small natural head motion."""
    face = Image.fromarray(demo_performer_face(size))
    half = size / 2
    frames = []
    for i in range(count):
        dx, dy = 6 * np.sin(i / 6), 3 * np.sin(i / 9)
        angle = np.deg2rad(3 * np.sin(i / 7))
        c, s = np.cos(angle), np.sin(angle)
        # Rotate about the centre, then translate (PIL maps output to input coordinates).
        matrix = (c, -s, half - half * c + half * s + dx, s, c, half - half * s - half * c + dy)
        moved = face.transform(
            (size, size), Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR
        )
        frames.append(np.asarray(moved))
    return frames
