"""Video and image input/output for the reenactment engine (PyAV + Pillow, no Django).

The official X-NeMo release reads the driving video with decord, keeps only the first 500
frames, and always writes 25 fps without audio (xnemo-spec.md section 4.0). Users of peer
projects ask for the opposite: long videos that do not exhaust memory, the driving audio kept,
and the driving frame rate respected (peers.md section 1.3, items 3 and 6). This module is the
part of the engine that makes that possible:

* :func:`probe_video` validates a driving video cheaply (container, codec, size, aspect ratio,
  at least one decodable frame) and describes it as a :class:`VideoInfo`.
* :func:`iter_frames` streams RGB frames one at a time, with rotation metadata and
  non-square pixels applied and an optional size limit; memory does not grow with length.
* :class:`VideoWriter` streams frames into an H.264/yuv420p MP4 at the driving video's exact
  frame rate, muxes the driving audio (re-encoded to AAC, trimmed or padded to the video's
  length), and only ever makes a *complete* file appear at the destination.
* :func:`load_image` reads a portrait (JPEG/PNG/WebP/BMP) with EXIF orientation applied and
  reports any downscaling it did.
* :func:`make_test_clip` synthesizes small clips (optionally with a sine tone) for tests.

Every input problem is raised as a :class:`MediaInputError` subclass whose message is written
for a person and whose ``code`` is stable for programs.

Conventions used throughout: frames are ``numpy.ndarray`` of shape ``(height, width, 3)``,
dtype ``uint8``, RGB order, C-contiguous. Sizes given as tuples are ``(width, height)``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast

import av
import av.error
import numpy as np
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.video.reformatter import ColorRange, Colorspace, Interpolation
from av.video.stream import VideoStream
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "AAC_SAMPLE_RATES",
    "DEFAULT_IMAGE_MAX_SIDE",
    "MAX_ASPECT_RATIO",
    "MAX_FPS",
    "MAX_VIDEO_SIDE",
    "MIN_FPS",
    "MIN_IMAGE_SIDE",
    "MIN_VIDEO_SIDE",
    "SUPPORTED_IMAGE_FORMATS",
    "SUPPORTED_VIDEO_CONTAINERS",
    "ImageInputError",
    "ImageLoadReport",
    "MediaError",
    "MediaInputError",
    "VideoInfo",
    "VideoInputError",
    "VideoOutputError",
    "VideoWriter",
    "fit_within",
    "iter_frames",
    "load_image",
    "make_test_clip",
    "orient_frame",
    "orientation_from_display_matrix",
    "probe_video",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
FrameRate = Fraction | int | float

# --------------------------------------------------------------------------------------------
# Limits. Module constants (not magic numbers in the code) so callers can quote them to users.
# --------------------------------------------------------------------------------------------

#: Longest side / shortest side. 4:1 admits every real camera format (9:16 phone video,
#: 21:9 and 32:9 ultrawide) while rejecting strips such as 640x16, where no face can fit.
MAX_ASPECT_RATIO = 4.0
#: Smallest accepted side of a driving video, in display pixels.
MIN_VIDEO_SIDE = 32
#: Largest accepted side of a driving video. Larger streams exceed every H.264 level and are
#: almost certainly not camera footage; use ``iter_frames(max_side=...)`` to shrink real 4K/8K.
MAX_VIDEO_SIDE = 8192
#: Smallest accepted side of a portrait image: below this no usable 512 px face crop exists.
MIN_IMAGE_SIDE = 64
#: Portraits whose longer side exceeds this are downscaled on load (and the report says so):
#: 4096 px is far above the 512 px the network sees, and bounds memory for 50 MP phone photos.
DEFAULT_IMAGE_MAX_SIDE = 4096
#: Accepted frame-rate range. Outside it the container's timing is almost certainly broken
#: (FFmpeg reports e.g. 90000 fps for some streams with bogus timestamps).
MIN_FPS = 1
MAX_FPS = 240

#: FFmpeg demuxer names accepted for driving videos. Image demuxers (``png_pipe``,
#: ``image2``, ``gif``...) are deliberately absent: a still image is not a driving video.
SUPPORTED_VIDEO_CONTAINERS = frozenset(
    {"mov", "mp4", "m4a", "3gp", "3g2", "matroska", "webm", "avi", "mpegts", "flv", "asf"}
)
#: Pillow format names accepted for portraits.
SUPPORTED_IMAGE_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP"})
#: Sample rates the AAC encoder accepts; other rates are resampled to 48 kHz.
AAC_SAMPLE_RATES = frozenset(
    {96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000}
)

# A run of this many packets that the decoder rejects outright is not an "isolated" glitch;
# the stream is treated as undecodable from that point on.
_MAX_CONSECUTIVE_DECODE_ERRORS = 8
# Frames that may go missing (relative to the container's exact frame count) before a video
# counts as truncated: isolated dropped packets are tolerated, a missing tail is not.
_MISSING_FRAMES_TOLERANCE = 2
_MISSING_FRAMES_TOLERANCE_RATIO = 0.01
# Frame rates with denominators above this are averaged rates of variable-frame-rate files
# (e.g. 1800000/60061); they are reduced to the nearest fraction with a small denominator
# (error < 1e-6 relative) so that the output's time base stays sane.
_MAX_FPS_DENOMINATOR = 1001


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class MediaError(Exception):
    """Base class of every error this module raises on purpose."""


class MediaInputError(MediaError, ValueError):
    """An input file cannot be used. ``str(error)`` is meant for the person who supplied it.

    ``code`` is a stable, machine-readable reason (e.g. ``"unreadable"``, ``"no_video_stream"``,
    ``"zero_frames"``, ``"unsupported_format"``, ``"aspect_ratio"``, ``"too_small"``,
    ``"too_large"``, ``"truncated"``, ``"decode_failed"``, ``"not_found"``).
    """

    def __init__(self, message: str, *, path: PathLike | None = None, code: str = "invalid"):
        super().__init__(message)
        self.path = Path(path) if path is not None else None
        self.code = code


class VideoInputError(MediaInputError):
    """A video (driving clip or audio source) is unusable."""


class ImageInputError(MediaInputError):
    """A portrait image is unusable."""


class VideoOutputError(MediaError, RuntimeError):
    """The output video could not be produced (missing encoder, nothing written, I/O)."""


def _describe_av_error(exc: BaseException) -> str:
    """FFmpeg's own wording, without the errno noise, for inclusion in user messages."""
    if isinstance(exc, av.error.FFmpegError):
        text = exc.strerror or str(exc)
        # PyAV attaches FFmpeg's last log line (e.g. "moov atom not found") when logging is on.
        log = getattr(exc, "log", None)
        if isinstance(log, tuple) and len(log) == 2 and isinstance(log[1], tuple):
            detail = str(log[1][-1]).strip()
            if detail:
                text = f"{text} ({detail})"
        return text
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------

