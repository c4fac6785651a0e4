"""Identity measurements: consent-bound face matching and the identity-leakage gate.

The engine computes, governance decides (ARCHITECTURE.md §2). This module turns images and
frames into *scores* with a face backend from :mod:`reenactment.engine.faces`; the decision
bands, verdicts and records live in ``governance`` (``governance.services.identity``), which
receives the plain dictionaries made by :meth:`MatchScores.to_dict` and
:meth:`LeakageMeasurement.to_dict` together with ``backend.info.to_dict()``.

* :func:`identity_match`: one reference (a person's enrolled consent reference photo) against
  candidate images (the portrait, or sampled frames of the driving video). One similarity per
  candidate, None where a candidate shows no face.
* :func:`leakage_measure`: streams the output frames once, embeds the sampled ones, and
  reports for each its similarity to the portrait (identity preserved) and to the driving
  performer (identity leaked), together with the baseline similarity between the portrait and
  the performer themselves, summary statistics and the share of sampled frames without a face.
* :func:`sample_frame_indices`: which frames to look at.

Embeddings are biometric data: they are computed inside these functions and never returned,
stored or logged; only similarity scores (in the backend's *higher = more similar* scheme)
and the backend's fingerprint leave this module.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from reenactment.engine.faces import (
    DEFAULT_AMBIGUITY_RATIO,
    FaceBackend,
    FaceEmbedding,
    embed_face,
    to_rgb_uint8,
)

__all__ = [
    "DEFAULT_LEAKAGE_SAMPLES",
    "LeakageMeasurement",
    "LeakageSample",
    "MatchScores",
    "SeriesStats",
    "identity_match",
    "largest_face_vector",
    "leakage_measure",
    "sample_frame_indices",
    "sample_video_frames",
    "series_stats",
]

#: Sampled frames per output when the caller does not say otherwise. ``benchmarks/leakage.py``
#: measures how the statistics settle with the sample count on 64-frame outputs: 16 frames
#: keep the series means within 0.01 of the all-frames values (the worst of 200 random
#: stratified draws; 8 frames: 0.02), far inside the 0.05-wide review bands, at 0.25-0.45 s a
#: frame with a face on a 2-core CPU with the dlib backend.
DEFAULT_LEAKAGE_SAMPLES: Final[int] = 16

#: Decimal places kept for scores in the dictionaries handed to governance: far below any
#: threshold's precision, and it keeps the stored time series compact.
_DECIMALS: Final[int] = 6


# --------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------


def sample_frame_indices(total: int, *, count: int, seed: int | None = None) -> list[int]:
    """``count`` frame indices out of ``total``, sorted and distinct.

    By default they are evenly spaced: the middle frame of each of ``count`` equal slices
    of the video, so the start and the end are both represented and a short glitch cannot
    hide between samples by more than one slice. With ``seed`` one frame is drawn at random
    from each slice (stratified sampling, reproducible for a seed): an output cannot be
    tuned to look faithful only at predictable positions. ``count >= total`` gives every
    frame.
    """
    if total < 0:
        raise ValueError("total must be >= 0")
    if count < 1:
        raise ValueError("count must be >= 1")
    if count >= total:
        return list(range(total))
    rng = random.Random(seed) if seed is not None else None  # noqa: S311 - not for secrets
    indices: list[int] = []
    for slot in range(count):
        start = slot * total // count
        stop = (slot + 1) * total // count  # exclusive; every slice is non-empty as count < total
        if rng is None:
            indices.append((start + stop - 1) // 2)
        else:
            indices.append(rng.randrange(start, stop))
    return indices


def sample_video_frames(
    path: Any, *, count: int, total: int | None = None, max_side: int | None = 640
) -> list[np.ndarray]:
    """The frames at :func:`sample_frame_indices` of a video file, decoding no further than the
    last one (e.g. the driving frames a face check compares with a person's photo).

    Args:
        path: The video.
        count: How many frames.
        total: Its frame count when known (else ``count``: the first frames).
        max_side: Downscale frames whose longer side exceeds this.
    """
    from reenactment.engine import video_io

    wanted = set(sample_frame_indices(total or count, count=count))
    frames: list[np.ndarray] = []
    if not wanted:
        return frames
    last = max(wanted)
    for index, frame in enumerate(video_io.iter_frames(path, max_side=max_side)):
        if index in wanted:
            frames.append(frame)
        if index >= last:
            break
    return frames


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesStats:
    """Summary of a series of similarity scores (frames without a face left out).

    ``p10`` and ``p90`` are the 10th and 90th percentiles (linear interpolation, numpy's
    default): the identity-preservation rule looks at the low tail of the portrait series,
    the leakage rule at the high tail of the performer series.
    """

    count: int
    mean: float
    min: float
    p10: float
    median: float
    p90: float
    max: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "mean": round(self.mean, _DECIMALS),
            "min": round(self.min, _DECIMALS),
            "p10": round(self.p10, _DECIMALS),
            "median": round(self.median, _DECIMALS),
            "p90": round(self.p90, _DECIMALS),
            "max": round(self.max, _DECIMALS),
        }


def series_stats(values: Iterable[float | None]) -> SeriesStats | None:
    """Statistics of the non-None values; None when there are none."""
    present = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if present.size == 0:
        return None
    p10, median, p90 = np.percentile(present, [10, 50, 90])
    return SeriesStats(
        count=int(present.size),
        mean=float(present.mean()),
        min=float(present.min()),
        p10=float(p10),
        median=float(median),
        p90=float(p90),
        max=float(present.max()),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), _DECIMALS)


# --------------------------------------------------------------------------------------
# Consent-bound matching
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchScores:
    """Similarities of candidate images to one reference face, and nothing biometric.

    ``similarities[i]`` belongs to ``candidates[i]``; it is None when no face was found in
    that candidate. ``multiple_faces`` counts candidates where another face was at least
    :data:`~reenactment.engine.faces.DEFAULT_AMBIGUITY_RATIO` as large as the one scored
    (the largest): a second person in the driving video is worth a human look.
    """

    similarities: tuple[float | None, ...]
    multiple_faces: int
    stats: SeriesStats | None
    backend: str
    fingerprint: str

    @property
    def count(self) -> int:
        return len(self.similarities)

    @property
    def no_face(self) -> int:
        return sum(1 for value in self.similarities if value is None)

    def to_dict(self) -> dict[str, Any]:
        """The plain, JSON-ready form governance's ``face_match_evaluate`` takes."""
        return {
            "count": self.count,
            "no_face": self.no_face,
            "multiple_faces": self.multiple_faces,
            "similarities": [_rounded(value) for value in self.similarities],
            "stats": self.stats.to_dict() if self.stats is not None else None,
            "backend": self.backend,
            "fingerprint": self.fingerprint,
        }


def _reference_vector(
    reference: np.ndarray | FaceEmbedding, backend: FaceBackend, what: str
) -> np.ndarray:
    """An embedding from ``backend``: given, or computed from an image's dominant face."""
    if isinstance(reference, FaceEmbedding):
        if reference.fingerprint != backend.info.fingerprint:
            raise ValueError(
                f"the {what} embedding was computed by another model ({reference.backend} "
                f"{reference.fingerprint[:12]}...) than {backend.info.name} "
                f"{backend.info.fingerprint[:12]}...: its scores would mean nothing"
            )
        return reference.vector
    array = np.asarray(reference)
    if array.ndim == 1:
        if array.shape != (backend.info.embedding_dim,):
            raise ValueError(
                f"the {what} embedding has shape {array.shape}; {backend.info.name} embeddings "
                f"have {backend.info.embedding_dim} values"
            )
        return array
    return embed_face(array, backend).vector


def largest_face_vector(
    image: np.ndarray, backend: FaceBackend, ambiguity_ratio: float = DEFAULT_AMBIGUITY_RATIO
) -> tuple[np.ndarray | None, bool]:
    """(embedding of the largest face or None, whether another face is as large): how every
    measurement here reads a frame."""
    rgb = to_rgb_uint8(image)
    detections = backend.detect(rgb)
    if not detections:
        return None, False
    largest = detections[0]
    crowded = any(d.area >= ambiguity_ratio * largest.area for d in detections[1:])
    return backend.embed(rgb, largest), crowded


def identity_match(
    reference_image: np.ndarray | FaceEmbedding,
    candidate_images: Iterable[np.ndarray],
    backend: FaceBackend,
    *,
    ambiguity_ratio: float = DEFAULT_AMBIGUITY_RATIO,
) -> MatchScores:
    """Similarity of each candidate's largest face to the reference's single dominant face.

    Args:
        reference_image: the enrolled consent reference photo (an RGB image whose one
            dominant face is used; :class:`~reenactment.engine.faces.NoFaceError` or
            :class:`~reenactment.engine.faces.MultipleFacesError` when it has none or
            several), or an embedding already made by ``backend``.
        candidate_images: the portrait (one image), or sampled frames of the driving video
            (see :func:`sample_frame_indices`). Consumed once; may be a generator.
        backend: the face backend (``get_face_backend("dlib")``).
        ambiguity_ratio: how large (by area, relative to the largest) another face must be
            to count in ``multiple_faces``.

    Returns:
        :class:`MatchScores`: scores, the no-face count and the backend's fingerprint. The
        verdict is governance's (``face_match_evaluate``).
    """
    reference = _reference_vector(reference_image, backend, "reference")
    similarities: list[float | None] = []
    crowded = 0
    for image in candidate_images:
        vector, ambiguous = largest_face_vector(image, backend, ambiguity_ratio)
        similarities.append(None if vector is None else backend.similarity(reference, vector))
        crowded += int(ambiguous)
    if not similarities:
        raise ValueError("identity_match needs at least one candidate image")
    return MatchScores(
        similarities=tuple(similarities),
        multiple_faces=crowded,
        stats=series_stats(similarities),
        backend=backend.info.name,
        fingerprint=backend.info.fingerprint,
    )


# --------------------------------------------------------------------------------------
# The leakage measurement
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeakageSample:
    """One sampled output frame: its index, time and two similarities (None: no face)."""

    frame: int
    t: float | None
    portrait_similarity: float | None
    performer_similarity: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame": self.frame,
            "t": None if self.t is None else round(self.t, 4),
            "portrait_sim": _rounded(self.portrait_similarity),
            "performer_sim": _rounded(self.performer_similarity),
        }


