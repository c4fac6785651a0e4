"""Content checks of a job's uploads, run before the submission transaction.

Uploads are judged by what they contain, never by their names: the portrait must decode as an
image with exactly one dominant face, the driving file as a video with a face in its sampled
frames. Both are copied to temporary files while their SHA-256 is computed, within size limits.
Identity checks (the faces match the consent reference photos) produce scores only.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from rest_framework import status

from config.api import ApplicationError
from reenactment.engine import faces, video_io
from reenactment.scratch import scratch_folder
from reenactment.services.jobs import CheckedInput

IMAGE_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}


class InputRejectedError(ApplicationError):
    """An upload cannot be used; ``field`` names which one."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str, *, field: str, code: str = "input_rejected") -> None:
        super().__init__(message, code=code, extra={"field": field})
        self.field = field


@dataclass
class CheckedInputs:
    portrait: CheckedInput
    driving: CheckedInput
    portrait_image: Any = field(repr=False)  # RGB uint8, as loaded (for identity checks)
    workdir: Path = field(repr=False)


def _copy_hashing(source: IO[bytes], dest: Path, *, limit: int, what: str) -> str:
    digest = hashlib.sha256()
    size = 0
    with dest.open("wb") as out:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            size += len(chunk)
            if size > limit:
                raise InputRejectedError(
                    f"The {what} is larger than the limit of {limit // (1 << 20)} MB.",
                    field=what,
                    code="too_large",
                )
            digest.update(chunk)
            out.write(chunk)
    if size == 0:
        raise InputRejectedError(f"The {what} file is empty.", field=what, code="empty")
    return digest.hexdigest()


def _sample_indices(total: int, count: int) -> list[int]:
    if total <= count:
        return list(range(total))
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def _check_driving_faces(path: Path, info: video_io.VideoInfo, backend: faces.FaceBackend) -> int:
    """A face must be visible in most sampled frames (the tracker bridges short gaps later)."""
    samples = _sample_indices(max(info.frame_count, 1), settings.RENDER_DRIVING_FACE_SAMPLES)
    wanted = set(samples)
    seen = found = 0
    for index, frame in enumerate(video_io.iter_frames(path, max_side=640)):
        if index in wanted:
            seen += 1
            found += bool(backend.detect(frame))
        if index >= samples[-1]:
            break
    if seen == 0 or found * 2 < seen:
        raise InputRejectedError(
            f"No face is visible in {seen - found} of {seen} sampled frames of the driving "
            "video; the performer's face must be visible throughout.",
            field="driving",
            code="no_face",
        )
    return found


@contextmanager
def render_job_inputs_check(
    *, portrait: IO[bytes], driving: IO[bytes], backend: faces.FaceBackend | None = None
) -> Iterator[CheckedInputs]:
    """Validate and hash both uploads in a scratch folder (removed when the block ends)."""
    backend = backend or faces.get_face_backend("dlib")
    with scratch_folder("inputs") as workdir:
        portrait_raw = workdir / "portrait.upload"
        portrait_sha = _copy_hashing(
            portrait, portrait_raw, limit=settings.RENDER_MAX_PORTRAIT_BYTES, what="portrait"
        )
        try:
            image, report = video_io.load_image(
                portrait_raw, max_side=settings.RENDER_MAX_PORTRAIT_SIDE
            )
        except video_io.ImageInputError as exc:
            raise InputRejectedError(str(exc), field="portrait", code=exc.code) from exc
        try:
            detection = faces.find_single_face(image, backend)
        except faces.NoFaceError as exc:
            raise InputRejectedError(
                f"The portrait shows no face ({exc}).", field="portrait", code="no_face"
            ) from exc
        except faces.MultipleFacesError as exc:
            raise InputRejectedError(
                f"The portrait must show one person: {exc}.",
                field="portrait",
                code="multiple_faces",
            ) from exc
        from PIL import Image

        with Image.open(portrait_raw) as opened:
            image_format = opened.format or "PNG"
        portrait_info = {
            "width": report.size[0],
            "height": report.size[1],
            "original_size": list(report.original_size),
            "downscaled": report.downscaled,
            "note": report.message if report.downscaled else "",
            "format": image_format,
            "face_box": list(detection.box.as_tuple()),
        }

        driving_raw = workdir / "driving.upload"
        driving_sha = _copy_hashing(
            driving, driving_raw, limit=settings.RENDER_MAX_DRIVING_BYTES, what="driving"
        )
        try:
            info = video_io.probe_video(driving_raw)
        except video_io.VideoInputError as exc:
            raise InputRejectedError(str(exc), field="driving", code=exc.code) from exc
        if info.duration > settings.RENDER_MAX_DRIVING_SECONDS:
            raise InputRejectedError(
                f"The driving video lasts {info.duration:.0f} s; the limit is "
                f"{settings.RENDER_MAX_DRIVING_SECONDS} s.",
                field="driving",
                code="too_long",
            )
        faces_found = _check_driving_faces(driving_raw, info, backend)
        driving_info = {
            "width": info.width,
            "height": info.height,
            "fps": str(info.fps),
            "frames": info.frame_count,
            "frames_exact": info.frame_count_exact,
            "duration": info.duration,
            "has_audio": info.has_audio,
            "codec": info.codec,
            "container": info.container,
            "sampled_frames_with_face": faces_found,
        }
        portrait_path = workdir / f"portrait{IMAGE_EXTENSIONS.get(image_format, '.img')}"
        shutil.move(portrait_raw, portrait_path)
        driving_path = workdir / f"driving{_video_extension(info)}"
        shutil.move(driving_raw, driving_path)
        yield CheckedInputs(
            portrait=CheckedInput(portrait_path, portrait_sha, portrait_path.suffix, portrait_info),
            driving=CheckedInput(driving_path, driving_sha, driving_path.suffix, driving_info),
            portrait_image=image,
            workdir=workdir,
        )


def _video_extension(info: video_io.VideoInfo) -> str:
    container = (info.container or "").lower()
    if "mp4" in container or "mov" in container:
        return ".mp4"
    if "webm" in container or "matroska" in container:
        return ".mkv"
    return ".video"