OrientOp = Literal[
    "identity", "rot90cw", "rot90ccw", "rot180", "hflip", "vflip", "transpose", "transverse"
]

# (clockwise rotation, mirrored) for each operation: rotate first, then flip left-right.
_OP_TO_ROTATION: dict[str, tuple[int, bool]] = {
    "identity": (0, False),
    "rot90cw": (90, False),
    "rot180": (180, False),
    "rot90ccw": (270, False),
    "hflip": (0, True),
    "transpose": (90, True),
    "vflip": (180, True),
    "transverse": (270, True),
}


def fit_within(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Size ``(w, h)`` scaled so the longer side is at most ``max_side`` (never enlarged).

    Aspect ratio is kept; each side is rounded to the nearest pixel and is at least 1.
    """
    if max_side is None or max(width, height) <= max_side:
        return width, height
    if max_side < 1:
        raise ValueError(f"max_side must be a positive integer, got {max_side}")
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def orientation_from_display_matrix(matrix: tuple[int, ...] | None) -> OrientOp:
    """The pixel operation that displays a frame carrying FFmpeg display matrix ``matrix``.

    ``matrix`` is the 9 int32 values of ``AV_FRAME_DATA_DISPLAYMATRIX`` (16.16 fixed point).
    The decision table is the one FFmpeg's own command line uses for ``-autorotate`` so that
    we orient frames exactly as ``ffmpeg``/``ffplay`` (and phone galleries) show them.
    Rotations that are not a multiple of 90 degrees are ignored with a warning: they do not
    occur in camera footage and cannot be applied without resampling.
    """
    if matrix is None:
        return "identity"
    if len(matrix) != 9:
        raise ValueError("a display matrix has exactly 9 elements")
    a, b, _, c, d, _, _, _, _ = (v / 65536.0 for v in matrix)
    scale0, scale1 = math.hypot(a, c), math.hypot(b, d)
    if scale0 == 0.0 or scale1 == 0.0:
        return "identity"
    # av_display_rotation_get(): counter-clockwise angle; FFmpeg's CLI negates it (clockwise)
    # and normalises into [0, 360).
    ccw = -math.degrees(math.atan2(b / scale1, a / scale0))
    theta = float(-round(ccw))
    theta -= 360.0 * math.floor(theta / 360.0 + 0.9 / 360.0)
    if abs(theta - 90) < 1.0:
        return "transpose" if matrix[3] > 0 else "rot90cw"
    if abs(theta - 180) < 1.0:
        hflip, vflip = matrix[0] < 0, matrix[4] < 0
        if hflip and vflip:
            return "rot180"
        return "hflip" if hflip else ("vflip" if vflip else "identity")
    if abs(theta - 270) < 1.0:
        return "transverse" if matrix[3] < 0 else "rot90ccw"
    if abs(theta) > 1.0:
        logger.warning("ignoring display rotation of %.1f degrees (not a right angle)", theta)
        return "identity"
    return "vflip" if matrix[4] < 0 else "identity"


def orient_frame(frame: np.ndarray, op: OrientOp) -> np.ndarray:
    """Apply orientation ``op`` (see :func:`orientation_from_display_matrix`) to an HxWxC array.

    Returns a C-contiguous array (a copy unless ``op`` is ``"identity"`` and ``frame`` is
    already contiguous) so callers can hand it straight to torch or PyAV.
    """
    if op == "identity":
        out = frame
    elif op == "rot90cw":
        out = np.rot90(frame, -1)
    elif op == "rot90ccw":
        out = np.rot90(frame, 1)
    elif op == "rot180":
        out = frame[::-1, ::-1]
    elif op == "hflip":
        out = frame[:, ::-1]
    elif op == "vflip":
        out = frame[::-1]
    elif op == "transpose":
        out = frame.swapaxes(0, 1)
    elif op == "transverse":
        out = frame[::-1, ::-1].swapaxes(0, 1)
    else:
        raise ValueError(f"unknown orientation {op!r}")
    return np.ascontiguousarray(out)


def _swaps_axes(op: OrientOp) -> bool:
    return op in ("rot90cw", "rot90ccw", "transpose", "transverse")


def _display_matrix_of(frame: av.VideoFrame) -> tuple[int, ...] | None:
    """The display matrix the decoder attached to ``frame`` (copied from the stream)."""
    # PyAV's type stub mistypes this container; at runtime it iterates SideData objects.
    for side_data in cast(Iterable[Any], frame.side_data):
        if side_data.type.name == "DISPLAYMATRIX":
            raw = bytes(side_data)
            if len(raw) >= 36:
                return struct.unpack("=9i", raw[:36])
    return None


def _aspect_error(width: int, height: int, limit: float) -> str | None:
    ratio = max(width, height) / max(1, min(width, height))
    if ratio <= limit:
        return None
    gcd = math.gcd(width, height) or 1
    return (
        f"aspect ratio {width // gcd}:{height // gcd} ({width}x{height}, {ratio:.1f}:1) is "
        f"outside the supported range (at most {limit:g}:1 in either orientation)"
    )


def _normalise_fps(rate: FrameRate) -> Fraction:
    """Exact rational frame rate; floats and long averages become small-denominator fractions.

    ``30000/1001`` stays ``30000/1001``; the float 29.97 becomes ``2997/100`` (pass the
    Fraction from :class:`VideoInfo` to keep NTSC rates exact).
    """
    if isinstance(rate, bool) or not isinstance(rate, Fraction | int | float):
        raise TypeError(f"fps must be a Fraction, int or float, got {type(rate).__name__}")
    if isinstance(rate, float):
        if not math.isfinite(rate):
            raise ValueError(f"fps must be finite, got {rate}")
        fraction = Fraction(rate)
    else:
        fraction = Fraction(rate)
    if fraction.denominator > _MAX_FPS_DENOMINATOR:
        fraction = fraction.limit_denominator(_MAX_FPS_DENOMINATOR)
    if fraction <= 0:
        raise ValueError(f"fps must be positive, got {rate}")
    return fraction


# --------------------------------------------------------------------------------------------
# Probing and reading video
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learned about a driving video.

    ``width``/``height`` are the *display* size: the size of the frames :func:`iter_frames`
    yields without ``max_side``, i.e. after rotation metadata and non-square pixels are
    applied. ``coded_width``/``coded_height`` are the size stored in the bitstream.
    """

    path: Path
    container: str
    width: int
    height: int
    coded_width: int
    coded_height: int
    #: Exact rational rate when the container has one (``Fraction(30000, 1001)`` for NTSC).
    #: For variable-frame-rate files this is the average rate, so ``frame_count / fps`` is the
    #: real duration and audio stays in sync over the whole clip.
    fps: Fraction
    frame_count: int
    #: True when ``frame_count`` comes from the container's sample index (MP4/MOV); False when
    #: it is estimated as duration x fps (Matroska/WebM, MPEG-TS...).
    frame_count_exact: bool
    duration: float
    codec: str
    pixel_format: str | None
    #: Clockwise rotation (0/90/180/270) the display matrix asks for: 90 for a phone held
    #: upright. ``mirrored`` means the picture is then flipped left-right.
    rotation: int
    mirrored: bool
    sample_aspect_ratio: Fraction
    has_audio: bool
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_channels: int | None

    def output_size(self, max_side: int | None = None) -> tuple[int, int]:
        """``(width, height)`` of the frames ``iter_frames(path, max_side=max_side)`` yields."""
        return fit_within(self.width, self.height, max_side)


@dataclass
class _OpenVideo:
    """A validated, open input container and the facts needed to stream it."""

    container: InputContainer
    stream: VideoStream
    fps: Fraction
    frame_count: int
    frame_count_exact: bool
    duration: float
    sar: Fraction
    audio: AudioStream | None


def _first_video_stream(container: InputContainer) -> VideoStream | None:
    for stream in container.streams.video:
        # Cover art in music files is a one-frame "video" stream flagged attached_pic.
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue
        return stream
    return None


def _first_audio_stream(container: InputContainer) -> AudioStream | None:
    streams = list(container.streams.audio)
    for stream in streams:
        if stream.disposition & av.stream.Disposition.default:
            return stream
    return streams[0] if streams else None


def _open_video(path: Path) -> _OpenVideo:
    """Open ``path`` and validate everything that can be checked without decoding."""
    name = path.name
    if not path.exists():
        raise VideoInputError(f"{name}: file not found", path=path, code="not_found")
    if not path.is_file():
        raise VideoInputError(f"{name}: not a regular file", path=path, code="unreadable")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoInputError(
            f"{name}: not a video or unreadable (damaged, incomplete or not a media file): "
            f"{_describe_av_error(exc)}",
            path=path,
            code="unreadable",
        ) from exc
    try:
        stream = _first_video_stream(container)
        audio = _first_audio_stream(container)
        if stream is None:
            hint = "audio-only file?" if audio is not None else "empty or not a video?"
            raise VideoInputError(
                f"{name}: contains no video stream ({hint})", path=path, code="no_video_stream"
            )
        demuxers = set(container.format.name.split(","))
        if not demuxers & SUPPORTED_VIDEO_CONTAINERS:
            still = any(d.endswith("_pipe") or d in ("image2", "gif") for d in demuxers)
            raise VideoInputError(
                f"{name}: unsupported format {container.format.name!r}"
                + (" (a still or animated image, not a video)" if still else "")
                + "; use MP4, MOV, MKV, WebM or AVI",
                path=path,
                code="unsupported_format",
            )
        codec_context = stream.codec_context
        if codec_context is None or codec_context.codec is None:
            raise VideoInputError(
                f"{name}: unsupported format: no decoder for this video codec",
                path=path,
                code="unsupported_format",
            )
        coded_w, coded_h = codec_context.width, codec_context.height
        if coded_w <= 0 or coded_h <= 0:
            raise VideoInputError(
                f"{name}: not a video or unreadable: the video stream has no picture size",
                path=path,
                code="unreadable",
            )
        sar = stream.sample_aspect_ratio or codec_context.sample_aspect_ratio or Fraction(1)
        if sar <= 0:
            sar = Fraction(1)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or not (MIN_FPS <= rate <= MAX_FPS):
            raise VideoInputError(
                f"{name}: unsupported format: frame rate "
                f"{'unknown' if not rate else f'{float(rate):.3f} fps'} is outside "
                f"{MIN_FPS}-{MAX_FPS} fps",
                path=path,
                code="unsupported_format",
            )
        fps = _normalise_fps(rate)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        if stream.frames and stream.frames > 0:
            frame_count, exact = int(stream.frames), True
        else:
            frame_count, exact = max(0, round(duration * fps)), False
        if duration <= 0 and frame_count > 0:
            duration = float(frame_count / fps)
        _check_complete(path, stream, duration)
        return _OpenVideo(container, stream, fps, frame_count, exact, duration, sar, audio)
    except BaseException:
        container.close()
        raise


def _check_complete(path: Path, stream: VideoStream, duration: float) -> None:
    """Reject a file whose own index points past its end (an upload or copy cut short).

    MP4/MOV (and other indexed containers) list every frame's byte range up front, so a
    missing tail is certain and cheap to detect before any decoding. Such a file is an error,
    not a shorter video: a silently shortened result, with the audio trimmed to match, would
    look like a valid reenactment of the whole clip.
    """
    entries = stream.index_entries
    if entries is None or len(entries) == 0:
        return
    size = path.stat().st_size
    total = len(entries)
    missing = [e.timestamp for e in entries if e.pos >= 0 and e.pos + e.size > size]
    if not missing:
        return
    present = total - len(missing)
    base = stream.start_time or 0
    stops = float((min(missing) - base) * stream.time_base) if stream.time_base else 0.0
    if stream.frames == total:  # one entry per frame (MP4/MOV): say how many frames exist
        where = (
            f"only {present} of {total} frames are in the file; it stops at frame {present} "
            f"({max(0.0, stops):.2f} s of {duration:.2f} s)"
        )
    else:  # sparse index (e.g. Matroska cues): only the time is meaningful
        where = f"it stops at about {max(0.0, stops):.2f} s of {duration:.2f} s"
    raise VideoInputError(
        f"{path.name}: the video is truncated (incomplete upload or copy?): {where}",
        path=path,
        code="truncated",
    )


def _display_size(coded_w: int, coded_h: int, sar: Fraction, op: OrientOp) -> tuple[int, int]:
    # Non-square pixels (anamorphic DV/DVD, some phone modes) are corrected by stretching the
    # width, as FFmpeg's scale=iw*sar:ih does, so faces are not squashed.
    width = max(1, round(coded_w * sar)) if sar != 1 else coded_w
    return (coded_h, width) if _swaps_axes(op) else (width, coded_h)


def _check_display_size(path: Path, width: int, height: int) -> None:
    name = path.name
    message = _aspect_error(width, height, MAX_ASPECT_RATIO)
    if message:
        raise VideoInputError(f"{name}: {message}", path=path, code="aspect_ratio")
    if min(width, height) < MIN_VIDEO_SIDE:
        raise VideoInputError(
            f"{name}: video is too small ({width}x{height}); the shorter side must be at "
            f"least {MIN_VIDEO_SIDE} px",
            path=path,
            code="too_small",
        )
    if max(width, height) > MAX_VIDEO_SIDE:
        raise VideoInputError(
            f"{name}: unsupported format: {width}x{height} exceeds the largest supported "
            f"side of {MAX_VIDEO_SIDE} px",
            path=path,
            code="too_large",
        )


def _decode_video(opened: _OpenVideo, path: Path) -> Iterator[av.VideoFrame]:
    """Decoded frames, tolerating isolated bad packets and failing loudly on real damage.

    FFmpeg conceals most bitstream damage itself (the frame comes out, flagged corrupt); those
    frames are passed through. A packet the decoder rejects outright is skipped, unless
    :data:`_MAX_CONSECUTIVE_DECODE_ERRORS` are rejected in a row, which means the stream is
    broken from there on. Demuxer errors (damaged container structure) are always fatal.
    """
    stream, fps = opened.stream, opened.fps
    index = 0
    consecutive = 0
    rejected = 0
    last_error: BaseException | None = None
    last_time: float | None = None

    def failure(what: str, exc: BaseException, code: str) -> VideoInputError:
        return VideoInputError(
            f"{path.name}: {what} at frame {index} ({float(index / fps):.2f} s): "
            f"{_describe_av_error(exc)}",
            path=path,
            code=code,
        )

    packets = opened.container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.error.FFmpegError as exc:
            raise failure("the video is corrupt (container damaged)", exc, "decode_failed") from exc
        try:
            # A packet with size 0 is the demuxer's end-of-stream marker; decoding it flushes.
            frames = stream.decode(packet)
        except av.error.FFmpegError as exc:
            consecutive += 1
            rejected += 1
            last_error = exc
            if consecutive >= _MAX_CONSECUTIVE_DECODE_ERRORS:
                if index == 0:
                    raise VideoInputError(
                        f"{path.name}: has zero decodable frames: {_describe_av_error(exc)}",
                        path=path,
                        code="zero_frames",
                    ) from exc
                raise failure("decoding failed", exc, "decode_failed") from exc
            continue
        consecutive = 0
        for frame in frames:
            if frame.time is not None:
                last_time = frame.time
            yield frame
            index += 1
    # demux() ends with an empty packet per stream whose decoding flushed the decoder.

    if index == 0:
        detail = f": {_describe_av_error(last_error)}" if last_error else ""
        raise VideoInputError(
            f"{path.name}: has zero decodable frames{detail}", path=path, code="zero_frames"
        )
    # Backstop for damage the index check cannot see: with an exact (index-based) count, a
    # large shortfall *together with* rejected packets means the data is broken. A shortfall
    # without decode errors is normal (edit lists of trimmed phone clips drop frames).
    allowed = max(
        _MISSING_FRAMES_TOLERANCE, math.ceil(opened.frame_count * _MISSING_FRAMES_TOLERANCE_RATIO)
    )
    if opened.frame_count_exact and index < opened.frame_count - allowed:
        if rejected:
            raise VideoInputError(
                f"{path.name}: the video is truncated or corrupt: only {index} of "
                f"{opened.frame_count} frames could be decoded (stopped at "
                f"{float(index / fps):.2f} s of {opened.duration:.2f} s)",
                path=path,
                code="truncated",
            )
        logger.warning(
            "%s: %d of %d indexed frames decoded (edit list?)", path.name, index, opened.frame_count
        )
    elif not opened.frame_count_exact and last_time is not None and opened.duration > 0:
        # Without a frame index (Matroska/WebM, MPEG-TS) a file cut short cannot be told
        # apart with certainty from one whose audio simply runs longer than its video (the
        # declared duration covers all streams), so the decodable prefix is accepted and the
        # suspicion is logged rather than raised.
        start_pts, time_base = stream.start_time, stream.time_base
        start = float(start_pts * time_base) if start_pts and time_base else 0.0
        ended = last_time - start + float(1 / fps)
        if ended < 0.9 * opened.duration - 0.5:
            logger.warning(
                "%s: video ends at %.2f s but the file declares %.2f s; truncated?",
                path.name,
                ended,
                opened.duration,
            )
    if rejected:
        logger.warning(
            "%s: skipped %d undecodable packet(s); %d frames decoded", path.name, rejected, index
        )


def probe_video(path: PathLike) -> VideoInfo:
    """Validate a driving video and describe it, decoding only its first frame.

    Raises :class:`VideoInputError` when the file is missing, not a video or unreadable, has
    no video stream (e.g. an audio-only ``.m4a``), uses an unsupported container or codec, has
    an aspect ratio beyond :data:`MAX_ASPECT_RATIO`, is smaller than :data:`MIN_VIDEO_SIDE`,
    has zero decodable frames, or is truncated (its index points past the end of the file).
    Other damage later in the file is only found while streaming (:func:`iter_frames` raises
    then); probing never decodes the whole file.
    """
    path = Path(path)
    opened = _open_video(path)
    try:
        first: av.VideoFrame | None = None
        for frame in _decode_video(opened, path):
            first = frame
            break
        assert first is not None  # _decode_video raises "zero_frames" otherwise
        op = orientation_from_display_matrix(_display_matrix_of(first))
        stream = opened.stream
        coded_w, coded_h = stream.codec_context.width, stream.codec_context.height
        width, height = _display_size(coded_w, coded_h, opened.sar, op)
        _check_display_size(path, width, height)
        rotation, mirrored = _OP_TO_ROTATION[op]
        audio = opened.audio
        audio_cc = audio.codec_context if audio is not None else None
        return VideoInfo(
            path=path,
            container=opened.container.format.name,
            width=width,
            height=height,
            coded_width=coded_w,
            coded_height=coded_h,
            fps=opened.fps,
            frame_count=opened.frame_count,
            frame_count_exact=opened.frame_count_exact,
            duration=opened.duration,
            codec=stream.codec_context.name,
            pixel_format=stream.codec_context.pix_fmt,
            rotation=rotation,
            mirrored=mirrored,
            sample_aspect_ratio=opened.sar,
            has_audio=audio is not None,
            audio_codec=audio_cc.name if audio_cc is not None else None,
            audio_sample_rate=audio_cc.sample_rate if audio_cc is not None else None,
            audio_channels=audio_cc.channels if audio_cc is not None else None,
        )
    finally:
        opened.container.close()


def iter_frames(path: PathLike, *, max_side: int | None = None) -> Iterator[np.ndarray]:
    """Stream the frames of a video as RGB ``uint8`` arrays of shape ``(H, W, 3)``.

    One frame is decoded, converted and yielded at a time, so memory use does not depend on
    the video's length (there is no frame cap). Rotation metadata and non-square pixels are
    applied, so frames look as they do in a player; with ``max_side`` each frame is
    downscaled (area averaging) so its longer side is at most ``max_side``. All frames have
    the size of the first, even if the stream changes resolution midway.

    The input is validated as by :func:`probe_video` before the first frame is yielded; that
    includes rejecting MP4/MOV files whose index points past the end of the file
    (``code="truncated"``: an upload cut short is an error, not a shorter video). Damage
    found while streaming raises :class:`VideoInputError` naming the frame index and time: a
    run of undecodable packets (``code="decode_failed"``), or -- in indexed containers -- a
    large shortfall of frames accompanied by decode errors (``code="truncated"``). Isolated
    damage that FFmpeg conceals (or a single rejected packet) is tolerated.

    Each yielded array is independent (callers may keep it). Closing the generator early
    closes the file.
    """
    path = Path(path)
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be a positive integer, got {max_side}")
    opened = _open_video(path)
    try:
        stream = opened.stream
        # Let FFmpeg use frame and slice threads: decoding dominates the reader's cost, and
        # frame threading only keeps a bounded number of frames in flight.
        stream.thread_type = "AUTO"
        op: OrientOp | None = None
        target: tuple[int, int] | None = None  # (w, h) in *coded* orientation
        interpolation = Interpolation.AREA
        for frame in _decode_video(opened, path):
            if op is None:
                op = orientation_from_display_matrix(_display_matrix_of(frame))
                display_w, display_h = _display_size(frame.width, frame.height, opened.sar, op)
                _check_display_size(path, display_w, display_h)
                out_w, out_h = fit_within(display_w, display_h, max_side)
                target = (out_h, out_w) if _swaps_axes(op) else (out_w, out_h)
                # Area averaging is the right filter for shrinking; for enlarging (only when
                # correcting non-square pixels) bicubic avoids blocky output.
                if target[0] * target[1] > frame.width * frame.height:
                    interpolation = Interpolation.BICUBIC
            assert target is not None
            if (frame.width, frame.height) != target:
                rgb = frame.reformat(
                    width=target[0], height=target[1], format="rgb24", interpolation=interpolation
                )
            else:
                rgb = frame.reformat(format="rgb24")
            array = orient_frame(rgb.to_ndarray(), op)
            # Own the pixels: the array must not pin FFmpeg's frame buffer, and numpy-owned
            # memory is what tracemalloc and torch.from_numpy handle best.
            yield array if array.flags.owndata else array.copy()
    finally:
        opened.container.close()


# --------------------------------------------------------------------------------------------
# Portrait images
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageLoadReport:
    """What :func:`load_image` did to the file, for logs and for telling the user."""

    path: Path
    format: str
    #: Size after EXIF orientation, before any downscaling: ``(width, height)``.
    original_size: tuple[int, int]
    #: Size of the returned array: ``(width, height)``.
    size: tuple[int, int]
    downscaled: bool
    max_side: int | None
    #: EXIF orientation tag (1 = none; 6 = phone held upright...), applied to the pixels.
    exif_orientation: int
    original_mode: str
    #: Transparent pixels were composited onto white.
    flattened_alpha: bool
    #: Frames in the file; animated WebP/PNG use the first.
    frame_count: int

    @property
    def message(self) -> str:
        """One human sentence describing any change, or ``""`` when the image was used as is."""
        if not self.downscaled:
            return ""
        ow, oh = self.original_size
        w, h = self.size
        return (
            f"image downscaled from {ow}x{oh} to {w}x{h} "
            f"(longer side limited to {self.max_side} px)"
        )


def _to_rgb(image: Image.Image) -> tuple[Image.Image, bool]:
    """Convert any Pillow mode to RGB; transparency is flattened onto white."""
    mode = image.mode
    if mode == "RGB":
        return image, False
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale PNG: Pillow's convert("L") clips instead of scaling.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if values.max(initial=0) > 255 else 255.0
        grey = np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), mode="RGB"), False
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB"), True
    return image.convert("RGB"), False


