"""Sample media for demos and tests.

Two sets, one per kind of demo model:

* **Photographs** (scikit-image's bundled ones), for the tests and for the tiny demonstration
  network: the astronaut is the portrait; the cameraman is the driving performer. His face is
  small in the original (about 80 px), below what face detectors find reliably, so it is cut out
  and enlarged; the driving clip moves it with a slow, small sway, nod and tilt.
* **SynthFace characters**, for the SynthFace preview model, which has only ever seen SynthFace
  renders: :func:`synthface_demo_portrait` (identity A, neutral pose),
  :func:`synthface_demo_performer_face` (identity B, neutral pose, the performer's enrolment
  photo) and :func:`synthface_demo_driving_frames` (B talking and moving his head). The two
  identities were picked so that the platform's dlib face recogniser finds every face and tells
  them apart best among the first SynthFace seeds (same identity across poses ~0.7 similarity,
  A vs B ~0.5): on cartoon faces it separates identities far less well than on photographs.
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


#: SynthFace identity seeds of the demo characters (see the module docstring).
SYNTHFACE_PORTRAIT_SEED = 1
SYNTHFACE_PERFORMER_SEED = 8
SYNTHFACE_MOTION_SEED = 4


def synthface_demo_portrait(size: int = 512) -> np.ndarray:
    """SynthFace identity A, neutral pose (RGB uint8, ``size`` x ``size``)."""
    from .synthface import IdentityParams, MotionParams, render_frame

    return render_frame(IdentityParams.sample(SYNTHFACE_PORTRAIT_SEED), MotionParams(), size)


def synthface_demo_performer_face(size: int = 256) -> np.ndarray:
    """SynthFace identity B, neutral pose: the performer's enrolment photo."""
    from .synthface import IdentityParams, MotionParams, render_frame

    return render_frame(IdentityParams.sample(SYNTHFACE_PERFORMER_SEED), MotionParams(), size)


def synthface_demo_driving_frames(count: int = 48, size: int = 256) -> list[np.ndarray]:
    """``count`` frames of identity B talking with lively head motion (deterministic)."""
    from .synthface import IdentityParams, MotionTrack, render_clip

    track = MotionTrack.random(count, SYNTHFACE_MOTION_SEED, liveliness=0.8, talking=True)
    clip = render_clip(IdentityParams.sample(SYNTHFACE_PERFORMER_SEED), track, size)
    return list(clip)
