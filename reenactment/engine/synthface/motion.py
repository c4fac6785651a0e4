"""Motion parameters of SynthFace: how a face moves, independent of who it is.

:class:`MotionParams` is one frame's pose and expression; :class:`MotionTrack` is a clip's worth
of them (a ``(T, 10)`` float64 array) with a seeded generator of smooth, natural-looking
trajectories.

Fields, physical units and ranges (:data:`MOTION_RANGES`), in vector order:

===========  ==================  ============================================================
field        range               meaning
===========  ==================  ============================================================
yaw          [-35, 35] degrees   positive turns the face towards image right
pitch        [-25, 25] degrees   positive tilts the face up (chin up)
roll         [-20, 20] degrees   positive rotates the head counter-clockwise in the image
tx           [-0.12, 0.12]       horizontal head translation, in half-frame widths (+ = right)
ty           [-0.12, 0.12]       vertical head translation, in half-frame heights (+ = up)
scale        [0.85, 1.15]        head (and body) size multiplier about the head centre
blink        [0, 1]              0 = eyes open, 1 = eyelids fully closed
brow_raise   [0, 1]              0 = resting brows, 1 = fully raised and arched
mouth_open   [0, 1]              0 = lips together, 1 = jaw fully dropped
smile        [0, 1]              0 = neutral mouth, 1 = broad smile (corners up, cheek folds)
===========  ==================  ============================================================

``to_vector()`` gives the values normalised to ``[0, 1]`` (``(v - low) / (high - low)``), the
form a regressor predicts; ``to_vector(normalized=False)`` gives physical units. Expression
amplitudes are the same for every identity (a mouth-open of 0.5 drops the lower lip by the same
head-local distance on every face), so one motion reads as the same expression on any face.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MOTION_FIELDS",
    "MOTION_RANGES",
    "MOTION_VECTOR_SIZE",
    "MotionParams",
    "MotionTrack",
]

MOTION_FIELDS: tuple[str, ...] = (
    "yaw",
    "pitch",
    "roll",
    "tx",
    "ty",
    "scale",
    "blink",
    "brow_raise",
    "mouth_open",
    "smile",
)

#: ``(low, high)`` of each field in physical units.
MOTION_RANGES: dict[str, tuple[float, float]] = {
    "yaw": (-35.0, 35.0),
    "pitch": (-25.0, 25.0),
    "roll": (-20.0, 20.0),
    "tx": (-0.12, 0.12),
    "ty": (-0.12, 0.12),
    "scale": (0.85, 1.15),
    "blink": (0.0, 1.0),
    "brow_raise": (0.0, 1.0),
    "mouth_open": (0.0, 1.0),
    "smile": (0.0, 1.0),
}

MOTION_VECTOR_SIZE: int = len(MOTION_FIELDS)

_LOW = np.array([MOTION_RANGES[f][0] for f in MOTION_FIELDS])
_HIGH = np.array([MOTION_RANGES[f][1] for f in MOTION_FIELDS])
_NEUTRAL = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])


def _normalise(values: np.ndarray) -> np.ndarray:
    return (values - _LOW) / (_HIGH - _LOW)


def _denormalise(values: np.ndarray) -> np.ndarray:
    return _LOW + np.clip(values, 0.0, 1.0) * (_HIGH - _LOW)


@dataclass(frozen=True)
class MotionParams:
    """One frame's head pose and expression (see the module docstring for units and ranges).

    Values outside the ranges are rejected; use :meth:`clipped` to build from unchecked input.
    """

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    tx: float = 0.0
    ty: float = 0.0
    scale: float = 1.0
    blink: float = 0.0
    brow_raise: float = 0.0
    mouth_open: float = 0.0
    smile: float = 0.0

    def __post_init__(self) -> None:
        for name in MOTION_FIELDS:
            value = float(getattr(self, name))
            lo, hi = MOTION_RANGES[name]
            if not (np.isfinite(value) and lo - 1e-9 <= value <= hi + 1e-9):
                raise ValueError(f"{name}={value!r} outside [{lo}, {hi}]")
            object.__setattr__(self, name, value)

    @classmethod
    def neutral(cls) -> MotionParams:
        """Frontal, centred, eyes open, mouth closed."""
        return cls()

    @classmethod
    def clipped(cls, **values: float) -> MotionParams:
        """Build from possibly out-of-range values by clipping each to its range."""
        out = {}
        for name, value in values.items():
            if name not in MOTION_RANGES:
                raise ValueError(f"unknown motion field {name!r}")
            lo, hi = MOTION_RANGES[name]
            out[name] = float(np.clip(value, lo, hi))
        return cls(**out)

    @classmethod
    def sample(cls, rng: np.random.Generator | int | None = None) -> MotionParams:
        """A random single-frame pose and expression (moderate poses, any expression)."""
        rng = np.random.default_rng(rng)
        u = rng.uniform(0.0, 1.0, MOTION_VECTOR_SIZE)
        # Pose: centre-weighted (average of two uniforms); expressions: uniform.
        u[:6] = 0.5 * (u[:6] + rng.uniform(0.0, 1.0, 6))
        u[6] = u[6] ** 2  # mostly open eyes
        return cls.from_vector(u)

    def replace(self, **changes: float) -> MotionParams:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_vector(self, normalized: bool = True) -> np.ndarray:
        """The 10 values in :data:`MOTION_FIELDS` order, normalised to ``[0, 1]`` by default."""
        raw = np.array([getattr(self, f) for f in MOTION_FIELDS], dtype=np.float64)
        return np.clip(_normalise(raw), 0.0, 1.0) if normalized else raw

    @classmethod
    def from_vector(
        cls, vector: Sequence[float] | np.ndarray, normalized: bool = True
    ) -> MotionParams:
        """Inverse of :meth:`to_vector` (normalised input is clipped to ``[0, 1]``)."""
        vec = np.asarray(vector, dtype=np.float64).reshape(-1)
        if vec.shape != (MOTION_VECTOR_SIZE,):
            raise ValueError(f"motion vector must have {MOTION_VECTOR_SIZE} entries")
        raw = _denormalise(vec) if normalized else np.clip(vec, _LOW, _HIGH)
        return cls(**{f: float(v) for f, v in zip(MOTION_FIELDS, raw)})

    def to_dict(self) -> dict[str, float]:
        return {f: getattr(self, f) for f in MOTION_FIELDS}


# ---------------------------------------------------------------------------- trajectories


def _sinusoids(
    rng: np.random.Generator, t: np.ndarray, n: int, f_lo: float, f_hi: float
) -> np.ndarray:
    """Sum of ``n`` random sinusoids with log-uniform frequencies; unit-ish amplitude."""
    freqs = np.exp(rng.uniform(np.log(f_lo), np.log(f_hi), n))
    phases = rng.uniform(0.0, 2.0 * np.pi, n)
    amps = rng.uniform(0.3, 1.0, n) / np.sqrt(np.arange(1, n + 1))
    amps /= np.sqrt(np.sum(amps**2) / 2.0)  # RMS of the sum ~ 1
    return np.sum(
        amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phases[:, None]), 0
    )


def _blinks(rng: np.random.Generator, t: np.ndarray, rate: float) -> np.ndarray:
    """Blink events (rate per second): raised-cosine closures of 0.1-0.3 s."""
    duration = float(t[-1] - t[0]) + 0.6 if len(t) > 1 else 0.6
    count = int(rng.poisson(rate * duration))
    out = np.zeros_like(t)
    for _ in range(count):
        centre = t[0] - 0.3 + rng.uniform(0.0, duration)
        width = rng.uniform(0.10, 0.30)
        depth = 1.0 if rng.uniform() < 0.8 else rng.uniform(0.5, 0.95)
        x = np.clip((t - centre) / (width / 2.0), -1.0, 1.0)
        out = np.maximum(out, depth * 0.5 * (1.0 + np.cos(np.pi * x)))
    return out


class MotionTrack:
    """A sequence of :class:`MotionParams` stored as a ``(T, 10)`` float64 array (physical units).

    Index it for one frame's :class:`MotionParams`, iterate over it, or read :attr:`values`.
    """

    __slots__ = ("_values", "fps")

    def __init__(self, values: np.ndarray | Sequence[Sequence[float]], fps: float = 25.0) -> None:
        arr = np.array(values, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != MOTION_VECTOR_SIZE or arr.shape[0] < 1:
            raise ValueError(
                f"motion track must be (T >= 1, {MOTION_VECTOR_SIZE}), got {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError("motion track contains non-finite values")
        if np.any(arr < _LOW - 1e-9) or np.any(arr > _HIGH + 1e-9):
            raise ValueError("motion track values outside MOTION_RANGES")
        if not (fps > 0):
            raise ValueError("fps must be positive")
        arr.setflags(write=False)
        self._values = arr
        self.fps = float(fps)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_params(cls, frames: Sequence[MotionParams], fps: float = 25.0) -> MotionTrack:
        return cls([m.to_vector(normalized=False) for m in frames], fps=fps)

    @classmethod
    def from_array(
        cls, values: np.ndarray, fps: float = 25.0, normalized: bool = False
    ) -> MotionTrack:
        arr = np.asarray(values, dtype=np.float64)
        return cls(_denormalise(arr) if normalized else arr, fps=fps)

    @classmethod
    def static(cls, params: MotionParams, num_frames: int, fps: float = 25.0) -> MotionTrack:
        return cls(np.tile(params.to_vector(normalized=False), (num_frames, 1)), fps=fps)

    @classmethod
    def random(
        cls,
        num_frames: int,
        rng: np.random.Generator | int | None = None,
        fps: float = 25.0,
        *,
        liveliness: float | None = None,
        talking: bool | None = None,
    ) -> MotionTrack:
        """A smooth random trajectory of ``num_frames`` frames at ``fps``; deterministic per seed.

        Head pose, translation and scale are sums of low-frequency sinusoids (0.05-0.6 Hz)
        around a random mean pose, squashed into range with ``tanh``; blinks are short Poisson
        events; the mouth follows a speech-like syllable rhythm (2.5-5 Hz) under a slow talk/pause
        envelope; smile and brow raise drift slowly. ``liveliness`` (0..1, random by default)
        scales how much the head moves; ``talking`` forces speech on or off.
        """
        if num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        rng = np.random.default_rng(rng)
        t = np.arange(num_frames, dtype=np.float64) / float(fps)
        live = float(rng.uniform(0.15, 1.0)) if liveliness is None else float(liveliness)
        talk = bool(rng.uniform() < 0.75) if talking is None else bool(talking)
        out = np.empty((num_frames, MOTION_VECTOR_SIZE), dtype=np.float64)

        # Pose: mean pose (centre-weighted) + slow motion, squashed into [low, high].
        for i in range(6):
            lo, hi = _LOW[i], _HIGH[i]
            centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
            mean = 0.55 * np.mean(rng.uniform(-1.0, 1.0, 2))
            amp = live * rng.uniform(0.15, 0.55)
            raw = np.arctanh(np.clip(mean, -0.95, 0.95)) + amp * _sinusoids(rng, t, 3, 0.05, 0.6)
            out[:, i] = centre + half * np.tanh(raw)

        # Blink: a little resting lid droop plus blink events.
        droop = rng.uniform(0.0, 0.2) * (
            0.6 + 0.4 * np.sin(2 * np.pi * 0.1 * t + rng.uniform(0, 6.3))
        )
        rate = rng.uniform(0.2, 0.8)
        out[:, 6] = np.clip(np.maximum(droop, _blinks(rng, t, rate)), 0.0, 1.0)

        # Brow raise: slow drift, raised more while talking.
        brow = rng.uniform(-0.8, 0.6) + 0.7 * _sinusoids(rng, t, 2, 0.08, 0.6)
        out[:, 7] = np.clip(0.5 * (1 + np.tanh(brow * 1.5)) - 0.1, 0.0, 1.0)

        # Mouth: syllables under a talk/pause envelope.
        if talk:
            syl_f = rng.uniform(2.5, 5.0)
            wobble = 0.6 * _sinusoids(rng, t, 2, 0.2, 1.0)
            syllable = np.abs(np.sin(np.pi * syl_f * t + rng.uniform(0, np.pi) + wobble))
            envelope = 0.5 * (
                1.0 + np.tanh(2.5 * (_sinusoids(rng, t, 2, 0.1, 0.5) + rng.uniform(0, 1.2)))
            )
            loud = rng.uniform(0.35, 0.95) * (0.8 + 0.2 * _sinusoids(rng, t, 2, 0.5, 2.0))
            mouth = envelope * loud * syllable**1.5
        else:
            mouth = np.clip(rng.uniform(-0.2, 0.25) + 0.1 * _sinusoids(rng, t, 2, 0.05, 0.3), 0, 1)
        out[:, 8] = np.clip(mouth, 0.0, 1.0)

        # Smile: slow drift around a per-clip mood.
        mood = rng.uniform(-1.2, 1.0)
        out[:, 9] = np.clip(
            0.5 * (1 + np.tanh(mood + 0.6 * _sinusoids(rng, t, 2, 0.05, 0.4))), 0, 1
        )
        return cls(np.clip(out, _LOW, _HIGH), fps=fps)

    # ------------------------------------------------------------------ access

    @property
    def values(self) -> np.ndarray:
        """Read-only ``(T, 10)`` array in physical units."""
        return self._values

    def to_array(self, normalized: bool = False) -> np.ndarray:
        """A copy of the values, physical units or normalised to ``[0, 1]``."""
        return np.clip(_normalise(self._values), 0.0, 1.0) if normalized else self._values.copy()

    def __len__(self) -> int:
        return int(self._values.shape[0])

    def __getitem__(self, index: int) -> MotionParams:
        row = self._values[index]
        if row.ndim != 1:
            raise TypeError("index a MotionTrack with an integer; use .values for slices")
        return MotionParams(**{f: float(v) for f, v in zip(MOTION_FIELDS, row)})

    def __iter__(self) -> Iterator[MotionParams]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, MotionTrack):
            return NotImplemented
        return self.fps == other.fps and np.array_equal(self._values, other._values)

    def __hash__(self) -> int:
        return hash((self.fps, self._values.tobytes()))

    def __repr__(self) -> str:
        return f"MotionTrack(frames={len(self)}, fps={self.fps:g})"