def load_image(
    path: PathLike,
    *,
    max_side: int | None = DEFAULT_IMAGE_MAX_SIDE,
    min_side: int = MIN_IMAGE_SIDE,
    max_aspect_ratio: float = MAX_ASPECT_RATIO,
) -> tuple[np.ndarray, ImageLoadReport]:
    """Read a portrait as an RGB ``uint8`` array ``(H, W, 3)`` plus a report of what was done.

    Accepts JPEG, PNG, WebP and BMP (:data:`SUPPORTED_IMAGE_FORMATS`). EXIF orientation is
    applied (phone photos come out upright), any mode is converted to RGB (transparency is
    flattened onto white, 16-bit greyscale is scaled), and an image whose longer side
    exceeds ``max_side`` is downscaled with Lanczos filtering -- the report then says so and
    gives both sizes. JPEGs are decoded at reduced resolution when that suffices, so large
    photos cost little memory. Images beyond Pillow's decompression-bomb limit (about 179
    megapixels) are rejected rather than decoded.

    Raises :class:`ImageInputError` for missing, unreadable, truncated/corrupt, unsupported,
    too-small (shorter side < ``min_side``) or extreme-aspect-ratio images.
    """
    path = Path(path)
    name = path.name
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be a positive integer, got {max_side}")
    if not path.is_file():
        raise ImageInputError(f"{name}: file not found", path=path, code="not_found")
    try:
        with Image.open(path) as image:
            fmt = image.format or "unknown"
            if fmt not in SUPPORTED_IMAGE_FORMATS:
                raise ImageInputError(
                    f"{name}: unsupported image format {fmt}; use JPEG, PNG, WebP or BMP",
                    path=path,
                    code="unsupported_format",
                )
            raw_w, raw_h = image.size
            orientation = int(image.getexif().get(0x0112, 1) or 1)
            if orientation not in range(1, 9):
                orientation = 1
            swap = orientation in (5, 6, 7, 8)
            width, height = (raw_h, raw_w) if swap else (raw_w, raw_h)
            message = _aspect_error(width, height, max_aspect_ratio)
            if message:
                raise ImageInputError(f"{name}: {message}", path=path, code="aspect_ratio")
            if min(width, height) < min_side:
                raise ImageInputError(
                    f"{name}: image is too small ({width}x{height}); the shorter side must be "
                    f"at least {min_side} px",
                    path=path,
                    code="too_small",
                )
            target = fit_within(width, height, max_side)
            downscale = target != (width, height)
            if downscale and fmt == "JPEG":
                # DCT-domain downscaling by 1/2, 1/4 or 1/8 while decoding; never below target.
                draft_size = (target[1], target[0]) if swap else target
                image.draft(None, draft_size)
            frame_count = int(getattr(image, "n_frames", 1) or 1)
            original_mode = image.mode
            image.load()
            oriented = ImageOps.exif_transpose(image) or image
            # Resize before converting: it is cheaper in the source mode, and Pillow resizes
            # RGBA with premultiplied alpha so edges do not pick up the transparent colour.
            if downscale:
                if oriented.mode in ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"):
                    oriented = oriented.convert("RGBA" if "A" in oriented.mode else "RGB")
                elif oriented.mode.startswith("I;16"):
                    oriented, _ = _to_rgb(oriented)
                oriented = oriented.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
            rgb, flattened = _to_rgb(oriented)
            array = np.array(rgb, dtype=np.uint8, copy=True)
    except ImageInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageInputError(
            f"{name}: image is too large to decode safely ({exc})", path=path, code="too_large"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageInputError(
            f"{name}: not an image or unreadable (format not recognised)",
            path=path,
            code="unreadable",
        ) from exc
    except (OSError, ValueError, SyntaxError, struct.error) as exc:
        # Pillow raises OSError("image file is truncated ...") and friends for damaged data.
        raise ImageInputError(
            f"{name}: image is corrupt or truncated ({exc})", path=path, code="corrupt"
        ) from exc
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageInputError(f"{name}: could not convert image to RGB", path=path, code="corrupt")
    final_size = (int(array.shape[1]), int(array.shape[0]))
    report = ImageLoadReport(
        path=path,
        format=fmt,
        original_size=(width, height),
        size=final_size,
        downscaled=downscale,
        max_side=max_side,
        exif_orientation=orientation,
        original_mode=original_mode,
        flattened_alpha=flattened,
        frame_count=frame_count,
    )
    if report.downscaled:
        logger.info("%s: %s", name, report.message)
    return array, report


# --------------------------------------------------------------------------------------------
# Writing video
# --------------------------------------------------------------------------------------------


def _require_encoder(name: str) -> None:
    if name not in av.codecs_available:
        raise VideoOutputError(
            f"the {name} encoder is not available in this PyAV/FFmpeg build; "
            f"install a PyAV build that includes {name}"
        )


def _reserve_temp_path(destination: Path) -> Path:
    """Create an empty, uniquely named temp file next to ``destination``.

    Same folder, so the final ``os.replace`` is an atomic rename on one filesystem. Created
    with ``O_EXCL`` and mode 0o666 so the umask applies as for any normal file (``mkstemp``
    would leave the published video readable by its owner only).
    """
    for _ in range(16):
        candidate = destination.with_name(f".{destination.name}.{secrets.token_hex(6)}.partial")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise VideoOutputError(f"could not create a temporary file next to {destination}")


class _AudioTrack:
    """Decodes the source's audio and re-encodes it to AAC, sample-exact, on demand.

    Re-encoding (instead of copying AAC packets) is deliberate: it accepts any source codec
    (AAC, Opus, MP3, PCM...), cuts at the exact sample where the video ends (packet copy can
    only cut at 1024-sample boundaries and relies on edit lists players handle unevenly), and
    can pad with silence when the audio is shorter than the video. The cost is one AAC
    generation at 96 kb/s per channel -- inaudible for speech -- and negligible CPU.

    Timing: sample 0 of the output is the instant of the driving video's first frame; audio
    that starts later is preceded by silence, audio that starts earlier loses its head.
    Gaps inside the source audio are not reconstructed (the samples are taken as continuous).
    """

    def __init__(self, source: Path, output: OutputContainer) -> None:
        self.source = source
        try:
            self.container: InputContainer = av.open(str(source), mode="r")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise VideoInputError(
                f"{source.name}: audio source is not a media file or unreadable: "
                f"{_describe_av_error(exc)}",
                path=source,
                code="unreadable",
            ) from exc
        try:
            stream = _first_audio_stream(self.container)
            if stream is None:
                raise VideoInputError(
                    f"{source.name}: has no audio stream", path=source, code="no_audio_stream"
                )
            if stream.codec_context is None or stream.codec_context.codec is None:
                raise VideoInputError(
                    f"{source.name}: unsupported format: no decoder for the audio codec",
                    path=source,
                    code="unsupported_format",
                )
            self.in_stream: AudioStream = stream
            in_rate = stream.codec_context.sample_rate or 48000
            self.rate = in_rate if in_rate in AAC_SAMPLE_RATES else 48000
            channels = stream.codec_context.channels or 2
            # Speech does not need surround; stereo (or mono) is what every player handles.
            self.layout = "mono" if channels == 1 else "stereo"
            self.channels = 1 if channels == 1 else 2
            self.resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
            self.fifo = av.AudioFifo()
            self.out_stream: AudioStream = output.add_stream("aac", rate=self.rate)
            self.out_stream.layout = self.layout
            self.out_stream.format = "fltp"
            self.out_stream.bit_rate = 96_000 * self.channels
            self.out_stream.time_base = Fraction(1, self.rate)
            self.output = output
            # Start of the source's video in seconds: output sample 0 is aligned to it.
            video = _first_video_stream(self.container)
            self.video_start = (
                float(video.start_time * video.time_base)
                if video is not None and video.start_time is not None and video.time_base
                else None
            )
            # Packets are decoded one by one (not via container.decode) so that one bad
            # packet can be skipped: an exception would end a decode() generator for good.
            self.packets = self.container.demux(stream)
            self.pending: list[av.AudioFrame] = []
            self.exhausted = False
            self.started = False
            self.skip = 0  # samples still to drop from the source head
            self.encoded = 0  # samples sent to the encoder
            self.consecutive_errors = 0
        except BaseException:
            self.container.close()
            raise

    def _next_frame(self) -> av.AudioFrame | None:
        """The next decoded source frame, or None at the end; isolated bad packets skipped."""
        while not self.pending:
            try:
                packet = next(self.packets)
            except StopIteration:
                return None
            except av.error.FFmpegError as exc:
                raise VideoInputError(
                    f"{self.source.name}: the audio is corrupt (container damaged) after "
                    f"{self.encoded / self.rate:.2f} s: {_describe_av_error(exc)}",
                    path=self.source,
                    code="decode_failed",
                ) from exc
            try:
                self.pending = list(self.in_stream.decode(packet))
            except av.error.FFmpegError as exc:
                self.consecutive_errors += 1
                if self.consecutive_errors >= _MAX_CONSECUTIVE_DECODE_ERRORS:
                    raise VideoInputError(
                        f"{self.source.name}: the audio cannot be decoded "
                        f"(after {self.encoded / self.rate:.2f} s): {_describe_av_error(exc)}",
                        path=self.source,
                        code="decode_failed",
                    ) from exc
                continue
            self.consecutive_errors = 0
        return self.pending.pop(0)

    def _pull(self) -> bool:
        """Move one more decoded chunk into the FIFO. False when the source is exhausted."""
        if self.exhausted:
            return False
        frame = self._next_frame()
        if frame is None:
            self.exhausted = True
            flushed = self.resampler.resample(None)
            for chunk in flushed:
                self._push(chunk)
            return bool(flushed)
        if not self.started:
            self.started = True
            self._align(frame)
        for chunk in self.resampler.resample(frame):
            self._push(chunk)
        return True

    def _align(self, first: av.AudioFrame) -> None:
        if self.video_start is None or first.pts is None or first.time_base is None:
            return
        offset = float(first.pts * first.time_base) - self.video_start
        samples = round(abs(offset) * self.rate)
        if samples == 0:
            return
        if offset > 0:
            self.fifo.write(self._silence(samples))
        else:
            self.skip = samples

    def _push(self, chunk: av.AudioFrame) -> None:
        chunk.pts = None  # the FIFO insists on continuity; timing is ours from here on
        if self.skip:
            if chunk.samples <= self.skip:
                self.skip -= chunk.samples
                return
            data = chunk.to_ndarray()[:, self.skip :]
            self.skip = 0
            chunk = self._frame(np.ascontiguousarray(data))
        self.fifo.write(chunk)

    def _frame(self, planar: np.ndarray) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=self.layout)
        frame.sample_rate = self.rate
        return frame

    def _silence(self, samples: int) -> av.AudioFrame:
        return self._frame(np.zeros((self.channels, samples), dtype=np.float32))

    def _encode(self, frame: av.AudioFrame | None) -> None:
        if frame is not None:
            frame.pts = self.encoded
            frame.time_base = Fraction(1, self.rate)
            self.encoded += frame.samples
        for packet in self.out_stream.encode(frame):
            self.output.mux(packet)

    def pump(self, until_seconds: float, *, final: bool = False) -> None:
        """Encode audio up to ``until_seconds`` of output time (interleaving with video).

        With ``final`` the track ends exactly there: padded with silence if the source ran
        out, the last AAC frame shortened, and the encoder flushed.
        """
        target = round(until_seconds * self.rate)
        frame_size = self.out_stream.codec_context.frame_size or 1024
        while (remaining := target - self.encoded) > 0:
            wanted = min(frame_size, remaining)
            if wanted < frame_size and not final:
                break  # AAC takes full frames; only the very last one may be shorter
            while self.fifo.samples < wanted and self._pull():
                pass
            if self.fifo.samples < wanted:
                # The source audio is shorter than the video: continue with silence.
                self.fifo.write(self._silence(wanted - self.fifo.samples))
            chunk = self.fifo.read(wanted)
            assert chunk is not None
            self._encode(chunk)
        if final:
            self._encode(None)

    def close(self) -> None:
        self.container.close()