@dataclass(frozen=True)
class LeakageMeasurement:
    """What :func:`leakage_measure` found in one output, ready for governance's verdict.

    ``baseline_similarity`` is the similarity between the portrait and the performer
    themselves: an output that preserves the portrait's identity resembles the performer
    exactly as much as the portrait does, so leakage is the *rise* of the performer series
    above this baseline, not its absolute value (two look-alikes start high). With several
    performer references, each similarity (baseline included) is the highest over them.
    """

    samples: tuple[LeakageSample, ...]
    total_frames: int
    baseline_similarity: float
    portrait: SeriesStats | None
    performer: SeriesStats | None
    backend: str
    fingerprint: str
    sampling: str

    @property
    def sampled_frames(self) -> int:
        return len(self.samples)

    @property
    def faceless_frames(self) -> int:
        return sum(1 for sample in self.samples if sample.portrait_similarity is None)

    @property
    def faceless_share(self) -> float:
        return self.faceless_frames / self.sampled_frames if self.samples else 1.0

    def to_dict(self) -> dict[str, Any]:
        """The plain, JSON-ready form governance's ``leakage_report_create`` takes."""
        return {
            "total_frames": self.total_frames,
            "sampled_frames": self.sampled_frames,
            "faceless_frames": self.faceless_frames,
            "faceless_share": round(self.faceless_share, _DECIMALS),
            "baseline_similarity": round(self.baseline_similarity, _DECIMALS),
            "portrait": self.portrait.to_dict() if self.portrait is not None else None,
            "performer": self.performer.to_dict() if self.performer is not None else None,
            "series": [sample.to_dict() for sample in self.samples],
            "sampling": self.sampling,
            "backend": self.backend,
            "fingerprint": self.fingerprint,
        }


