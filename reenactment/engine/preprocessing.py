"""Face crops for X-NeMo: the reference crops, streamed driving crops, and paste-back.

What the official release does (xnemo-spec.md §4.1) and what we keep or change:

* Reference: the dominant face's box, a square of side ``2 * max(w, h)`` around its centre for
  generation (512x512: CLIP and the VAE) and of side ``1.1 * max(w, h)`` for the motion encoder
  (224x224, Lanczos: the unconditional motion tokens). Kept. A square leaving the image is
  shifted inside when the image is large enough on that axis, else the outside is zero-padded.
  Kept for the generation crop; for the motion crop the release falls back to the raw
  (non-square, later stretched) detector box, we shift the square inside instead.
* Driving video: the release cuts every frame to its *left* HxH square, which loses the face
  in landscape video whose performer is not on the left. Changed: the face is tracked in the
  full frame (following the previous box when several faces are visible) and the crop follows
  it, in landscape and portrait video alike.
* Box centres are smoothed with a Gaussian of sigma 5 frames (radius 20, reflect at the ends).
  Kept, but streamed: a frame is released once the 20 frames after it are known, so memory is
  bounded by the window, not by the video's length.
* A fixed crop size for the whole video from the first frame's 1.1x square, resized to 224 with
  Lanczos like the release's image processor. Kept.
* Lost faces: the release crashes. Changed: short gaps are bridged by interpolating the box,
  a gap longer than ``max_gap_seconds`` raises :class:`DrivingFaceLostError` naming the second.
* Box parameters ``(dy, dx, s)`` relative to the reference face are computed per frame (note the
  (y, x) order); the release overwrites them with ``(0, 0, 1)``, which is the pipeline's default
  too (``bbox_mode="neutral"``), but both are available (``bbox_mode="tracked"``).
* Paste-back into the original portrait (absent from the release) with a feathered mask.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from reenactment.engine.faces import FaceBackend, FaceBox, FaceDetection, find_single_face

GENERATION_SIZE = 512
MOTION_SIZE = 224
REFERENCE_CROP_SCALE = 2.0
MOTION_CROP_SCALE = 1.1
SMOOTHING_SIGMA = 5.0
SMOOTHING_RADIUS = 20


class PreprocessingError(ValueError):
    """Input that cannot be prepared for animation; the message says why, for people."""


class DrivingFaceLostError(PreprocessingError):
    def __init__(self, message: str, *, from_second: float, frame_index: int) -> None:
        super().__init__(message)
        self.from_second = from_second
        self.frame_index = frame_index


@dataclass(frozen=True)
class SquareCrop:
    """A square region ``[x0, x0 + size) x [y0, y0 + size)``; may extend outside the image."""

    x0: int
    y0: int
    size: int

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.size / 2.0, self.y0 + self.size / 2.0)

    def extract(self, image: np.ndarray) -> np.ndarray:
        """The region as a ``size x size`` array; outside the image is black (zero)."""
        height, width = image.shape[:2]
        out = np.zeros((self.size, self.size, *image.shape[2:]), dtype=image.dtype)
        sx0, sy0 = max(self.x0, 0), max(self.y0, 0)
        sx1, sy1 = min(self.x0 + self.size, width), min(self.y0 + self.size, height)
        if sx1 > sx0 and sy1 > sy0:
            out[sy0 - self.y0 : sy1 - self.y0, sx0 - self.x0 : sx1 - self.x0] = image[
                sy0:sy1, sx0:sx1
            ]
        return out


def resize_rgb(
    image: np.ndarray, size: int | tuple[int, int], *, resample: str = "bilinear"
) -> np.ndarray:
    """Resize an RGB uint8 array to ``size`` (square) or ``(width, height)``.

    Args:
        image: ``(H, W, 3)`` uint8.
        size: Side of the square result, or ``(width, height)``.
        resample: ``"bilinear"`` (generation crops and paste-back: PIL's bilinear filter widens
            its support when shrinking, so downscaling is antialiased like the release's
            scikit-image ``resize(anti_aliasing=True)`` at a fraction of the cost),
            ``"lanczos"`` (motion-encoder crops: what the release's ``VaeImageProcessor`` uses)
            or ``"bicubic"``.
    """
    target = (size, size) if isinstance(size, int) else size
    if image.shape[1] == target[0] and image.shape[0] == target[1]:
        return image
    return np.asarray(Image.fromarray(image).resize(target, _RESAMPLE[resample]))


_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
}


def _place_axis(start: float, size: int, limit: int) -> int:
    """Shift a segment of ``size`` starting at ``start`` inside ``[0, limit)`` when it fits."""
    start_i = int(start)
    if size <= limit:
        return min(max(start_i, 0), limit - size)
    return start_i  # larger than the image on this axis: keep centred, extract() pads


def square_around(box: FaceBox, scale: float, width: int, height: int) -> SquareCrop:
    """The square of side ``scale * max(w, h)`` centred on ``box``, shifted inside if it fits."""
    side = max(int(scale * max(box.width, box.height)), 2)
    cx, cy = (box.x0 + box.x1) / 2.0, (box.y0 + box.y1) / 2.0
    return SquareCrop(
        x0=_place_axis(cx - side / 2.0, side, width),
        y0=_place_axis(cy - side / 2.0, side, height),
        size=side,
    )


@dataclass(frozen=True)
class ReferenceFace:
    """The portrait prepared for generation.

    ``generation_crop`` (512x512) feeds CLIP and the VAE; ``motion_crop`` (224x224) gives the
    unconditional motion tokens; ``crop`` says where the generation crop sits in ``image``, for
    paste-back.
    """

    image: np.ndarray
    detection: FaceDetection
    crop: SquareCrop
    generation_crop: np.ndarray
    motion_crop: np.ndarray

    @property
    def box_center(self) -> tuple[float, float]:
        box = self.detection.box
        return ((box.x0 + box.x1) / 2.0, (box.y0 + box.y1) / 2.0)

    @property
    def box_length(self) -> float:
        return max(self.detection.box.width, self.detection.box.height)


def preprocess_reference(
    image: np.ndarray,
    backend: FaceBackend,
    *,
    generation_size: int = GENERATION_SIZE,
    motion_size: int = MOTION_SIZE,
) -> ReferenceFace:
    """Find the portrait's one dominant face and cut the generation and motion crops.

    Raises ``faces.NoFaceError`` / ``faces.MultipleFacesError`` (their messages say how many
    faces were found) when there is not exactly one dominant face.
    """
    height, width = image.shape[:2]
    detection = find_single_face(image, backend)
    box = detection.box.clipped(width, height)
    crop = square_around(box, REFERENCE_CROP_SCALE, width, height)
    motion_square = square_around(box, MOTION_CROP_SCALE, width, height)
    return ReferenceFace(
        image=image,
        detection=detection,
        crop=crop,
        generation_crop=resize_rgb(crop.extract(image), generation_size),
        motion_crop=resize_rgb(motion_square.extract(image), motion_size, resample="lanczos"),
    )


def bbox_params(box: FaceBox, reference: ReferenceFace) -> np.ndarray:
    """``(dy, dx, s)`` of ``box`` relative to the reference face (the release's (y, x) order)."""
    cx, cy = (box.x0 + box.x1) / 2.0, (box.y0 + box.y1) / 2.0
    ref_cx, ref_cy = reference.box_center
    length = reference.box_length
    return np.array(
        [(cy - ref_cy) / length, (cx - ref_cx) / length, max(box.width, box.height) / length],
        dtype=np.float32,
    )


@dataclass(frozen=True)
class DrivingFrame:
    """One driving frame prepared for the motion encoder."""

    index: int
    time_s: float
    motion_crop: np.ndarray  # (224, 224, 3) uint8
    bbox_param: np.ndarray  # (3,) float32, (dy, dx, s) relative to the reference face
    crop: SquareCrop
    detected: bool  # False where the box was bridged over a short gap


def _gaussian_kernel(sigma: float, radius: int) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


@dataclass
class DrivingFaceTracker:
    """Streams driving frames in and prepared :class:`DrivingFrame` out, in order.

    Detection runs on a copy of each frame downscaled to ``detect_max_side`` (boxes are scaled
    back), every ``detect_every``-th frame; boxes of the frames between detections are
    interpolated. Memory holds at most the frames of the longest bridged gap plus the
    smoothing radius, and the smoothing window's numbers, whatever the video's length.
    """

    backend: FaceBackend
    reference: ReferenceFace
    fps: float
    motion_size: int = MOTION_SIZE
    detect_every: int = 1
    detect_max_side: int = 480
    max_gap_seconds: float = 1.0
    sigma: float = SMOOTHING_SIGMA
    radius: int = SMOOTHING_RADIUS
    # Frames pushed since the last detection, waiting for the next box to interpolate to.
    _undetected: deque[tuple[int, np.ndarray]] = field(default_factory=deque, init=False)
    # Frames with a box, waiting until ``radius`` later boxes are known for smoothing.
    _waiting: deque[tuple[int, np.ndarray]] = field(default_factory=deque, init=False)
    # index -> (centre x, centre y, box length, detected), only inside the smoothing window.
    _track: dict[int, tuple[float, float, float, bool]] = field(default_factory=dict, init=False)
    _pushed: int = field(default=0, init=False)
    _accepted: int = field(default=0, init=False)
    _last_box: tuple[int, FaceBox] | None = field(default=None, init=False)
    _crop_side: int | None = field(default=None, init=False)
    _frame_size: tuple[int, int] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.fps or self.fps <= 0:
            raise PreprocessingError("the driving video reports no frame rate")
        self.fps = float(self.fps)
        if self.detect_every < 1:
            raise ValueError("detect_every must be >= 1")
        self._kernel = _gaussian_kernel(self.sigma, self.radius)
        # A gap is never shorter than the detection stride, or skipped frames would count.
        self._max_gap = max(self.detect_every, int(round(self.max_gap_seconds * self.fps)))

    def _detect(self, frame: np.ndarray) -> FaceBox | None:
        height, width = frame.shape[:2]
        scale = min(1.0, self.detect_max_side / max(height, width))
        small = resize_rgb(frame, (max(1, round(width * scale)), max(1, round(height * scale))))
        detections = self.backend.detect(small)
        if not detections:
            return None
        boxes = [
            FaceBox(d.box.x0 / scale, d.box.y0 / scale, d.box.x1 / scale, d.box.y1 / scale)
            for d in detections
        ]
        return _follow(boxes, self._last_box[1] if self._last_box else None)

    @property
    def held_frames(self) -> int:
        """Frames held back right now (waiting for a detection or for smoothing)."""
        return len(self._undetected) + len(self._waiting)

    def push(self, frame: np.ndarray) -> Iterator[DrivingFrame]:
        """Add the next frame; yields the frames whose smoothing window is now complete."""
        index = self._pushed
        self._pushed += 1
        size = (frame.shape[1], frame.shape[0])
        if self._frame_size is None:
            self._frame_size = size
        elif self._frame_size != size:
            raise PreprocessingError(
                f"frame {index} is {size[0]}x{size[1]}, the video started at "
                f"{self._frame_size[0]}x{self._frame_size[1]}"
            )
        box = self._detect(frame) if index % self.detect_every == 0 else None
        if box is None:
            self._undetected.append((index, frame))
            self._check_gap(index)
        else:
            self._bridge_to(index, box)
            self._accept(index, frame, box, detected=True)
            self._last_box = (index, box)
        yield from self._release(final=False)

    def finish(self) -> Iterator[DrivingFrame]:
        """Flush the frames still held back once the video has ended."""
        if self._pushed == 0:
            raise PreprocessingError("the driving video has no frames")
        if self._last_box is None:
            raise DrivingFaceLostError(
                "no face found in the driving video", from_second=0.0, frame_index=0
            )
        self._bridge_to(None, None)
        yield from self._release(final=True)

    def _check_gap(self, index: int) -> None:
        start = self._last_box[0] + 1 if self._last_box else 0
        if index - start + 1 > self._max_gap:
            raise DrivingFaceLostError(
                f"the performer's face is lost for more than {self.max_gap_seconds:g} s from "
                f"second {start / self.fps:.1f} (frame {start}) of the driving video",
                from_second=start / self.fps,
                frame_index=start,
            )

    def _bridge_to(self, index: int | None, box: FaceBox | None) -> None:
        """Give the frames since the last detection boxes interpolated up to ``box``."""
        target = (index, box) if index is not None and box is not None else None
        while self._undetected:
            pending_index, frame = self._undetected.popleft()
            bridged = _interpolate(self._last_box, target, pending_index)
            self._accept(pending_index, frame, bridged, detected=False)

    def _accept(self, index: int, frame: np.ndarray, box: FaceBox, *, detected: bool) -> None:
        if self._crop_side is None:
            # A fixed crop size for the whole video, from the first face (even, like the release).
            width, height = self._frame_size or (frame.shape[1], frame.shape[0])
            side = square_around(box, MOTION_CROP_SCALE, width, height).size
            self._crop_side = max(2, side - side % 2)
        centre_x, centre_y = (box.x0 + box.x1) / 2.0, (box.y0 + box.y1) / 2.0
        self._track[index] = (centre_x, centre_y, max(box.width, box.height), detected)
        self._waiting.append((index, frame))
        self._accepted = index + 1

    def _smoothed(self, index: int, total: int | None) -> tuple[float, float, float]:
        """Gaussian-smoothed centre and box length at ``index`` (scipy's reflect mode).

        Every index the kernel reaches, reflected, lies in ``[index - radius, index + radius]``
        and inside the video, which is exactly the window ``_track`` keeps.
        """
        acc = np.zeros(3)
        for offset, weight in zip(range(-self.radius, self.radius + 1), self._kernel, strict=True):
            j = index + offset
            if j < 0:
                j = -j - 1  # d c b a | a b c d
            if total is not None and j >= total:
                j = 2 * total - j - 1  # a b c d | d c b a
            j = min(max(j, 0), (total or self._accepted) - 1)
            acc += weight * np.asarray(self._track[j][:3])
        return float(acc[0]), float(acc[1]), float(acc[2])

    def _release(self, *, final: bool) -> Iterator[DrivingFrame]:
        total = self._accepted if final else None
        while self._waiting:
            index, frame = self._waiting[0]
            if not final and index + self.radius >= self._accepted:
                return
            self._waiting.popleft()
            centre_x, centre_y, length = self._smoothed(index, total)
            yield self._prepare(index, frame, centre_x, centre_y, length)
            # Numbers older than the next frame's window are no longer needed.
            self._track.pop(index - self.radius, None)

    def _prepare(
        self, index: int, frame: np.ndarray, centre_x: float, centre_y: float, length: float
    ) -> DrivingFrame:
        assert self._crop_side is not None
        height, width = frame.shape[:2]
        side = self._crop_side
        crop = SquareCrop(
            x0=_place_axis(centre_x - side / 2.0, side, width),
            y0=_place_axis(centre_y - side / 2.0, side, height),
            size=side,
        )
        half = length / 2.0
        smoothed = FaceBox(centre_x - half, centre_y - half, centre_x + half, centre_y + half)
        return DrivingFrame(
            index=index,
            time_s=index / self.fps,
            motion_crop=resize_rgb(crop.extract(frame), self.motion_size, resample="lanczos"),
            bbox_param=bbox_params(smoothed, self.reference),
            crop=crop,
            detected=self._track[index][3],
        )


def _follow(boxes: list[FaceBox], previous: FaceBox | None) -> FaceBox:
    """The performer's face among ``boxes`` (largest first): the one that overlaps the
    previous box most, or the nearest one when none overlaps; the largest at the start.

    Following the previous box, rather than taking the largest face in every frame, keeps the
    crop on one person when someone else walks through the picture.
    """
    if previous is None or len(boxes) == 1:
        return boxes[0]
    overlaps = [box.iou(previous) for box in boxes]
    best = max(range(len(boxes)), key=lambda i: overlaps[i])
    if overlaps[best] > 0:
        return boxes[best]
    px, py = (previous.x0 + previous.x1) / 2.0, (previous.y0 + previous.y1) / 2.0
    return min(boxes, key=lambda b: math.hypot((b.x0 + b.x1) / 2.0 - px, (b.y0 + b.y1) / 2.0 - py))


def _interpolate(
    prev: tuple[int, FaceBox] | None, nxt: tuple[int, FaceBox] | None, index: int
) -> FaceBox:
    """Linear interpolation of the box between two detections (or hold the nearest one)."""
    if prev is None:
        assert nxt is not None
        return nxt[1]
    if nxt is None:
        return prev[1]
    (i0, a), (i1, b) = prev, nxt
    t = (index - i0) / (i1 - i0)
    return FaceBox(*(u + t * (v - u) for u, v in zip(a.as_tuple(), b.as_tuple())))


def track_driving_faces(
    frames: Iterable[np.ndarray],
    *,
    backend: FaceBackend,
    reference: ReferenceFace,
    fps: float,
    **options: object,
) -> Iterator[DrivingFrame]:
    """Stream ``frames`` through a :class:`DrivingFaceTracker`; yields prepared frames in order."""
    tracker = DrivingFaceTracker(backend=backend, reference=reference, fps=fps, **options)  # type: ignore[arg-type]
    for frame in frames:
        yield from tracker.push(frame)
    yield from tracker.finish()


#: Bounds of :class:`ColorMatch`'s per-channel gain: a nearly flat generated channel must not
#: be stretched into amplified noise, nor a noisy one flattened.
COLOR_MATCH_GAIN_RANGE = (0.5, 2.0)


@dataclass(frozen=True)
class ColorMatch:
    """A per-channel gain and offset giving generated faces the reference crop's colours.

    A small model's output drifts towards average colours (its autoencoder normalises colour
    away, and the denoiser regresses to the mean): a magenta shirt comes out grey. The fit takes
    the generated frames' per-channel mean and standard deviation to the reference crop's
    (AdaIN-style colour transfer over whole frames, so a moving head is not pulled back to the
    portrait's pose). One fit is held for a whole video: refitting per frame would make the
    colours pulse with the motion.
    """

    gain: np.ndarray  # (3,) float32
    offset: np.ndarray  # (3,) float32, in 0..255 pixel units

    @classmethod
    def fit(cls, generated: np.ndarray, reference: np.ndarray) -> ColorMatch:
        """Fit on ``generated`` frames ``(..., H, W, 3)`` and the reference crop ``(H, W, 3)``,
        both in 0..255 (uint8 or float)."""
        gen = np.asarray(generated, dtype=np.float64).reshape(-1, 3)
        ref = np.asarray(reference, dtype=np.float64).reshape(-1, 3)
        if gen.shape[0] == 0 or ref.shape[0] == 0:
            raise ValueError("colour matching needs at least one pixel on each side")
        low, high = COLOR_MATCH_GAIN_RANGE
        gain = np.clip(ref.std(axis=0) / np.maximum(gen.std(axis=0), 1e-6), low, high)
        offset = ref.mean(axis=0) - gain * gen.mean(axis=0)
        return cls(gain=gain.astype(np.float32), offset=offset.astype(np.float32))

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """``frames * gain + offset`` clipped to 0..255; uint8 in, uint8 out (rounded), float in,
        float32 out."""
        out = np.clip(np.asarray(frames, dtype=np.float32) * self.gain + self.offset, 0.0, 255.0)
        if np.asarray(frames).dtype == np.uint8:
            return (out + 0.5).astype(np.uint8)
        return out


def feather_mask(size: int, *, feather: float = 0.12) -> np.ndarray:
    """A (size, size) float32 mask: 1 inside, falling smoothly to 0 at the square's edges.

    An ellipse-like superellipse keeps the face and hair and fades the crop's corners, where the
    generated background differs most from the original picture.
    """
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0  # [-1, 1]
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    radius = (np.abs(xx) ** 4 + np.abs(yy) ** 4) ** 0.25  # superellipse, 1 at the edge centres
    inner = 1.0 - 2.0 * feather
    t = np.clip((1.0 - radius) / max(1e-6, 1.0 - inner), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)  # smoothstep


def paste_back(
    portrait: np.ndarray, generated: np.ndarray, crop: SquareCrop, *, feather: float = 0.12
) -> np.ndarray:
    """Blend a generated face crop back into the full original portrait.

    ``generated`` (any square size) is resized to the crop's size and composited where the crop
    overlaps the portrait; the rest of the portrait is untouched.
    """
    height, width = portrait.shape[:2]
    patch = resize_rgb(generated, crop.size).astype(np.float32)
    mask = feather_mask(crop.size, feather=feather)[..., None]
    out = portrait.copy()
    sx0, sy0 = max(crop.x0, 0), max(crop.y0, 0)
    sx1, sy1 = min(crop.x0 + crop.size, width), min(crop.y0 + crop.size, height)
    if sx1 <= sx0 or sy1 <= sy0:
        return out
    px0, py0 = sx0 - crop.x0, sy0 - crop.y0
    region = out[sy0:sy1, sx0:sx1].astype(np.float32)
    m = mask[py0 : py0 + (sy1 - sy0), px0 : px0 + (sx1 - sx0)]
    p = patch[py0 : py0 + (sy1 - sy0), px0 : px0 + (sx1 - sx0)]
    out[sy0:sy1, sx0:sx1] = np.clip(region * (1.0 - m) + p * m + 0.5, 0, 255).astype(np.uint8)
    return out


def even_size(width: int, height: int) -> tuple[int, int]:
    """The largest even width and height not above the given ones (H.264 needs even sizes)."""
    return (width - width % 2, height - height % 2)


def downscale_to_limit(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale so the longer side is at most ``max_side``; returns the image and the factor."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale >= 1.0:
        return image, 1.0
    new = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    return resize_rgb(image, new), scale