class VideoWriter:
    """Write frames one at a time into an H.264 MP4, atomically, with optional audio.

    Usage::

        info = probe_video(driving)
        with VideoWriter(out_path, info.fps, audio_source=driving) as writer:
            for frame in frames:
                writer.write(frame)

    * Codec: libx264, ``yuv420p``, CRF ``crf`` (18 = visually lossless), BT.709 colour
      tagged, ``+faststart`` so browsers can start playback before the download ends.
    * Frame rate: ``fps`` exactly (pass :attr:`VideoInfo.fps`; ``30000/1001`` stays NTSC).
    * Size: from the first frame. yuv420p needs even sides, so an odd width or height is
      **padded by one pixel** that repeats the last column/row: no content is lost and the
      extra line is invisible. All later frames must have the first frame's size.
    * Audio: when ``audio_source`` has an audio stream it is re-encoded to AAC and ends
      exactly when the video ends (trimmed if longer, padded with silence if shorter). A
      source without audio gives a silent video.
    * Atomicity: everything goes to a hidden ``.partial`` file in the destination folder,
      renamed onto ``path`` only by a successful :meth:`close`. An exception inside the
      ``with`` block, :meth:`abort`, or any failure while finishing deletes the temp file and
      leaves whatever was at ``path`` before untouched. Closing with zero frames written is
      an error (no empty videos).
    """

    def __init__(
        self,
        path: PathLike,
        fps: FrameRate,
        *,
        audio_source: PathLike | None = None,
        crf: int = 18,
        preset: str = "medium",
    ) -> None:
        _require_encoder("libx264")
        self._path = Path(path)
        self._fps = _normalise_fps(fps)
        if not (MIN_FPS <= self._fps <= MAX_FPS):
            raise ValueError(f"fps must be within {MIN_FPS}-{MAX_FPS}, got {self._fps}")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be within 0-51, got {crf}")
        self._crf = crf
        self._preset = preset
        self._frames = 0
        self._size: tuple[int, int] | None = None  # (w, h) of incoming frames
        self._audio: _AudioTrack | None = None
        self._state: Literal["open", "closed", "aborted"] = "open"
        if audio_source is not None:
            _require_encoder("aac")
        if not self._path.parent.is_dir():
            raise VideoOutputError(f"output folder does not exist: {self._path.parent}")
        self._temp = _reserve_temp_path(self._path)
        try:
            self._container: OutputContainer = av.open(
                str(self._temp), mode="w", format="mp4", options={"movflags": "+faststart"}
            )
            self._video: VideoStream = self._add_video_stream()
            if audio_source is not None:
                source = Path(audio_source)
                if not source.is_file():
                    raise VideoInputError(
                        f"{source.name}: audio source not found", path=source, code="not_found"
                    )
                try:
                    self._audio = _AudioTrack(source, self._container)
                except VideoInputError as exc:
                    if exc.code != "no_audio_stream":
                        raise
                    self._audio = None  # a silent driving video gives a silent output
        except BaseException:
            self._state = "aborted"
            self._discard()
            raise

    # -- properties -------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """Final destination (exists only after a successful :meth:`close`)."""
        return self._path

    @property
    def fps(self) -> Fraction:
        return self._fps

    @property
    def frames_written(self) -> int:
        return self._frames

    @property
    def duration(self) -> float:
        """Seconds of video written so far (``frames_written / fps``)."""
        return float(self._frames / self._fps)

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    @property
    def size(self) -> tuple[int, int] | None:
        """``(width, height)`` of the encoded video (even), known after the first frame."""
        if self._size is None:
            return None
        width, height = self._size
        return width + width % 2, height + height % 2

    # -- writing ----------------------------------------------------------------------------

    def _add_video_stream(self) -> VideoStream:
        # Added before the audio stream so video is stream 0, as tools and players expect;
        # the size is filled in by the first frame, before the encoder opens.
        stream = self._container.add_stream("libx264", rate=self._fps)
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / self._fps
        # Tag what we encode so players do not guess (they would assume BT.601 for small
        # sizes and BT.709 for HD, shifting colours in one of the two cases).
        stream.codec_context.colorspace = 1  # AVCOL_SPC_BT709
        stream.codec_context.color_primaries = 1  # AVCOL_PRI_BT709
        stream.codec_context.color_trc = 1  # AVCOL_TRC_BT709
        stream.codec_context.color_range = int(ColorRange.MPEG)
        stream.options = {"crf": str(self._crf), "preset": self._preset}
        return stream

    def _start(self, width: int, height: int) -> None:
        self._size = (width, height)
        self._video.width, self._video.height = self.size or (width, height)

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB ``uint8`` frame of shape ``(H, W, 3)``."""
        if self._state != "open":
            raise RuntimeError(f"VideoWriter is {self._state}; cannot write")
        if not isinstance(frame, np.ndarray):
            raise TypeError(f"frame must be a numpy array, got {type(frame).__name__}")
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"frame must be uint8 RGB of shape (H, W, 3), got {frame.dtype} {frame.shape}"
            )
        height, width = int(frame.shape[0]), int(frame.shape[1])
        if self._size is None:
            if width < 2 or height < 2:
                raise ValueError(f"frame is too small to encode: {width}x{height}")
            self._start(width, height)
        elif (width, height) != self._size:
            raise ValueError(
                f"frame {self._frames} is {width}x{height}; all frames must match the first "
                f"({self._size[0]}x{self._size[1]})"
            )
        if width % 2 or height % 2:
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        yuv = rgb.reformat(
            format="yuv420p",
            dst_colorspace=Colorspace.ITU709,
            dst_color_range=ColorRange.MPEG,
            interpolation=Interpolation.BICUBIC,
        )
        yuv.pts = self._frames
        yuv.time_base = 1 / self._fps
        try:
            for packet in self._video.encode(yuv):
                self._container.mux(packet)
        except av.error.FFmpegError as exc:
            raise VideoOutputError(
                f"H.264 encoding failed at frame {self._frames}: {_describe_av_error(exc)}"
            ) from exc
        self._frames += 1
        if self._audio is not None:
            # Keep audio interleaved with video so the file streams well and the muxer's
            # interleaving queue stays small, however long the video is.
            self._audio.pump(self.duration)

    def close(self) -> Path:
        """Finish the file and atomically move it to :attr:`path`; returns that path."""
        if self._state == "closed":
            return self._path
        if self._state == "aborted":
            raise RuntimeError("VideoWriter was aborted; nothing to close")
        try:
            if self._frames == 0:
                raise VideoOutputError("no frames were written; refusing to create an empty video")
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._audio.pump(self.duration, final=True)
                self._audio.close()
            self._container.close()  # writes the moov atom and moves it to the front
            with open(self._temp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(self._temp, self._path)
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        return self._path

    def abort(self) -> None:
        """Stop writing and delete the temporary file; the destination is left untouched."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._discard()

    def _discard(self) -> None:
        if self._audio is not None:
            with contextlib.suppress(Exception):
                self._audio.close()
        container = getattr(self, "_container", None)
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        # A writer dropped without close/abort must not leave a .partial file behind.
        if getattr(self, "_state", None) == "open" and hasattr(self, "_temp"):
            with contextlib.suppress(Exception):
                self.abort()