def _performer_vectors(
    performer: np.ndarray | FaceEmbedding | Sequence[np.ndarray | FaceEmbedding],
    backend: FaceBackend,
) -> list[np.ndarray]:
    """One or more performer references (images, embeddings, or a 4-D stack of frames).

    A driving-video frame may lack a face (the performer turned away): such a frame is
    skipped as long as at least one reference yields a face.
    """
    items: Sequence[np.ndarray | FaceEmbedding]
    if isinstance(performer, FaceEmbedding):
        items = [performer]
    elif isinstance(performer, np.ndarray):
        items = list(performer) if performer.ndim == 4 else [performer]
    else:
        items = list(performer)
    if not items:
        raise ValueError("give at least one performer reference (image or embedding)")
    vectors: list[np.ndarray] = []
    for item in items:
        if isinstance(item, FaceEmbedding) or np.asarray(item).ndim == 1:
            vectors.append(_reference_vector(item, backend, "performer"))
            continue
        vector, _ = largest_face_vector(np.asarray(item), backend, DEFAULT_AMBIGUITY_RATIO)
        if vector is not None:
            vectors.append(vector)
    if not vectors:
        raise ValueError("no face found in any performer reference image")
    return vectors


def _downscaled(frame: np.ndarray, max_side: int) -> np.ndarray:
    import cv2  # lazily, like faces.py: importing this module costs numpy only

    height, width = frame.shape[:2]
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.ascontiguousarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))


