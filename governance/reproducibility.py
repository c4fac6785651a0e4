"""Reproducibility manifests of render jobs, and the comparison of a re-run with the original.

Governance owns the format; the jobs side builds one manifest per job with
``reproducibility_manifest_build`` when the job starts, stores it with the job, and
``manage.py job_reproduce`` re-runs the job from it and calls ``reproducibility_compare``.

A manifest (format version 1) is a JSON object::

    {
      "format": "governed-reenactment/reproducibility", "format_version": 1,
      "model": {"id": 7, "name": "xnemo-synthface", "version": "1.0", "layout": "...",
                "weights_sha256": "<fingerprint>", "files": {"<relative path>": "<sha256>"},
                "is_demonstration": false},
      "code_version": {"git_commit": "<40 hex>" | null, "git_dirty": null,
                       "package": "governed-reenactment", "package_version": "0.1.0"},
      "seeds": {"<name>": <int>, ...},            # every seed the run used (default: the
                                                   # parameters' "seed" and "*_seed")
      "parameters": {"<name>": <JSON>, ...},       # every parameter the engine was called with
      "inputs": {"<name>": "<sha256>", ...},       # every input file's hash
      "runtime": {"torch": "...", "device": "cpu", "dtype": "float32", ...},  # informational
      "created_at": "2026-11-24T00:00:00.000000+00:00"
    }

Everything except ``runtime`` and ``created_at`` must be equal for two runs to be comparable;
``runtime`` differences (another GPU, another torch build) are reported, because they explain
small numerical differences, but do not make the runs incomparable.

The output comparison decodes both videos with PyAV directly (governance never imports the
engine's ``video_io``) and reports frame-wise max/mean absolute difference and PSNR.
"""

from __future__ import annotations

import hashlib
import math
import platform
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError
from django.utils import timezone

from governance.models import ModelVersion
from governance.models.audit import canonical_json, canonical_timestamp
from governance.services.audit import audit_payload_normalize

MANIFEST_FORMAT = "governed-reenactment/reproducibility"
MANIFEST_VERSION = 1
PACKAGE = "governed-reenactment"
REPO_ROOT = Path(__file__).resolve().parent.parent
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Fields that must match for two runs to be the same job; ``runtime`` is informational.
COMPARED_FIELDS = ("model", "code_version", "seeds", "parameters", "inputs")


def _git_commit(root: Path) -> str | None:
    """The checked-out commit, read from ``.git`` without running git (absent in images)."""
    git = root / ".git"
    if git.is_file():  # a worktree: "gitdir: <path>"
        text = git.read_text(encoding="utf-8").strip()
        if not text.startswith("gitdir:"):
            return None
        git = (root / text.removeprefix("gitdir:").strip()).resolve()
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if _COMMIT.match(head):
        return head
    if not head.startswith("ref:"):
        return None
    ref = head.removeprefix("ref:").strip()
    common = git
    if (git / "commondir").is_file():
        common = (git / (git / "commondir").read_text(encoding="utf-8").strip()).resolve()
    for base in (git, common):
        try:
            value = (base / ref).read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if _COMMIT.match(value):
            return value
    try:
        packed = (common / "packed-refs").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in packed.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == ref and _COMMIT.match(parts[0]):
            return parts[0]
    return None


@lru_cache(maxsize=1)
def code_version_current() -> dict[str, object]:
    """The code this process runs: the git commit when the source is a checkout, and the
    package version (always)."""
    try:
        package_version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        package_version = "unknown"
    return {
        "git_commit": _git_commit(REPO_ROOT),
        "git_dirty": None,  # not knowable without running git; the commit is what is pinned
        "package": PACKAGE,
        "package_version": package_version,
    }


def _model_section(model_version: ModelVersion) -> dict[str, object]:
    return {
        "id": model_version.pk,
        "name": model_version.name,
        "version": model_version.version,
        "layout": model_version.layout,
        "weights_sha256": model_version.weights_sha256,
        "files": dict(
            model_version.weight_files.order_by("relative_path").values_list(
                "relative_path", "sha256"
            )
        ),
        "is_demonstration": model_version.is_demonstration,
    }


def seeds_from_parameters(parameters: Mapping[str, object]) -> dict[str, int]:
    """The seeds among an engine call's parameters: ``seed`` and every ``*_seed``."""
    return {
        key: value
        for key, value in parameters.items()
        if (key == "seed" or key.endswith("_seed"))
        and isinstance(value, int)
        and not isinstance(value, bool)
    }


def runtime_current(device: str | None = None) -> dict[str, object]:
    """Where a run happens (informational): Python, torch and device. Read from package
    metadata, so governance imports no torch."""
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {
        "python": platform.python_version(),
        "torch": torch_version,
        "device": str(device) if device is not None else None,
    }