# --------------------------------------------------------------------------------------------
# Test clips
# --------------------------------------------------------------------------------------------


def make_test_clip(
    path: PathLike,
    frames: Iterable[np.ndarray],
    fps: FrameRate,
    *,
    audio_tone_hz: float | None = None,
    sample_rate: int = 44100,
    audio_seconds: float | None = None,
    audio_channels: int = 2,
    rotation: int = 0,
    sample_aspect_ratio: Fraction | None = None,
    codec: str = "libx264",
    audio_codec: str = "aac",
) -> Path:
    """Synthesize a clip with PyAV, for tests: video from ``frames``, optional sine tone.

    * ``frames``: RGB ``uint8`` arrays, consumed lazily (a generator keeps memory flat).
      May be empty together with ``audio_tone_hz`` to make an audio-only file (``.m4a``).
    * ``fps``: exact rate written to the container (``Fraction(30000, 1001)`` for NTSC).
    * ``audio_tone_hz``: add a sine tone at this pitch, encoded with ``audio_codec``,
      lasting ``audio_seconds`` (default: the video's duration).
    * ``rotation``: clockwise display rotation stored as display-matrix metadata (the frames
      themselves are stored as given), as phones do; see :attr:`VideoInfo.rotation`.
    * ``sample_aspect_ratio``: non-square pixel ratio stored in the stream.

    The container is chosen from the file extension. Odd frame sizes are stored in
    ``yuv444p`` (H.264 4:2:0 needs even sides). Writes ``path`` directly; returns it.
    """
    path = Path(path)
    rate = _normalise_fps(fps)
    _require_encoder(codec)
    tone = audio_tone_hz is not None
    if tone:
        _require_encoder(audio_codec)
    with av.open(str(path), mode="w") as container:
        audio_stream: AudioStream | None = None
        layout = "mono" if audio_channels == 1 else "stereo"
        if tone:
            added = container.add_stream(audio_codec, rate=sample_rate)
            if not isinstance(added, AudioStream):
                raise ValueError(f"{audio_codec!r} is not an audio encoder")
            audio_stream = added
            audio_stream.layout = layout
            audio_stream.time_base = Fraction(1, sample_rate)
        video: VideoStream | None = None
        count = 0
        for array in frames:
            array = np.ascontiguousarray(array, dtype=np.uint8)
            height, width = array.shape[:2]
            if video is None:
                added_video = container.add_stream(codec, rate=rate)
                if not isinstance(added_video, VideoStream):
                    raise ValueError(f"{codec!r} is not a video encoder")
                video = added_video
                video.width, video.height = width, height
                if codec in ("libx264", "libx264rgb"):
                    video.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
                    video.options = {"preset": "ultrafast"}
                video.codec_context.time_base = 1 / rate
                if rotation % 360:
                    # PyAV takes counter-clockwise degrees; phones' convention is clockwise.
                    video.set_display_rotation(-float(rotation))
                if sample_aspect_ratio is not None:
                    video.codec_context.sample_aspect_ratio = sample_aspect_ratio
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = count
            frame.time_base = 1 / rate
            for packet in video.encode(frame):
                container.mux(packet)
            count += 1
        if video is not None:
            for packet in video.encode(None):
                container.mux(packet)
        if audio_stream is not None:
            seconds = audio_seconds if audio_seconds is not None else float(count / rate)
            if seconds <= 0:
                raise ValueError("an audio-only clip needs audio_seconds > 0")
            total = round(seconds * sample_rate)
            channels = 1 if layout == "mono" else 2
            block = 1024 * 8
            assert audio_tone_hz is not None
            for start in range(0, total, block):
                n = min(block, total - start)
                t = (np.arange(start, start + n, dtype=np.float64)) / sample_rate
                wave = (0.3 * np.sin(2 * np.pi * audio_tone_hz * t)).astype(np.float32)
                planar = np.repeat(wave[None, :], channels, axis=0)
                chunk = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
                chunk.sample_rate = sample_rate
                chunk.pts = start
                chunk.time_base = Fraction(1, sample_rate)
                for packet in audio_stream.encode(chunk):
                    container.mux(packet)
            for packet in audio_stream.encode(None):
                container.mux(packet)
        if video is None and audio_stream is None:
            raise ValueError("make_test_clip needs at least one frame or an audio tone")
    return path
