"""Dataset-snapshot manifests: the only way training data reaches the trainer.

A snapshot manifest is JSON Lines. The first line is a header describing the snapshot; every other
line is one clip::

    {"snapshot_id": "snap-2025-11-01-a", "exported_at": "2025-11-01T10:00:00Z", "format_version": 1}
    {"path": "clips/id00003/id00003_c001.npz", "sha256": "9f...", "fps": 25.0, "frames": 24,
     "persons": ["synthface:id00003"], "licence_ids": ["synthface-cc0"], "clip_id": "id00003_c001"}

* ``path`` is relative to the manifest's folder (or absolute); ``uri`` may be given instead
  (``file://`` only: the trainer never fetches anything).
* ``sha256`` is the hex digest of the clip file; it is checked on the bytes that are then decoded,
  so a clip is never used unverified (:func:`read_verified_clip`).
* ``persons`` are the ids of the people appearing in the clip and ``licence_ids`` the licences
  under which the platform may train on it; a clip without a licence is refused.
* Optional: ``clip_id``, ``size``, ``format``, ``face_boxes`` (per-frame ``[x0, y0, x1, y1]``
  in pixels, used by the face-centred crop).

The header may instead live in a sidecar ``<manifest stem>.snapshot.json``. Before training, the
snapshot's current status is asked from a :class:`SnapshotStatusChecker` (the platform's registry
implements it); a snapshot withdrawn since its export is refused. The default
:class:`FileSnapshotStatusChecker` reads ``status.json`` next to the manifest and refuses when it
cannot confirm the status.

:func:`convert_synthface_manifest` turns a SynthFace ``manifest.jsonl`` into this format.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

import numpy as np

FORMAT_VERSION = 1
STATUS_FILE = "status.json"
SnapshotStatus = Literal["active", "withdrawn"]
_STATUSES = ("active", "withdrawn")
_HEADER_KEYS = ("snapshot_id", "exported_at")


class ManifestError(ValueError):
    """The manifest is unreadable or malformed; the message names the line."""


class SnapshotWithdrawnError(ManifestError):
    """The snapshot was withdrawn after its export: its data must not be trained on."""


class SnapshotStatusUnknownError(ManifestError):
    """The snapshot's status could not be confirmed (refused rather than assumed active)."""


class ClipIntegrityError(ManifestError):
    """A clip file is missing or its SHA-256 differs from the manifest."""


@runtime_checkable
class SnapshotStatusChecker(Protocol):
    """The platform's view of a snapshot: ``checker(snapshot_id)`` -> ``"active"``/``"withdrawn"``.

    Raise :class:`SnapshotStatusUnknownError` (or return anything else) when unknown.
    """

    def __call__(self, snapshot_id: str) -> str: ...