def reproducibility_manifest_build(
    *,
    model_version: ModelVersion,
    parameters: Mapping[str, object],
    inputs: Mapping[str, str],
    seeds: Mapping[str, int] | None = None,
    device: str | None = None,
    code_version: Mapping[str, object] | None = None,
    runtime: Mapping[str, object] | None = None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """The manifest of one run, validated and normalised exactly as it will read back from a
    JSON column (so a stored manifest compares equal to the one built).

    ``seeds`` default to the seeds among ``parameters`` (``seed``, ``*_seed``); ``runtime``
    defaults to this process's Python and torch versions and ``device``.
    """
    manifest = audit_payload_normalize(
        {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "model": _model_section(model_version),
            "code_version": dict(code_version or code_version_current()),
            "seeds": dict(seeds if seeds is not None else seeds_from_parameters(parameters)),
            "parameters": dict(parameters),
            "inputs": dict(inputs),
            "runtime": dict(runtime if runtime is not None else runtime_current(device)),
            "created_at": canonical_timestamp(created_at or timezone.now()),
        }
    )
    reproducibility_manifest_validate(manifest)
    return manifest


def reproducibility_manifest_validate(manifest: Mapping[str, Any]) -> None:
    """``ValidationError`` naming every problem of a manifest."""
    errors: dict[str, list[str]] = {}

    def add(key: str, message: str) -> None:
        errors.setdefault(key, []).append(message)

    if manifest.get("format") != MANIFEST_FORMAT:
        add("format", f"Expected {MANIFEST_FORMAT!r}.")
    if manifest.get("format_version") != MANIFEST_VERSION:
        add("format_version", f"Only version {MANIFEST_VERSION} is understood.")
    model = manifest.get("model")
    if not isinstance(model, Mapping):
        add("model", "Missing.")
    else:
        if not isinstance(model.get("weights_sha256"), str) or not _SHA256.match(
            model["weights_sha256"]
        ):
            add("model", "weights_sha256 must be a SHA-256.")
        files = model.get("files")
        if not isinstance(files, Mapping) or not files:
            add("model", "files must map each weight file to its SHA-256.")
        elif not all(isinstance(v, str) and _SHA256.match(v) for v in files.values()):
            add("model", "Every file hash must be a SHA-256.")
    code = manifest.get("code_version")
    if not isinstance(code, Mapping) or not (code.get("git_commit") or code.get("package_version")):
        add("code_version", "Give the git commit or the package version.")
    seeds = manifest.get("seeds")
    if not isinstance(seeds, Mapping) or not seeds:
        add("seeds", "Record every seed the run used (at least one).")
    elif not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds.values()):
        add("seeds", "Seeds are integers.")
    if not isinstance(manifest.get("parameters"), Mapping):
        add("parameters", "Must be an object.")
    inputs = manifest.get("inputs")
    if not isinstance(inputs, Mapping) or not inputs:
        add("inputs", "Record the hash of every input file.")
    elif not all(isinstance(v, str) and _SHA256.match(v) for v in inputs.values()):
        add("inputs", "Every input hash must be a SHA-256.")
    if errors:
        raise ValidationError(errors)


