"""SynthFace: a procedural talking-face generator with exact ground truth.

Identity and motion are separate parameter sets, so "identity A performing the motion of B"
is simply A rendered with B's motion parameters: an exact cross-reenactment ground truth.
Everything is deterministic from a seed, pure numpy (PyAV only to write MP4), no Django.

* :mod:`.identity` - :class:`IdentityParams` (face shape, colours, eye/nose/mouth geometry, hair,
  accessories, clothing, backdrop) with a documented ``[0, 1]`` regression vector.
* :mod:`.motion` - :class:`MotionParams` (yaw, pitch, roll, tx, ty, scale, blink, brow raise,
  mouth open, smile) and :class:`MotionTrack` (smooth seeded trajectories).
* :mod:`.render` - :func:`render_frame`, :func:`render_frame_and_labels`, :func:`render_clip`,
  :func:`cross_reenactment`, :func:`cross_reenactment_sample`.
* :mod:`.dataset` - :func:`generate_dataset` (MP4/NPZ clips, JSON sidecars, ``manifest.jsonl``,
  CC0 licence), :func:`iter_training_pairs` (in-memory training stream), readers and checks.

Quick start::

    from reenactment.engine.synthface import (
        IdentityParams, MotionTrack, cross_reenactment, render_clip,
    )
    a, b = IdentityParams.sample(1), IdentityParams.sample(2)
    track_b = MotionTrack.random(16, 7)               # 16 frames, seed 7
    driving = render_clip(b, track_b, 128)            # B with B's motion
    target = cross_reenactment(a, track_b, 128)       # A with B's motion (ground truth)
"""

from .dataset import (
    GENERATOR_VERSION,
    LICENCE,
    DatasetSummary,
    SynthFaceSpec,
    TrainingSample,
    generate_dataset,
    identity_for,
    iter_training_pairs,
    load_clip_params,
    motion_for,
    read_clip,
    verify_dataset,
)
from .identity import (
    FACIAL_HAIR,
    GLASSES,
    HAIR_STYLES,
    IDENTITY_RANGES,
    IDENTITY_VECTOR_SIZE,
    IdentityParams,
    identity_vector_layout,
)
from .motion import MOTION_FIELDS, MOTION_RANGES, MOTION_VECTOR_SIZE, MotionParams, MotionTrack
from .render import (
    LABELS,
    CrossReenactmentSample,
    cross_reenactment,
    cross_reenactment_sample,
    render_clip,
    render_frame,
    render_frame_and_labels,
)

__all__ = [
    "FACIAL_HAIR",
    "GENERATOR_VERSION",
    "GLASSES",
    "HAIR_STYLES",
    "IDENTITY_RANGES",
    "IDENTITY_VECTOR_SIZE",
    "LABELS",
    "LICENCE",
    "MOTION_FIELDS",
    "MOTION_RANGES",
    "MOTION_VECTOR_SIZE",
    "CrossReenactmentSample",
    "DatasetSummary",
    "IdentityParams",
    "MotionParams",
    "MotionTrack",
    "SynthFaceSpec",
    "TrainingSample",
    "cross_reenactment",
    "cross_reenactment_sample",
    "generate_dataset",
    "identity_for",
    "identity_vector_layout",
    "iter_training_pairs",
    "load_clip_params",
    "motion_for",
    "read_clip",
    "render_clip",
    "render_frame",
    "render_frame_and_labels",
    "verify_dataset",
]