class FileSnapshotStatusChecker:
    """Reads the status from a JSON file (default: ``status.json`` next to the manifest).

    Accepted shapes: ``{"snapshots": {"<id>": {"status": "withdrawn", ...}}}``,
    ``{"snapshots": {"<id>": "active"}}`` or ``{"<id>": "active"}``.

    Args:
        path: The status file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __call__(self, snapshot_id: str) -> str:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SnapshotStatusUnknownError(
                f"cannot confirm the status of snapshot {snapshot_id!r}: {self.path} is "
                f"missing or unreadable ({exc})"
            ) from exc
        table = data.get("snapshots", data) if isinstance(data, Mapping) else None
        entry = table.get(snapshot_id) if isinstance(table, Mapping) else None
        status = entry.get("status") if isinstance(entry, Mapping) else entry
        if status not in _STATUSES:
            raise SnapshotStatusUnknownError(
                f"{self.path} does not give a status for snapshot {snapshot_id!r}"
            )
        return str(status)


@dataclass(frozen=True)
class ManifestClip:
    """One clip line of a snapshot manifest (``path`` resolved to an absolute file path)."""

    path: Path
    sha256: str
    fps: float
    frames: int
    persons: tuple[str, ...]
    licence_ids: tuple[str, ...]
    clip_id: str
    line: int
    face_boxes: tuple[tuple[float, float, float, float], ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SnapshotManifest:
    """A parsed snapshot manifest. Build it with :func:`read_manifest`."""

    path: Path
    snapshot_id: str
    exported_at: str
    clips: tuple[ManifestClip, ...]
    header: Mapping[str, Any]

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def persons(self) -> tuple[str, ...]:
        return tuple(sorted({p for clip in self.clips for p in clip.persons}))

    @property
    def licence_ids(self) -> tuple[str, ...]:
        return tuple(sorted({lic for clip in self.clips for lic in clip.licence_ids}))


def _resolve_location(entry: Mapping[str, Any], base: Path, where: str) -> Path:
    if "path" in entry:
        raw = Path(str(entry["path"]))
        return raw if raw.is_absolute() else base / raw
    if "uri" in entry:
        parsed = urlparse(str(entry["uri"]))
        if parsed.scheme != "file":
            raise ManifestError(
                f"{where}: only file:// URIs can be read by the trainer, got {entry['uri']!r}"
            )
        return Path(unquote(parsed.path))
    raise ManifestError(f"{where}: a clip needs 'path' or 'uri'")


def _string_list(value: Any, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ManifestError(f"{where}: {key!r} must be a list of non-empty strings")
    return tuple(value)


def _parse_clip(entry: Mapping[str, Any], base: Path, line: int, where: str) -> ManifestClip:
    for key in ("sha256", "fps", "frames", "persons", "licence_ids"):
        if key not in entry:
            raise ManifestError(f"{where}: missing {key!r}")
    digest = entry["sha256"]
    if not isinstance(digest, str) or len(digest) != 64:
        raise ManifestError(f"{where}: 'sha256' must be a 64-character hex digest")
    try:
        int(digest, 16)
    except ValueError as exc:
        raise ManifestError(f"{where}: 'sha256' is not hexadecimal") from exc
    fps, frames = entry["fps"], entry["frames"]
    if not isinstance(fps, int | float) or not fps > 0:
        raise ManifestError(f"{where}: 'fps' must be a positive number")
    if not isinstance(frames, int) or frames < 1:
        raise ManifestError(f"{where}: 'frames' must be a positive integer")
    licences = _string_list(entry["licence_ids"], "licence_ids", where)
    if not licences:
        raise ManifestError(f"{where}: a clip without licence ids cannot be trained on")
    boxes = entry.get("face_boxes")
    if boxes is not None:
        if not isinstance(boxes, list) or len(boxes) != frames:
            raise ManifestError(f"{where}: 'face_boxes' needs one [x0, y0, x1, y1] per frame")
        boxes = tuple(tuple(float(v) for v in box) for box in boxes)
    path = _resolve_location(entry, base, where)
    known = {"path", "uri", "sha256", "fps", "frames", "persons", "licence_ids", "face_boxes"}
    return ManifestClip(
        path=path,
        sha256=digest.lower(),
        fps=float(fps),
        frames=int(frames),
        persons=_string_list(entry["persons"], "persons", where),
        licence_ids=licences,
        clip_id=str(entry.get("clip_id") or path.stem),
        line=line,
        face_boxes=boxes,
        extra={k: v for k, v in entry.items() if k not in known},
    )


def _is_header(entry: Mapping[str, Any]) -> bool:
    return "snapshot_id" in entry and "sha256" not in entry


def read_manifest(
    path: str | os.PathLike[str],
    *,
    status_checker: SnapshotStatusChecker | None = None,
) -> SnapshotManifest:
    """Parse a snapshot manifest and refuse it unless its snapshot is still active.

    Args:
        path: The ``.jsonl`` manifest.
        status_checker: Where the snapshot status comes from; by default ``status.json`` next to
            the manifest (:class:`FileSnapshotStatusChecker`).

    Raises:
        ManifestError: Malformed lines (named by number), no clips, duplicate clips.
        SnapshotWithdrawnError: The snapshot has been withdrawn since its export.
        SnapshotStatusUnknownError: The status cannot be confirmed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from exc
    header: dict[str, Any] | None = None
    clips: list[ManifestClip] = []
    base = path.parent
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            entry = json.loads(raw)
        except ValueError as exc:
            raise ManifestError(f"{where}: not valid JSON ({exc})") from exc
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: expected a JSON object")
        if _is_header(entry):
            if header is not None or clips:
                raise ManifestError(f"{where}: the snapshot header must be the first line")
            header = entry
            continue
        clips.append(_parse_clip(entry, base, number, where))
    if header is None:
        sidecar = path.with_name(path.stem + ".snapshot.json")
        try:
            header = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ManifestError(
                f"{path}: no snapshot header line and no readable sidecar {sidecar.name}"
            ) from exc
        if not isinstance(header, dict):
            raise ManifestError(f"{sidecar}: expected a JSON object")
    for key in _HEADER_KEYS:
        if not isinstance(header.get(key), str) or not header[key]:
            raise ManifestError(f"{path}: the snapshot header needs a non-empty {key!r}")
    if not clips:
        raise ManifestError(f"{path}: the snapshot holds no clips")
    seen: dict[Path, int] = {}
    for clip in clips:
        if clip.path in seen:
            raise ManifestError(
                f"{path.name}:{clip.line}: {clip.path} already listed on line {seen[clip.path]}"
            )
        seen[clip.path] = clip.line

    snapshot_id = str(header["snapshot_id"])
    checker = status_checker or FileSnapshotStatusChecker(base / STATUS_FILE)
    status = checker(snapshot_id)
    if status == "withdrawn":
        raise SnapshotWithdrawnError(
            f"snapshot {snapshot_id!r} (exported {header['exported_at']}) has been withdrawn; "
            "its data must not be used for training"
        )
    if status != "active":
        raise SnapshotStatusUnknownError(f"snapshot {snapshot_id!r} has status {status!r}")
    return SnapshotManifest(
        path=path,
        snapshot_id=snapshot_id,
        exported_at=str(header["exported_at"]),
        clips=tuple(clips),
        header=header,
    )


