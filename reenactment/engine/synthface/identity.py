"""Identity parameters of a SynthFace person: who the face is, independent of how it moves.

An :class:`IdentityParams` fixes everything that must *not* change when the face moves: head
proportions, colours, the geometry of eyes, nose and mouth, hair style, accessories, clothing and
the scene background. Motion lives in :mod:`.motion`.

Physical units: lengths are in *head-local units* where the rendered frame spans ``[-1, 1]``
horizontally at motion scale 1 (so ``face_width = 0.40`` is a head whose half-width is 20 % of
the frame width). Colours are linear-ish RGB triples in ``[0, 1]``.

Regression vector (:meth:`IdentityParams.to_vector`), length :data:`IDENTITY_VECTOR_SIZE`, every
entry in ``[0, 1]``; :func:`identity_vector_layout` lists ``(name, start, stop)`` for each block:

====================  =====  =============================================================
block                 size   encoding
====================  =====  =============================================================
face_width            1      (v - 0.34) / 0.10
face_height           1      (v - 0.46) / 0.10
jaw_roundness         1      as is (0 = narrow pointed chin, 1 = wide square jaw)
skin_rgb              3      as is
hair_rgb              3      as is (also colours brows and facial hair)
hair_style            5      one-hot over :data:`HAIR_STYLES`
hairline              1      as is (0 = low hairline, 1 = high / receding)
eye_spacing           1      (v - 0.150) / 0.050
eye_size              1      (v - 0.060) / 0.025
eye_aspect            1      (v - 0.45) / 0.20
iris_rgb              3      as is
brow_thickness        1      (v - 0.010) / 0.018
nose_length           1      (v - 0.060) / 0.035
nose_width            1      (v - 0.032) / 0.028
mouth_width           1      (v - 0.080) / 0.050
lip_thickness         1      (v - 0.012) / 0.016
lip_rgb               3      as is
ear_size              1      (v - 0.075) / 0.035
glasses               3      one-hot over :data:`GLASSES`
glasses_rgb           3      as is
earrings              1      0 / 1
earring_rgb           3      as is
facial_hair           5      one-hot over :data:`FACIAL_HAIR`
clothing_rgb          3      as is
background_rgb        3      as is
====================  =====  =============================================================

:meth:`IdentityParams.from_vector` inverts it (one-hot blocks by arg-max, values clipped to the
valid ranges), so a regressor's raw output can be turned back into a renderable identity.
For *exact* reproduction (dataset sidecars) use :meth:`IdentityParams.to_dict` /
:meth:`IdentityParams.from_dict`, which keep the full float precision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FACIAL_HAIR",
    "GLASSES",
    "HAIR_STYLES",
    "IDENTITY_RANGES",
    "IDENTITY_VECTOR_SIZE",
    "IdentityParams",
    "identity_vector_layout",
]

RGB = tuple[float, float, float]

HAIR_STYLES: tuple[str, ...] = ("none", "short", "long", "fringe", "bun")
FACIAL_HAIR: tuple[str, ...] = ("none", "stubble", "moustache", "goatee", "full")
GLASSES: tuple[str, ...] = ("none", "round", "square")

#: Valid range ``(low, high)`` of every continuous scalar field, in physical units.
IDENTITY_RANGES: dict[str, tuple[float, float]] = {
    "face_width": (0.34, 0.44),
    "face_height": (0.46, 0.56),
    "jaw_roundness": (0.0, 1.0),
    "hairline": (0.0, 1.0),
    "eye_spacing": (0.150, 0.200),
    "eye_size": (0.060, 0.085),
    "eye_aspect": (0.45, 0.65),
    "brow_thickness": (0.010, 0.028),
    "nose_length": (0.060, 0.095),
    "nose_width": (0.032, 0.060),
    "mouth_width": (0.080, 0.130),
    "lip_thickness": (0.012, 0.028),
    "ear_size": (0.075, 0.110),
}

_CATEGORICAL: dict[str, tuple[str, ...]] = {
    "hair_style": HAIR_STYLES,
    "glasses": GLASSES,
    "facial_hair": FACIAL_HAIR,
}

_COLOURS: tuple[str, ...] = (
    "skin_rgb",
    "hair_rgb",
    "iris_rgb",
    "lip_rgb",
    "glasses_rgb",
    "earring_rgb",
    "clothing_rgb",
    "background_rgb",
)

# (field, kind) in vector order; kind is "scalar", "rgb", "bool" or a categorical name.
_LAYOUT: tuple[tuple[str, str], ...] = (
    ("face_width", "scalar"),
    ("face_height", "scalar"),
    ("jaw_roundness", "scalar"),
    ("skin_rgb", "rgb"),
    ("hair_rgb", "rgb"),
    ("hair_style", "categorical"),
    ("hairline", "scalar"),
    ("eye_spacing", "scalar"),
    ("eye_size", "scalar"),
    ("eye_aspect", "scalar"),
    ("iris_rgb", "rgb"),
    ("brow_thickness", "scalar"),
    ("nose_length", "scalar"),
    ("nose_width", "scalar"),
    ("mouth_width", "scalar"),
    ("lip_thickness", "scalar"),
    ("lip_rgb", "rgb"),
    ("ear_size", "scalar"),
    ("glasses", "categorical"),
    ("glasses_rgb", "rgb"),
    ("earrings", "bool"),
    ("earring_rgb", "rgb"),
    ("facial_hair", "categorical"),
    ("clothing_rgb", "rgb"),
    ("background_rgb", "rgb"),
)


def _block_size(name: str, kind: str) -> int:
    if kind == "rgb":
        return 3
    if kind == "categorical":
        return len(_CATEGORICAL[name])
    return 1


def identity_vector_layout() -> list[tuple[str, int, int]]:
    """``(field, start, stop)`` of every block of :meth:`IdentityParams.to_vector`."""
    out: list[tuple[str, int, int]] = []
    pos = 0
    for name, kind in _LAYOUT:
        n = _block_size(name, kind)
        out.append((name, pos, pos + n))
        pos += n
    return out


#: Length of :meth:`IdentityParams.to_vector`.
IDENTITY_VECTOR_SIZE: int = identity_vector_layout()[-1][2]

# Palettes used by :meth:`IdentityParams.sample` (RGB in [0, 1]); samples are jittered around them.
_SKIN_DARK = np.array([0.36, 0.23, 0.16])
_SKIN_LIGHT = np.array([0.97, 0.83, 0.73])
_HAIR_PALETTE = np.array(
    [
        [0.08, 0.07, 0.06],  # black
        [0.22, 0.14, 0.09],  # dark brown
        [0.42, 0.27, 0.15],  # brown
        [0.55, 0.25, 0.12],  # auburn
        [0.80, 0.35, 0.14],  # ginger
        [0.85, 0.70, 0.42],  # blond
        [0.93, 0.88, 0.72],  # platinum
        [0.60, 0.60, 0.60],  # grey
        [0.25, 0.30, 0.60],  # dyed blue
        [0.62, 0.20, 0.45],  # dyed magenta
    ]
)
_IRIS_PALETTE = np.array(
    [
        [0.30, 0.17, 0.08],  # brown
        [0.45, 0.32, 0.15],  # hazel
        [0.25, 0.45, 0.25],  # green
        [0.25, 0.45, 0.75],  # blue
        [0.48, 0.55, 0.60],  # grey
    ]
)
_METALS = np.array([[0.90, 0.72, 0.25], [0.80, 0.82, 0.85], [0.75, 0.35, 0.30]])


def _rgb(value: Any, name: str) -> RGB:
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be three finite numbers, got {value!r}")
    if np.any(arr < 0.0) or np.any(arr > 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


@dataclass(frozen=True)
class IdentityParams:
    """Everything about a SynthFace person that stays fixed while it moves.

    Frozen and hashable (the renderer caches per-identity set-up). See the module docstring for
    units, ranges and the regression vector layout.
    """

    face_width: float = 0.40
    face_height: float = 0.52
    jaw_roundness: float = 0.5
    skin_rgb: RGB = (0.88, 0.70, 0.58)
    hair_rgb: RGB = (0.22, 0.14, 0.09)
    hair_style: str = "short"
    hairline: float = 0.5
    eye_spacing: float = 0.17
    eye_size: float = 0.070
    eye_aspect: float = 0.54
    iris_rgb: RGB = (0.30, 0.17, 0.08)
    brow_thickness: float = 0.018
    nose_length: float = 0.078
    nose_width: float = 0.045
    mouth_width: float = 0.105
    lip_thickness: float = 0.019
    lip_rgb: RGB = (0.72, 0.38, 0.38)
    ear_size: float = 0.092
    glasses: str = "none"
    glasses_rgb: RGB = (0.10, 0.10, 0.12)
    earrings: bool = False
    earring_rgb: RGB = (0.90, 0.72, 0.25)
    facial_hair: str = "none"
    clothing_rgb: RGB = (0.25, 0.35, 0.55)
    background_rgb: RGB = (0.80, 0.82, 0.85)

    def __post_init__(self) -> None:
        for name, (lo, hi) in IDENTITY_RANGES.items():
            value = float(getattr(self, name))
            if not (np.isfinite(value) and lo - 1e-9 <= value <= hi + 1e-9):
                raise ValueError(f"{name}={value!r} outside [{lo}, {hi}]")
            object.__setattr__(self, name, value)
        for name, choices in _CATEGORICAL.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        for name in _COLOURS:
            object.__setattr__(self, name, _rgb(getattr(self, name), name))
        object.__setattr__(self, "earrings", bool(self.earrings))

    # ------------------------------------------------------------------ sampling

    @classmethod
    def sample(cls, rng: np.random.Generator | int | None = None) -> IdentityParams:
        """A random identity; deterministic for a given generator state or integer seed."""
        rng = np.random.default_rng(rng)
        u = {name: float(rng.uniform(lo, hi)) for name, (lo, hi) in IDENTITY_RANGES.items()}

        tone = rng.uniform(0.0, 1.0)
        skin = _SKIN_DARK + (_SKIN_LIGHT - _SKIN_DARK) * tone
        skin = skin * rng.uniform(0.94, 1.04) + rng.normal(0.0, 0.015, 3)
        skin[2] = min(skin[2], skin[1] - 0.02)  # keep skin warm: blue below green
        skin = np.clip(skin, 0.05, 0.98)

        hair = _HAIR_PALETTE[rng.integers(len(_HAIR_PALETTE))]
        hair = np.clip(hair * rng.uniform(0.85, 1.1) + rng.normal(0.0, 0.02, 3), 0.02, 0.97)

        iris = _IRIS_PALETTE[rng.integers(len(_IRIS_PALETTE))]
        iris = np.clip(iris + rng.normal(0.0, 0.03, 3), 0.03, 0.95)

        lip_mix = rng.uniform(0.35, 0.7)
        lip_tint = np.array([0.78, 0.28, 0.32]) + rng.normal(0.0, 0.04, 3)
        lip = np.clip(skin * (1 - lip_mix) * 0.9 + lip_tint * lip_mix * (0.6 + 0.4 * tone), 0, 1)

        style = HAIR_STYLES[int(rng.choice(len(HAIR_STYLES), p=[0.12, 0.32, 0.26, 0.18, 0.12]))]
        glasses = GLASSES[int(rng.choice(len(GLASSES), p=[0.7, 0.15, 0.15]))]
        facial = FACIAL_HAIR[int(rng.choice(len(FACIAL_HAIR), p=[0.6, 0.1, 0.1, 0.1, 0.1]))]
        glasses_rgb = np.clip(
            rng.choice([np.array([0.08, 0.08, 0.1]), rng.uniform(0.1, 0.85, 3)]), 0, 1
        )
        earrings = bool(rng.uniform() < 0.25)
        earring = _METALS[rng.integers(len(_METALS))]

        clothing = rng.uniform(0.08, 0.9, 3)
        # Backgrounds are kept away from skin tones: muted cool or neutral.
        bg_base = rng.uniform(0.25, 0.9)
        background = np.clip(bg_base + rng.normal(0.0, 0.08, 3) + [-0.04, 0.0, 0.06], 0.05, 0.95)

        return cls(
            skin_rgb=tuple(skin),
            hair_rgb=tuple(hair),
            hair_style=style,
            iris_rgb=tuple(iris),
            lip_rgb=tuple(lip),
            glasses=glasses,
            glasses_rgb=tuple(glasses_rgb),
            earrings=earrings,
            earring_rgb=tuple(earring),
            facial_hair=facial,
            clothing_rgb=tuple(clothing),
            background_rgb=tuple(background),
            **u,
        )

    def replace(self, **changes: Any) -> IdentityParams:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ vectors

    def to_vector(self) -> np.ndarray:
        """The fixed-length regression vector (float32, all entries in ``[0, 1]``)."""
        out = np.zeros(IDENTITY_VECTOR_SIZE, dtype=np.float32)
        for (name, kind), (_, start, stop) in zip(_LAYOUT, identity_vector_layout()):
            value = getattr(self, name)
            if kind == "scalar":
                lo, hi = IDENTITY_RANGES[name]
                out[start] = (value - lo) / (hi - lo)
            elif kind == "rgb":
                out[start:stop] = value
            elif kind == "bool":
                out[start] = 1.0 if value else 0.0
            else:
                out[start + _CATEGORICAL[name].index(value)] = 1.0
        return np.clip(out, 0.0, 1.0)

    @classmethod
    def from_vector(cls, vector: Sequence[float] | np.ndarray) -> IdentityParams:
        """Inverse of :meth:`to_vector`; tolerant of raw regressor output (clipped, arg-max)."""
        vec = np.asarray(vector, dtype=np.float64).reshape(-1)
        if vec.shape != (IDENTITY_VECTOR_SIZE,):
            raise ValueError(f"identity vector must have {IDENTITY_VECTOR_SIZE} entries")
        vec = np.clip(np.nan_to_num(vec, nan=0.5), 0.0, 1.0)
        kwargs: dict[str, Any] = {}
        for (name, kind), (_, start, stop) in zip(_LAYOUT, identity_vector_layout()):
            block = vec[start:stop]
            if kind == "scalar":
                lo, hi = IDENTITY_RANGES[name]
                kwargs[name] = float(lo + block[0] * (hi - lo))
            elif kind == "rgb":
                kwargs[name] = tuple(float(x) for x in block)
            elif kind == "bool":
                kwargs[name] = bool(block[0] >= 0.5)
            else:
                kwargs[name] = _CATEGORICAL[name][int(np.argmax(block))]
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with full precision (exact round trip through :meth:`from_dict`)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IdentityParams:
        """Inverse of :meth:`to_dict`; unknown keys are rejected."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown identity fields: {sorted(unknown)}")
        kwargs = {k: tuple(v) if k in _COLOURS else v for k, v in data.items()}
        return cls(**kwargs)