class _StreamSampler:
    """Decides, frame by frame, whether to analyse a frame of a stream of unknown length.

    Every ``stride``-th frame is taken; when more than ``max_samples`` are held, every
    other one is dropped and the stride doubles, so the kept samples stay evenly spaced
    over everything seen so far and their number bounded (the cost is at most
    ``max_samples / 2`` extra analyses per doubling).
    """

    def __init__(self, stride: int, max_samples: int | None) -> None:
        self.stride = stride
        self.max_samples = max_samples

    def wants(self, index: int) -> bool:
        return index % self.stride == 0

    def thin(self, samples: list[LeakageSample]) -> list[LeakageSample]:
        if self.max_samples is None or len(samples) <= self.max_samples:
            return samples
        self.stride *= 2
        return [sample for sample in samples if sample.frame % self.stride == 0]


def leakage_measure(
    output_frames: Iterable[np.ndarray],
    *,
    portrait: np.ndarray | FaceEmbedding,
    performer: np.ndarray | FaceEmbedding | Sequence[np.ndarray | FaceEmbedding],
    backend: FaceBackend,
    total_frames: int | None = None,
    fps: float | None = None,
    max_samples: int | None = DEFAULT_LEAKAGE_SAMPLES,
    sample_every: int | None = None,
    seed: int | None = None,
    max_side: int | None = None,
) -> LeakageMeasurement:
    """Measure identity preservation and identity leakage on sampled output frames.

    The frames are consumed once, in order (``video_io.iter_frames`` streams a file without
    holding it in memory); only sampled frames are analysed, and in each the largest face
    is the one scored (the animated subject).

    Args:
        output_frames: the generated video's RGB uint8 frames.
        portrait: the portrait that was animated (image or ``backend`` embedding).
        performer: the driving performer: an image, an embedding, a sequence of them, or
            a 4-D stack of driving frames (e.g. the frames sampled for the consent check).
        backend: the face backend; every similarity uses it.
        total_frames: the output's frame count when known (``probe_video``): the samples
            are then chosen by :func:`sample_frame_indices` (``max_samples`` of them, or
            every ``sample_every``-th frame), else they are thinned while streaming.
        fps: the output's frame rate, to give each sample its time ``t`` in seconds.
        max_samples: the most frames analysed (None: no limit).
        sample_every: analyse every n-th frame (before the ``max_samples`` cap).
        seed: stratified random sampling instead of evenly spaced (known length only).
        max_side: downscale sampled frames whose longer side exceeds this before the face
            search. A frame without a face is the expensive case (dlib's CNN then scans all
            of it: ~1.6 s at 512 px against ~0.25 s at 256 px), so this bounds the gate's cost
            on large or broken outputs; the animated face stays far above the ~80 px dlib
            needs at 256 px and more.

    Returns:
        :class:`LeakageMeasurement`; scores only, no embeddings. Raises
        :class:`~reenactment.engine.faces.NoFaceError` /
        :class:`~reenactment.engine.faces.MultipleFacesError` when the portrait has no or no
        single dominant face, ``ValueError`` when no performer reference shows a face.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError("max_samples must be >= 1 or None")
    if max_side is not None and max_side < 32:
        raise ValueError("max_side must be >= 32 or None")
    if sample_every is not None and sample_every < 1:
        raise ValueError("sample_every must be >= 1 or None")
    portrait_vector = _reference_vector(portrait, backend, "portrait")
    performer_vectors = _performer_vectors(performer, backend)
    baseline = max(backend.similarity(portrait_vector, v) for v in performer_vectors)

    chosen: set[int] | None = None
    sampler: _StreamSampler | None = None
    if total_frames is not None:
        step = sample_every or 1
        count = math.ceil(total_frames / step)
        if max_samples is not None:
            count = min(count, max_samples)
        if sample_every is not None and (max_samples is None or count < max_samples):
            chosen = set(range(0, total_frames, sample_every))
            sampling = f"every {sample_every} of {total_frames} frames"
        else:
            chosen = set(sample_frame_indices(total_frames, count=max(count, 1), seed=seed))
            kind = "stratified random" if seed is not None else "evenly spaced"
            sampling = f"{len(chosen)} {kind} of {total_frames} frames"
    else:
        if seed is not None:
            raise ValueError("random sampling needs total_frames")
        sampler = _StreamSampler(sample_every or 1, max_samples)
        sampling = ""

    samples: list[LeakageSample] = []
    seen = 0
    for index, frame in enumerate(output_frames):
        seen = index + 1
        if chosen is not None and index not in chosen:
            continue
        if sampler is not None and not sampler.wants(index):
            continue
        if max_side is not None and max(frame.shape[:2]) > max_side:
            frame = _downscaled(frame, max_side)
        vector, _ = largest_face_vector(frame, backend, DEFAULT_AMBIGUITY_RATIO)
        samples.append(
            LeakageSample(
                frame=index,
                t=index / fps if fps else None,
                portrait_similarity=(
                    None if vector is None else backend.similarity(portrait_vector, vector)
                ),
                performer_similarity=(
                    None
                    if vector is None
                    else max(backend.similarity(v, vector) for v in performer_vectors)
                ),
            )
        )
        if sampler is not None:
            samples = sampler.thin(samples)
    if sampler is not None:
        sampling = f"every {sampler.stride} of {seen} frames (streamed)"
    if total_frames is not None and seen != total_frames:
        # A short read (truncated file) or a wrong count: say what was really covered.
        sampling += f"; {seen} frames were read"
    if not samples:
        raise ValueError("the output has no frames to check")
    return LeakageMeasurement(
        samples=tuple(samples),
        total_frames=seen,
        baseline_similarity=baseline,
        portrait=series_stats(s.portrait_similarity for s in samples),
        performer=series_stats(s.performer_similarity for s in samples),
        backend=backend.info.name,
        fingerprint=backend.info.fingerprint,
        sampling=sampling,
    )