def verified_clip_bytes(clip: ManifestClip) -> bytes:
    """The clip file's bytes, after checking their SHA-256 against the manifest.

    Raises:
        ClipIntegrityError: Missing file or digest mismatch (the clip is never used).
    """
    try:
        data = clip.path.read_bytes()
    except OSError as exc:
        raise ClipIntegrityError(f"clip {clip.clip_id} ({clip.path}) is unreadable: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != clip.sha256:
        raise ClipIntegrityError(
            f"clip {clip.clip_id} ({clip.path}): SHA-256 mismatch, manifest {clip.sha256}, "
            f"file {actual}; refusing a clip that changed since the snapshot was exported"
        )
    return data


def decode_clip_bytes(data: bytes, suffix: str) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 of an ``.npz`` (``frames`` array) or a video file."""
    import io

    if suffix == ".npz":
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            frames = np.asarray(arrays["frames"])
    else:
        import av

        with av.open(io.BytesIO(data)) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ClipIntegrityError(f"unexpected frame array {frames.shape} {frames.dtype}")
    return frames


def read_verified_clip(clip: ManifestClip) -> np.ndarray:
    """Verify, then decode a clip: ``(T, H, W, 3)`` uint8 with exactly ``clip.frames`` frames."""
    frames = decode_clip_bytes(verified_clip_bytes(clip), clip.path.suffix.lower())
    if frames.shape[0] != clip.frames:
        raise ClipIntegrityError(
            f"clip {clip.clip_id}: manifest says {clip.frames} frames, file holds {frames.shape[0]}"
        )
    return frames


def write_status_file(
    folder: str | os.PathLike[str], statuses: Mapping[str, SnapshotStatus]
) -> Path:
    """Write (or update) the default ``status.json`` in ``folder``."""
    path = Path(folder) / STATUS_FILE
    data: dict[str, Any] = {"snapshots": {}}
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        data.setdefault("snapshots", {})
    for snapshot_id, status in statuses.items():
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}")
        data["snapshots"][snapshot_id] = {"status": status}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def convert_synthface_manifest(
    dataset_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    snapshot_id: str,
    exported_at: str | None = None,
    licence_id: str = "synthface-cc0-1.0",
    kinds: Sequence[str] = ("clip",),
    write_status: bool = True,
) -> Path:
    """Convert a SynthFace ``manifest.jsonl`` into a snapshot manifest.

    Paths are rewritten relative to ``out_path``'s folder; every SynthFace identity becomes the
    person ``synthface:<identity_id>``. With ``write_status`` the default ``status.json`` marks
    the new snapshot active.

    Args:
        dataset_dir: A folder written by :func:`~reenactment.engine.synthface.generate_dataset`.
        out_path: The snapshot manifest to write.
        snapshot_id: Id of the new snapshot.
        exported_at: ISO timestamp (now, UTC, when omitted).
        licence_id: Licence id recorded on every clip (the registry's id of the CC0 licence).
        kinds: SynthFace entry kinds to include: ``"clip"`` (one identity performing its own
            motion) and ``"cross"`` (identity A performing the motion of a clip of B; the line
            names that clip as ``driving_clip_id``, so the trainer can drive A's frames with B's
            for cross-identity training - ground truth only synthetic data has).
        write_status: Also write ``status.json`` next to ``out_path``.
    """
    dataset_dir = Path(dataset_dir)
    out_path = Path(out_path)
    source = dataset_dir / "manifest.jsonl"
    lines = []
    for raw in source.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        entry = json.loads(raw)
        if entry.get("kind", "clip") not in kinds:
            continue
        media = (dataset_dir / entry["path"]).resolve()
        rel = os.path.relpath(media, out_path.parent.resolve())
        persons = [f"synthface:{entry['identity_id']}"] if "identity_id" in entry else []
        clip = {
            "path": rel,
            "sha256": entry["sha256"],
            "fps": entry["fps"],
            "frames": entry["frames"],
            "persons": persons,
            "licence_ids": [licence_id],
            "clip_id": entry.get("clip_id", Path(entry["path"]).stem),
            "size": entry.get("size"),
            "format": entry.get("format"),
        }
        if entry.get("kind") == "cross":
            clip["driving_clip_id"] = entry["driving_clip_id"]
        lines.append(json.dumps(clip, sort_keys=True))
    header = {
        "snapshot_id": snapshot_id,
        "exported_at": exported_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "format_version": FORMAT_VERSION,
        "source": "synthface",
        "generator": _synthface_generator(dataset_dir),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text("\n".join([json.dumps(header, sort_keys=True), *lines]) + "\n", encoding="utf-8")
    os.replace(tmp, out_path)
    if write_status:
        write_status_file(out_path.parent, {snapshot_id: "active"})
    return out_path


def _synthface_generator(dataset_dir: Path) -> str | None:
    try:
        card = json.loads((dataset_dir / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    generator = card.get("generator")
    return str(generator) if generator is not None else None


__all__ = [
    "FORMAT_VERSION",
    "STATUS_FILE",
    "ClipIntegrityError",
    "FileSnapshotStatusChecker",
    "ManifestClip",
    "ManifestError",
    "SnapshotManifest",
    "SnapshotStatusChecker",
    "SnapshotStatusUnknownError",
    "SnapshotWithdrawnError",
    "convert_synthface_manifest",
    "decode_clip_bytes",
    "read_manifest",
    "read_verified_clip",
    "verified_clip_bytes",
    "write_status_file",
]
