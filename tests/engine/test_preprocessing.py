"""Face crops for X-NeMo: reference crops, streamed driving-face tracking, paste-back.

Real photos and the real dlib detector throughout: scikit-image's astronaut is the portrait; the
driving clips are synthesized here with PyAV from the cameraman's head (cut around the face and
upscaled: dlib finds that face only from ~80 px) under a small affine head motion, placed in
landscape and portrait canvases. Detection costs ~0.25 s per frame on a CPU, so the clips are
short and the tracker detects every few frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter1d
from skimage import data as skdata

from reenactment.engine import faces
from reenactment.engine.faces import FaceBackend, FaceDetection, MultipleFacesError, NoFaceError
from reenactment.engine.preprocessing import (
    COLOR_MATCH_GAIN_RANGE,
    GENERATION_SIZE,
    MOTION_SIZE,
    SMOOTHING_RADIUS,
    ColorMatch,
    DrivingFaceLostError,
    DrivingFaceTracker,
    ReferenceFace,
    SquareCrop,
    bbox_params,
    downscale_to_limit,
    even_size,
    feather_mask,
    paste_back,
    preprocess_reference,
    track_driving_faces,
)
from reenactment.engine.video_io import iter_frames, make_test_clip, probe_video

CAMERA = np.stack([skdata.camera()] * 3, axis=-1)
HEAD = 256  # side of the synthesized head image


def head_frame(index: int, size: int = HEAD) -> np.ndarray:
    """The cameraman's head, upscaled to ``size``, under frame ``index`` of a small affine motion
    (rotation up to 3 degrees, shifts up to 6 px, scale within 3 %)."""
    head = Image.fromarray(CAMERA[60:252, 124:316]).resize((size, size), Image.Resampling.BICUBIC)
    angle = math.radians(3.0 * math.sin(index / 3.0))
    scale = 1.0 + 0.03 * math.sin(index / 5.0)
    tx, ty = 6.0 * math.sin(index / 4.0), 4.0 * math.cos(index / 3.5)
    # Inverse map output -> input about the centre, as PIL's AFFINE transform expects.
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    centre = size / 2.0
    a, b = c, s
    d, e = -s, c
    off_x = centre - a * (centre + tx) - b * (centre + ty)
    off_y = centre - d * (centre + tx) - e * (centre + ty)
    moved = head.transform(
        (size, size), Image.Transform.AFFINE, (a, b, off_x, d, e, off_y), Image.Resampling.BILINEAR
    )
    return np.asarray(moved)


def on_canvas(head: np.ndarray, width: int, height: int, x: int, y: int) -> np.ndarray:
    """``head`` placed at ``(x, y)`` on a grey ``width`` x ``height`` frame."""
    canvas = np.full((height, width, 3), 96, np.uint8)
    canvas[y : y + head.shape[0], x : x + head.shape[1]] = head
    return canvas


def landscape_frames(count: int) -> Iterator[np.ndarray]:
    """448x256 frames with the performer on the *right* (the release would cut the left square)."""
    for i in range(count):
        yield on_canvas(head_frame(i), 448, 256, 192, 0)


def portrait_frames(count: int) -> Iterator[np.ndarray]:
    """256x448 frames with the performer at the bottom."""
    for i in range(count):
        yield on_canvas(head_frame(i), 256, 448, 0, 192)


class RecordingBackend(FaceBackend):
    """The real dlib backend, with every detection it returns recorded (a spy, not a fake)."""

    def __init__(self, inner: FaceBackend) -> None:
        self.inner = inner
        self.info = inner.info
        self.calls: list[list[FaceDetection]] = []

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        found = self.inner.detect(image)
        self.calls.append(found)
        return found

    def embed(self, image: np.ndarray, detection: FaceDetection) -> np.ndarray:
        return self.inner.embed(image, detection)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        return self.inner.similarity(a, b)


@pytest.fixture(scope="module")
def backend() -> FaceBackend:
    return faces.get_face_backend("dlib")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def reference(backend: FaceBackend, astronaut: np.ndarray) -> ReferenceFace:
    return preprocess_reference(astronaut, backend)


# --------------------------------------------------------------------------------------------
# Reference crops
# --------------------------------------------------------------------------------------------


def test_reference_crops_are_expanded_as_in_the_release(reference: ReferenceFace) -> None:
    box = reference.detection.box
    side = max(box.width, box.height)
    # Generation crop: a square of twice the face's longer side, centred on the face.
    assert reference.crop.size == int(2.0 * side)
    cx, cy = reference.crop.center
    assert cx == pytest.approx((box.x0 + box.x1) / 2, abs=1.0)
    assert cy == pytest.approx((box.y0 + box.y1) / 2, abs=1.0)
    assert reference.generation_crop.shape == (GENERATION_SIZE, GENERATION_SIZE, 3)
    assert reference.motion_crop.shape == (MOTION_SIZE, MOTION_SIZE, 3)
    # The generation crop is that square, resized (bilinear, antialiased when shrinking).
    generation = reference.generation_crop
    expected = np.asarray(
        Image.fromarray(reference.crop.extract(reference.image)).resize(
            (GENERATION_SIZE, GENERATION_SIZE), Image.Resampling.BILINEAR
        )
    )
    np.testing.assert_array_equal(generation, expected)


def test_reference_crop_at_the_image_border_is_padded_black(
    backend: FaceBackend, astronaut: np.ndarray
) -> None:
    # 180x150 cut: the 2x square (~182 px) exceeds both sides, so the outside is black.
    image = np.ascontiguousarray(astronaut[50:200, 140:320])
    prepared = preprocess_reference(image, backend, generation_size=64)
    assert prepared.crop.size > max(image.shape[:2])
    assert prepared.crop.x0 < 0 and prepared.crop.y0 < 0
    assert prepared.generation_crop.shape == (64, 64, 3)
    assert prepared.generation_crop[0, 0].max() == 0  # padded corner


def test_reference_without_a_face_or_with_several(
    backend: FaceBackend, astronaut: np.ndarray
) -> None:
    with pytest.raises(NoFaceError, match="no face"):
        preprocess_reference(np.full((256, 256, 3), 128, np.uint8), backend)
    side_by_side = np.concatenate([astronaut, np.ascontiguousarray(astronaut[:, ::-1])], axis=1)
    with pytest.raises(MultipleFacesError, match="found 2 similarly large faces") as caught:
        preprocess_reference(side_by_side, backend)
    assert caught.value.count == 2


def test_box_parameters_are_dy_dx_scale_relative_to_the_reference(
    reference: ReferenceFace,
) -> None:
    box = reference.detection.box
    length = max(box.width, box.height)
    moved = faces.FaceBox(box.x0, box.y0 + length / 2, box.x1, box.y1 + length / 2)
    np.testing.assert_allclose(bbox_params(moved, reference), [0.5, 0.0, 1.0], atol=1e-6)
    grown = faces.FaceBox(box.x0 - length, box.y0, box.x1 + length, box.y1)
    dy, dx, scale = bbox_params(grown, reference)
    assert (dy, dx) == pytest.approx((0.0, 0.0)) and scale == pytest.approx(3.0)


# --------------------------------------------------------------------------------------------
# Driving-face tracking
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_frames", "face_origin"),
    [(landscape_frames, (192, 0)), (portrait_frames, (0, 192))],
    ids=["landscape-face-right", "portrait-face-bottom"],
)
def test_tracker_follows_the_face_in_landscape_and_portrait_video(
    tmp_path: Path,
    backend: FaceBackend,
    reference: ReferenceFace,
    make_frames: object,
    face_origin: tuple[int, int],
) -> None:
    clip = make_test_clip(tmp_path / "driving.mp4", make_frames(12), 10)  # type: ignore[operator]
    info = probe_video(clip)
    prepared = list(
        track_driving_faces(
            iter_frames(clip), backend=backend, reference=reference, fps=info.fps, detect_every=4
        )
    )
    assert [frame.index for frame in prepared] == list(range(12))
    assert [frame.time_s for frame in prepared] == pytest.approx([i / 10 for i in range(12)])
    assert [frame.detected for frame in prepared] == [i % 4 == 0 for i in range(12)]
    sides = {frame.crop.size for frame in prepared}
    assert len(sides) == 1 and sides.pop() % 2 == 0  # one fixed, even crop size
    # The face sits around (128, 120) of the head image; every crop must be centred near it in
    # the full frame, far from where the release's left-square cut would put it.
    fx, fy = face_origin[0] + 128, face_origin[1] + 120
    for frame in prepared:
        cx, cy = frame.crop.center
        assert abs(cx - fx) < 30 and abs(cy - fy) < 30, (frame.index, frame.crop)
        assert frame.motion_crop.shape == (MOTION_SIZE, MOTION_SIZE, 3)
        assert frame.bbox_param.shape == (3,)


def test_tracker_smooths_box_centres_like_scipy_and_holds_few_frames(
    backend: FaceBackend, reference: ReferenceFace
) -> None:
    # 42 frames (> 2 x radius, so every reflection at the ends is a single one), detection
    # every 7 frames; boxes in between are interpolated, then smoothed with sigma 5, radius 20.
    count, every = 42, 7
    spy = RecordingBackend(backend)
    tracker = DrivingFaceTracker(
        backend=spy, reference=reference, fps=10.0, detect_every=every, max_gap_seconds=1.0
    )
    prepared = []
    held = []
    for frame in landscape_frames(count):
        prepared.extend(tracker.push(frame))
        held.append(tracker.held_frames)
    prepared.extend(tracker.finish())
    assert len(prepared) == count
    # Memory: frames wait for the next detection and for the smoothing look-ahead, no more.
    assert max(held) <= SMOOTHING_RADIUS + every + 1

    detections = {i * every: calls[0].box for i, calls in enumerate(spy.calls)}
    assert sorted(detections) == list(range(0, count, every))
    known = sorted(detections)
    centres = []
    for index in range(count):
        before = max(k for k in known if k <= index)
        after = min((k for k in known if k >= index), default=None)
        a = detections[before]
        b = detections[after] if after is not None else a
        t = 0.0 if after is None or after == before else (index - before) / (after - before)
        box = [u + t * (v - u) for u, v in zip(a.as_tuple(), b.as_tuple(), strict=True)]
        centres.append(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
    smooth = gaussian_filter1d(np.array(centres), sigma=5.0, axis=0, mode="reflect", truncate=4.0)
    side = prepared[0].crop.size
    for frame, (cx, cy) in zip(prepared, smooth, strict=True):
        # The crop is the fixed-size square around the smoothed centre (integer truncation).
        assert frame.crop.x0 == pytest.approx(int(cx - side / 2), abs=1)
        assert frame.crop.y0 == pytest.approx(int(cy - side / 2), abs=1)


def test_lost_driving_face_names_the_second(
    tmp_path: Path, backend: FaceBackend, reference: ReferenceFace
) -> None:
    blank = np.full((HEAD, HEAD, 3), 96, np.uint8)
    frames = [head_frame(i) for i in range(5)] + [blank] * 12
    clip = make_test_clip(tmp_path / "lost.mp4", frames, 10)
    with pytest.raises(DrivingFaceLostError) as caught:
        for _ in track_driving_faces(
            iter_frames(clip),
            backend=backend,
            reference=reference,
            fps=10.0,
            detect_every=2,
            max_gap_seconds=0.5,
        ):
            pass
    # Last detection at frame 4: the face is missing from frame 5, i.e. second 0.5.
    assert caught.value.from_second == pytest.approx(0.5)
    assert caught.value.frame_index == 5
    assert "from second 0.5" in str(caught.value)


def test_driving_video_without_any_face(backend: FaceBackend, reference: ReferenceFace) -> None:
    blank = np.full((HEAD, HEAD, 3), 96, np.uint8)
    with pytest.raises(DrivingFaceLostError, match="no face found in the driving video") as caught:
        list(
            track_driving_faces(
                [blank] * 6, backend=backend, reference=reference, fps=10.0, detect_every=3
            )
        )
    assert caught.value.from_second == 0.0


# --------------------------------------------------------------------------------------------
# Paste-back and small helpers
# --------------------------------------------------------------------------------------------


def test_paste_back_composites_into_the_full_portrait(reference: ReferenceFace) -> None:
    generated = np.zeros((64, 64, 3), np.uint8)
    generated[..., 1] = 255  # a green face
    out = paste_back(reference.image, generated, reference.crop)
    assert out.shape == reference.image.shape and out.dtype == np.uint8
    crop = reference.crop
    cx, cy = (int(v) for v in crop.center)
    assert tuple(out[cy, cx]) == (0, 255, 0)  # the mask is 1 in the middle
    # Outside the crop nothing changes; at the crop's corners the feather keeps the original.
    np.testing.assert_array_equal(out[:, : max(crop.x0, 0)], reference.image[:, : max(crop.x0, 0)])
    np.testing.assert_array_equal(
        out[crop.y0 + crop.size :], reference.image[crop.y0 + crop.size :]
    )
    np.testing.assert_array_equal(out[crop.y0, crop.x0], reference.image[crop.y0, crop.x0])


def test_paste_back_of_a_crop_reaching_outside_the_image() -> None:
    portrait = np.full((100, 80, 3), 50, np.uint8)
    crop = SquareCrop(x0=-30, y0=40, size=90)  # sticks out left and bottom
    out = paste_back(portrait, np.full((32, 32, 3), 200, np.uint8), crop)
    assert out.shape == portrait.shape
    assert out[85, 15].mean() > 150  # the face's centre is inside the image
    assert (out[:35] == 50).all()


def test_feather_mask_and_helpers() -> None:
    mask = feather_mask(65)
    assert mask.shape == (65, 65) and mask.dtype == np.float32
    assert mask[32, 32] == pytest.approx(1.0) and mask[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert even_size(513, 301) == (512, 300)
    big = np.zeros((300, 1000, 3), np.uint8)
    small, factor = downscale_to_limit(big, 500)
    assert small.shape == (150, 500, 3) and factor == pytest.approx(0.5)
    same, factor = downscale_to_limit(big, 2000)
    assert same is big and factor == 1.0


def test_color_match_gives_generated_frames_the_references_colour_statistics() -> None:
    rng = np.random.default_rng(3)
    reference = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    # Washed-out frames: the reference's pattern at 70 % contrast, shifted towards grey.
    frames = np.stack([reference.astype(np.float32) * 0.7 + 40 + k for k in range(4)])
    frames = frames.astype(np.uint8)
    match = ColorMatch.fit(frames, reference)
    out = match.apply(frames)
    assert out.dtype == np.uint8 and out.shape == frames.shape
    # One fit for all frames: their means and spreads are the reference's (up to rounding).
    np.testing.assert_allclose(
        out.reshape(-1, 3).mean(axis=0), reference.reshape(-1, 3).mean(axis=0), atol=0.6
    )
    np.testing.assert_allclose(
        out.reshape(-1, 3).std(axis=0), reference.reshape(-1, 3).std(axis=0), rtol=0.02
    )
    # and the first frame is nearly the reference again.
    assert np.abs(out[0].astype(int) - reference).mean() < 2.5
    assert np.abs(frames[0].astype(int) - reference).mean() > 15
    # Float in, float out (0..255, clipped).
    floats = match.apply(frames.astype(np.float32))
    assert floats.dtype == np.float32 and floats.min() >= 0 and floats.max() <= 255


def test_color_match_gain_is_bounded_and_empty_input_refused() -> None:
    reference = np.zeros((8, 8, 3), np.uint8)
    reference[::2] = 255  # a high-contrast reference
    flat = np.full((2, 8, 8, 3), 100, np.uint8)  # a flat generated clip: std 0
    match = ColorMatch.fit(flat, reference)
    np.testing.assert_allclose(match.gain, COLOR_MATCH_GAIN_RANGE[1])
    # The flat clip gets the reference's mean colour, not amplified noise.
    np.testing.assert_array_equal(match.apply(flat), np.full_like(flat, 128))
    with pytest.raises(ValueError, match="at least one pixel"):
        ColorMatch.fit(np.zeros((0, 8, 8, 3)), reference)