def reproducibility_manifest_sha256(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON (to pin it in an audit event)."""
    return hashlib.sha256(canonical_json(dict(manifest))).hexdigest()


@dataclass(frozen=True)
class ManifestDifference:
    path: str
    a: object
    b: object


def _diff(a: object, b: object, path: str, out: list[ManifestDifference]) -> None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b)):
            _diff(a.get(key), b.get(key), f"{path}.{key}" if path else str(key), out)
    elif a != b:
        out.append(ManifestDifference(path, a, b))


def reproducibility_manifest_diff(
    manifest_a: Mapping[str, Any], manifest_b: Mapping[str, Any]
) -> tuple[list[ManifestDifference], list[ManifestDifference]]:
    """``(differences that make the runs different jobs, runtime differences)``. The model's
    database id is ignored (the weights' hashes are what count)."""
    pinned: list[ManifestDifference] = []
    for name in COMPARED_FIELDS:
        _diff(manifest_a.get(name), manifest_b.get(name), name, pinned)
    pinned = [d for d in pinned if d.path != "model.id"]
    runtime: list[ManifestDifference] = []
    _diff(manifest_a.get("runtime"), manifest_b.get("runtime"), "runtime", runtime)
    return pinned, runtime


# --------------------------------------------------------------------------------------------
# Output comparison
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameDifference:
    index: int
    max_abs: int
    mean_abs: float
    psnr: float  # inf when identical


@dataclass
class VideoComparison:
    frames_a: int
    frames_b: int
    size_a: tuple[int, int]
    size_b: tuple[int, int]
    sha256_a: str
    sha256_b: str
    frames: list[FrameDifference] = field(default_factory=list)

    @property
    def comparable(self) -> bool:
        return self.frames_a == self.frames_b and self.size_a == self.size_b

    @property
    def byte_identical(self) -> bool:
        return self.sha256_a == self.sha256_b

    @property
    def max_abs(self) -> int:
        return max((f.max_abs for f in self.frames), default=0)

    @property
    def min_psnr(self) -> float:
        return min((f.psnr for f in self.frames), default=math.inf)

    @property
    def identical_frames(self) -> bool:
        return self.comparable and self.max_abs == 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _decode_rgb(path: Path) -> list[np.ndarray]:
    import av  # PyAV, used directly: governance does not import the engine's video_io

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def video_frames_compare(path_a: Path | str, path_b: Path | str) -> VideoComparison:
    """Decode both videos and compare them frame by frame (8-bit RGB)."""
    path_a, path_b = Path(path_a), Path(path_b)
    frames_a, frames_b = _decode_rgb(path_a), _decode_rgb(path_b)
    size_a = (frames_a[0].shape[1], frames_a[0].shape[0]) if frames_a else (0, 0)
    size_b = (frames_b[0].shape[1], frames_b[0].shape[0]) if frames_b else (0, 0)
    result = VideoComparison(
        frames_a=len(frames_a),
        frames_b=len(frames_b),
        size_a=size_a,
        size_b=size_b,
        sha256_a=_sha256(path_a),
        sha256_b=_sha256(path_b),
    )
    if size_a != size_b:
        return result
    for index, (a, b) in enumerate(zip(frames_a, frames_b, strict=False)):
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        mse = float(np.mean(diff.astype(np.float64) ** 2))
        psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
        result.frames.append(FrameDifference(index, int(diff.max()), float(diff.mean()), psnr))
    return result


@dataclass
class ReproducibilityReport:
    """Whether a re-run reproduced a job: the manifests' differences and the outputs'."""

    manifest_differences: list[ManifestDifference]
    runtime_differences: list[ManifestDifference]
    video: VideoComparison | None
    tolerance: int

    @property
    def same_job(self) -> bool:
        return not self.manifest_differences

    @property
    def reproduced(self) -> bool:
        """Same job, and every frame within ``tolerance`` (max absolute 8-bit difference)."""
        return (
            self.same_job
            and self.video is not None
            and self.video.comparable
            and self.video.max_abs <= self.tolerance
        )

    def to_dict(self) -> dict[str, object]:
        video: dict[str, object] | None = None
        if self.video is not None:
            video = {
                "frames": [self.video.frames_a, self.video.frames_b],
                "size": [list(self.video.size_a), list(self.video.size_b)],
                "sha256": [self.video.sha256_a, self.video.sha256_b],
                "byte_identical": self.video.byte_identical,
                "comparable": self.video.comparable,
                "max_abs": self.video.max_abs,
                "min_psnr": None if math.isinf(self.video.min_psnr) else self.video.min_psnr,
                "per_frame": [
                    {**asdict(f), "psnr": None if math.isinf(f.psnr) else f.psnr}
                    for f in self.video.frames
                ],
            }
        return {
            "same_job": self.same_job,
            "reproduced": self.reproduced,
            "tolerance": self.tolerance,
            "manifest_differences": [asdict(d) for d in self.manifest_differences],
            "runtime_differences": [asdict(d) for d in self.runtime_differences],
            "video": video,
        }

    def describe(self) -> list[str]:
        lines = [f"{'REPRODUCED' if self.reproduced else 'NOT REPRODUCED'}"]
        lines += [f"  differs: {d.path}: {d.a!r} != {d.b!r}" for d in self.manifest_differences]
        lines += [f"  runtime: {d.path}: {d.a!r} != {d.b!r}" for d in self.runtime_differences]
        if self.video is not None:
            v = self.video
            lines.append(
                f"  video: {v.frames_a} vs {v.frames_b} frames, {v.size_a} vs {v.size_b}, "
                f"byte-identical {v.byte_identical}, max abs diff {v.max_abs}, "
                f"min PSNR {'inf' if math.isinf(v.min_psnr) else f'{v.min_psnr:.2f} dB'}"
            )
        return lines


def reproducibility_compare(
    manifest_a: Mapping[str, Any],
    manifest_b: Mapping[str, Any],
    output_a_path: Path | str | None,
    output_b_path: Path | str | None,
    *,
    tolerance: int = 0,
) -> ReproducibilityReport:
    """Compare a job's manifest and output with a re-run's. ``tolerance`` is the largest
    8-bit difference per pixel still counted as reproduced (0: exact frames)."""
    pinned, runtime = reproducibility_manifest_diff(manifest_a, manifest_b)
    video = (
        video_frames_compare(output_a_path, output_b_path)
        if output_a_path is not None and output_b_path is not None
        else None
    )
    return ReproducibilityReport(pinned, runtime, video, tolerance)
