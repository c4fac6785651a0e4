"""SynthFace datasets: deterministic clips on disk, and an in-memory training stream.

On-disk layout written by :func:`generate_dataset` (``<clip>`` = ``id00003_c001``)::

    out_dir/
      dataset.json          dataset card: generator, licence, spec, vector layouts, counts
      LICENSE.txt           CC0-1.0 dedication of the project-owned synthetic data
      manifest.jsonl        one JSON object per media file, sorted by path (see below)
      clips/id00003/<clip>.mp4 | .npz     the clip (identity 3 performing its own motion)
      clips/id00003/<clip>.json           sidecar: identity, per-frame motion, seeds, version
      cross/x00000.mp4 | .npz + .json     optional cross-reenactment targets (A with B's motion)

Manifest line keys: ``path``, ``sha256``, ``sidecar``, ``sidecar_sha256``, ``kind``
(``"clip"`` or ``"cross"``), ``clip_id``, ``identity_id``, ``frames``, ``fps``, ``size``,
``format``, ``generator``, ``licence`` (and ``driving_clip_id`` for cross targets).

Determinism: identity ``i`` is drawn from ``default_rng([seed, 0, i])`` and the motion of its clip
``j`` from ``default_rng([seed, 1, i, j])``, so any clip can be regenerated alone, and the
same spec gives byte-identical ``.npz``/``.json``/``manifest.jsonl`` files. ``.mp4`` files
(H.264, yuv420p, single-threaded x264) decode to identical frames; their bytes are identical
too with the same PyAV/FFmpeg build. The sidecar keeps every parameter at full precision, so
``render_clip(*load_clip_params(sidecar))`` reproduces the exact source frames.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .identity import IDENTITY_RANGES, IDENTITY_VECTOR_SIZE, IdentityParams, identity_vector_layout
from .motion import MOTION_FIELDS, MOTION_RANGES, MotionParams, MotionTrack
from .render import render_clip, render_frame

__all__ = [
    "GENERATOR_VERSION",
    "LICENCE",
    "DatasetSummary",
    "SynthFaceSpec",
    "TrainingSample",
    "generate_dataset",
    "identity_for",
    "iter_training_pairs",
    "load_clip_params",
    "motion_for",
    "read_clip",
    "verify_dataset",
]

#: Recorded in every sidecar; bump whenever rendering or sampling changes any output.
GENERATOR_VERSION = "synthface-1.0.0"
#: Licence string recorded in every manifest line.
LICENCE = "CC0-1.0 (project-owned synthetic data)"

_LICENCE_TEXT = """SynthFace synthetic talking-face data
=====================================

This data set was generated procedurally by the project's SynthFace generator ({version}).
It contains no photographs, no biometric data and no likeness of any real person: every face
is drawn from random parameters.

The project, as the owner of this generated data, dedicates it to the public domain under the
Creative Commons CC0 1.0 Universal Public Domain Dedication
(https://creativecommons.org/publicdomain/zero/1.0/legalcode). To the extent possible under
law, the project waives all copyright and related or neighbouring rights to this data. You can
copy, modify, distribute and use it, including for commercial purposes, without asking
permission.

SPDX-License-Identifier: CC0-1.0
"""

_FORMATS = ("mp4", "npz")


@dataclass(frozen=True)
class SynthFaceSpec:
    """What :func:`generate_dataset` writes. ``cross_pairs`` extra cross-reenactment targets."""

    num_identities: int = 100
    clips_per_identity: int = 4
    frames: int = 16
    size: int = 128
    fps: float = 25.0
    seed: int = 0
    format: str = "mp4"
    crf: int = 18
    cross_pairs: int = 0

    def __post_init__(self) -> None:
        if self.num_identities < 1 or self.clips_per_identity < 1 or self.frames < 1:
            raise ValueError("num_identities, clips_per_identity and frames must be >= 1")
        if self.size < 16 or self.size % 2:
            raise ValueError("size must be an even number >= 16 (yuv420p needs even sizes)")
        if not self.fps > 0:
            raise ValueError("fps must be positive")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.format not in _FORMATS:
            raise ValueError(f"format must be one of {_FORMATS}")
        if not 0 <= self.crf <= 51:
            raise ValueError("crf must be in [0, 51]")
        if self.cross_pairs < 0:
            raise ValueError("cross_pairs must be >= 0")
        if self.cross_pairs and self.num_identities < 2:
            raise ValueError("cross pairs need at least two identities")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`generate_dataset` wrote."""

    out_dir: Path
    manifest: Path
    entries: tuple[dict[str, Any], ...]

    @property
    def num_clips(self) -> int:
        return len(self.entries)

    @property
    def num_frames(self) -> int:
        return sum(int(e["frames"]) for e in self.entries)


# ---------------------------------------------------------------------------- seeding


def identity_for(seed: int, index: int) -> IdentityParams:
    """Identity ``index`` of the seeded identity space (the one datasets and streams share)."""
    return IdentityParams.sample(np.random.default_rng([seed, 0, index]))


def motion_for(
    seed: int, identity_index: int, clip_index: int, frames: int, fps: float
) -> MotionTrack:
    """Motion track of clip ``clip_index`` of identity ``identity_index``."""
    return MotionTrack.random(
        frames, np.random.default_rng([seed, 1, identity_index, clip_index]), fps
    )


# ---------------------------------------------------------------------------- writers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, sort_keys=True, indent=1, allow_nan=False) + "\n").encode("utf-8")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` readable by :func:`numpy.load`, with fixed zip timestamps (reproducible)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(
                member, np.ascontiguousarray(arrays[name]), allow_pickle=False
            )
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=6)
    return buf.getvalue()


def _mp4_bytes(frames: np.ndarray, fps: float, crf: int) -> bytes:
    """H.264 (libx264, yuv420p, one thread) MP4 of ``(T, H, W, 3)`` uint8 frames."""
    import av  # lazy: the renderer itself needs numpy only

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width = int(frames.shape[2])
        stream.height = int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium", "threads": "1"}
        stream.codec_context.thread_count = 1
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    return buf.getvalue()


def read_clip(path: str | os.PathLike[str]) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 of a SynthFace ``.mp4`` or ``.npz`` clip."""
    p = Path(path)
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as data:
            return np.asarray(data["frames"])
    import av

    with av.open(str(p)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(frames)


def load_clip_params(sidecar: str | os.PathLike[str]) -> tuple[IdentityParams, MotionTrack]:
    """Exact identity and motion track recorded in a clip's ``.json`` sidecar."""
    data = json.loads(Path(sidecar).read_text(encoding="utf-8"))
    identity = IdentityParams.from_dict(data["identity"])
    track = MotionTrack(np.array(data["motion"], dtype=np.float64), fps=float(data["fps"]))
    return identity, track


def _write_clip(
    out_dir: Path,
    rel_media: str,
    frames: np.ndarray,
    identity: IdentityParams,
    track: MotionTrack,
    spec: SynthFaceSpec,
    meta: dict[str, Any],
) -> dict[str, Any]:
    media = out_dir / rel_media
    media.parent.mkdir(parents=True, exist_ok=True)
    if spec.format == "npz":
        payload = _npz_bytes(
            {
                "frames": frames,
                "identity": identity.to_vector(),
                "motion": track.to_array(normalized=True).astype(np.float32),
            }
        )
    else:
        payload = _mp4_bytes(frames, spec.fps, spec.crf)
    _write_atomic(media, payload)
    sha = hashlib.sha256(payload).hexdigest()
    sidecar = {
        "generator": GENERATOR_VERSION,
        "licence": LICENCE,
        "dataset_seed": spec.seed,
        "media": media.name,
        "media_sha256": sha,
        "format": spec.format,
        "frames": int(frames.shape[0]),
        "size": spec.size,
        "fps": spec.fps,
        "identity": identity.to_dict(),
        "identity_vector": [float(x) for x in identity.to_vector()],
        "motion_fields": list(MOTION_FIELDS),
        "motion": track.values.tolist(),
        "motion_vectors": track.to_array(normalized=True).tolist(),
        **meta,
    }
    side_bytes = (
        json.dumps(sidecar, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"
    ).encode()
    rel_side = rel_media.rsplit(".", 1)[0] + ".json"
    _write_atomic(out_dir / rel_side, side_bytes)
    entry = {
        "path": rel_media,
        "sha256": sha,
        "sidecar": rel_side,
        "sidecar_sha256": hashlib.sha256(side_bytes).hexdigest(),
        "frames": int(frames.shape[0]),
        "fps": spec.fps,
        "size": spec.size,
        "format": spec.format,
        "generator": GENERATOR_VERSION,
        "licence": LICENCE,
    }
    entry.update(
        {k: meta[k] for k in ("kind", "clip_id", "identity_id", "driving_clip_id") if k in meta}
    )
    return entry


def _clip_job(args: tuple[str, SynthFaceSpec, int, int]) -> dict[str, Any]:
    out, spec, i, j = args
    identity = identity_for(spec.seed, i)
    track = motion_for(spec.seed, i, j, spec.frames, spec.fps)
    frames = render_clip(identity, track, spec.size)
    ident_id = f"id{i:05d}"
    clip_id = f"{ident_id}_c{j:03d}"
    meta = {
        "kind": "clip",
        "clip_id": clip_id,
        "identity_id": ident_id,
        "identity_index": i,
        "clip_index": j,
        "seeds": {"identity": [spec.seed, 0, i], "motion": [spec.seed, 1, i, j]},
    }
    return _write_clip(
        Path(out), f"clips/{ident_id}/{clip_id}.{spec.format}", frames, identity, track, spec, meta
    )


def _cross_choice(spec: SynthFaceSpec, k: int) -> tuple[int, int, int]:
    """Cross pair ``k``: (identity A, identity B != A, clip of B)."""
    rng = np.random.default_rng([spec.seed, 2, k])
    a = int(rng.integers(spec.num_identities))
    b = int(rng.integers(spec.num_identities - 1))
    b = b + 1 if b >= a else b
    return a, b, int(rng.integers(spec.clips_per_identity))


def _cross_job(args: tuple[str, SynthFaceSpec, int]) -> dict[str, Any]:
    out, spec, k = args
    a, b, j = _cross_choice(spec, k)
    identity = identity_for(spec.seed, a)
    track = motion_for(spec.seed, b, j, spec.frames, spec.fps)
    frames = render_clip(identity, track, spec.size)  # == cross_reenactment(A, track_B)
    meta = {
        "kind": "cross",
        "clip_id": f"x{k:05d}",
        "identity_id": f"id{a:05d}",
        "identity_index": a,
        "driving_clip_id": f"id{b:05d}_c{j:03d}",
        "driving_identity_id": f"id{b:05d}",
        "seeds": {"identity": [spec.seed, 0, a], "motion": [spec.seed, 1, b, j]},
    }
    return _write_clip(
        Path(out), f"cross/x{k:05d}.{spec.format}", frames, identity, track, spec, meta
    )


def generate_dataset(
    out_dir: str | os.PathLike[str],
    *,
    num_identities: int = 100,
    clips_per_identity: int = 4,
    frames: int = 16,
    size: int = 128,
    fps: float = 25.0,
    seed: int = 0,
    format: str = "mp4",  # noqa: A002 - the natural name of the option
    crf: int = 18,
    cross_pairs: int = 0,
    workers: int = 1,
) -> DatasetSummary:
    """Write a SynthFace dataset (layout in the module docstring) and return its summary.

    ``format``: ``"mp4"`` (H.264, yuv420p, ``crf``) or ``"npz"`` (lossless, compressed, with
    ``frames``, ``identity`` and normalised ``motion`` arrays). ``cross_pairs`` adds that many
    cross-reenactment ground-truth clips (identity A performing the motion of a clip of B).
    ``workers > 1`` renders in that many processes; the output is the same.
    """
    spec = SynthFaceSpec(
        num_identities=num_identities,
        clips_per_identity=clips_per_identity,
        frames=frames,
        size=size,
        fps=fps,
        seed=seed,
        format=format,
        crf=crf,
        cross_pairs=cross_pairs,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clip_jobs = [
        (str(out), spec, i, j) for i in range(num_identities) for j in range(clips_per_identity)
    ]
    cross_jobs = [(str(out), spec, k) for k in range(cross_pairs)]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            entries = list(pool.map(_clip_job, clip_jobs, chunksize=8))
            entries += list(pool.map(_cross_job, cross_jobs, chunksize=8))
    else:
        entries = [_clip_job(job) for job in clip_jobs] + [_cross_job(job) for job in cross_jobs]
    entries.sort(key=lambda e: e["path"])
    manifest = out / "manifest.jsonl"
    lines = [json.dumps(e, sort_keys=True, allow_nan=False) for e in entries]
    _write_atomic(manifest, ("\n".join(lines) + "\n").encode("utf-8"))
    card = {
        "name": "SynthFace",
        "generator": GENERATOR_VERSION,
        "licence": LICENCE,
        "spdx": "CC0-1.0",
        "spec": spec.to_dict(),
        "counts": {
            "identities": num_identities,
            "clips": num_identities * clips_per_identity,
            "cross_pairs": cross_pairs,
            "frames": sum(int(e["frames"]) for e in entries),
        },
        "identity_vector_size": IDENTITY_VECTOR_SIZE,
        "identity_vector_layout": [list(x) for x in identity_vector_layout()],
        "identity_ranges": {k: list(v) for k, v in IDENTITY_RANGES.items()},
        "motion_fields": list(MOTION_FIELDS),
        "motion_ranges": {k: list(v) for k, v in MOTION_RANGES.items()},
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
    }
    _write_atomic(out / "dataset.json", _json_bytes(card))
    _write_atomic(
        out / "LICENSE.txt", _LICENCE_TEXT.format(version=GENERATOR_VERSION).encode("utf-8")
    )
    return DatasetSummary(out_dir=out, manifest=manifest, entries=tuple(entries))


def verify_dataset(out_dir: str | os.PathLike[str]) -> list[str]:
    """Problems found checking every manifest line's files and hashes (empty list = intact)."""
    out = Path(out_dir)
    problems: list[str] = []
    manifest = out / "manifest.jsonl"
    if not manifest.is_file():
        return [f"missing {manifest}"]
    for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        entry = json.loads(line)
        for key, hkey in (("path", "sha256"), ("sidecar", "sidecar_sha256")):
            path = out / entry[key]
            if not path.is_file():
                problems.append(f"line {n}: missing {entry[key]}")
            elif _sha256(path) != entry[hkey]:
                problems.append(f"line {n}: sha256 mismatch for {entry[key]}")
    return problems


# ---------------------------------------------------------------------------- training stream


class TrainingSample(NamedTuple):
    """One training example from :func:`iter_training_pairs`.

    ``reference`` ``(H, W, 3)``: identity A in an unrelated pose/expression. ``driving``
    ``(T, H, W, 3)``: A (self-reenactment) or another identity B (cross) performing a motion
    track. ``target`` ``(T, H, W, 3)``: A performing that same track, the exact ground truth.
    ``meta``: ``kind`` (``"self"``/``"cross"``), ``index``, ``identity_a``/``identity_b``
    (regression vectors), ``motion`` (``(T, 10)`` normalised) and ``reference_motion``.
    """

    reference: np.ndarray
    driving: np.ndarray
    target: np.ndarray
    meta: dict[str, Any]


def iter_training_pairs(
    seed: int,
    size: int = 128,
    frames: int = 8,
    *,
    cross_probability: float = 0.5,
    fps: float = 25.0,
    identity_indices: Sequence[int] | None = None,
    start: int = 0,
    count: int | None = None,
) -> Iterator[TrainingSample]:
    """Endless (or ``count``-long) deterministic stream of :class:`TrainingSample`; no disk I/O.

    Sample ``n`` depends only on ``(seed, n)``, so a stream can resume at ``start``.
    ``identity_indices`` restricts identities to those indices of :func:`identity_for`'s space
    (e.g. disjoint ranges for train/test); by default every sample draws fresh identities.
    """
    if not 0.0 <= cross_probability <= 1.0:
        raise ValueError("cross_probability must be in [0, 1]")
    pool = None if identity_indices is None else [int(i) for i in identity_indices]
    if pool is not None and (not pool or (cross_probability > 0 and len(set(pool)) < 2)):
        raise ValueError("identity_indices needs at least two distinct identities for cross pairs")
    n = start
    while count is None or n < start + count:
        rng = np.random.default_rng([seed, 3, n])
        if pool is None:
            ident_a = IdentityParams.sample(rng)
        else:
            ia = pool[int(rng.integers(len(pool)))]
            ident_a = identity_for(seed, ia)
        cross = bool(rng.uniform() < cross_probability)
        ident_b = ident_a
        if cross:
            if pool is None:
                ident_b = IdentityParams.sample(rng)
            else:
                others = [i for i in pool if i != ia]
                ident_b = identity_for(seed, others[int(rng.integers(len(others)))])
        track = MotionTrack.random(frames, rng, fps)
        ref_motion = MotionParams.sample(rng)
        target = render_clip(ident_a, track, size)
        driving = render_clip(ident_b, track, size) if cross else target.copy()
        meta = {
            "kind": "cross" if cross else "self",
            "index": n,
            "identity_a": ident_a.to_vector(),
            "identity_b": ident_b.to_vector(),
            "motion": track.to_array(normalized=True).astype(np.float32),
            "reference_motion": ref_motion.to_vector().astype(np.float32),
        }
        yield TrainingSample(render_frame(ident_a, ref_motion, size), driving, target, meta)
        n += 1
