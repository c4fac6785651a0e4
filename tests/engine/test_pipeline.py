"""The X-NeMo reenactment pipeline on CPU with tiny networks.

* The denoising loop is checked against the release's own two-step run (parity fixture: tiny
  UNets, real-size motion encoder).
* Everything else runs the seeded demonstration model (``build_tiny_model``) at 64x64 on a real
  portrait (scikit-image's astronaut) and a driving clip synthesized here with PyAV from the
  cameraman's head under a small affine motion, with a sine-tone audio track; faces are found by
  the real dlib detector.
"""

from __future__ import annotations

import gc
import math
import tracemalloc
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from reenactment.engine import faces
from reenactment.engine.demo_model import build_tiny_model, folder_size
from reenactment.engine.faces import FaceBackend
from reenactment.engine.loading import ModelFolderNotFoundError
from reenactment.engine.networks import clear_reference_banks, load_reference_banks
from reenactment.engine.networks import run_reference_pass as reference_pass
from reenactment.engine.pipeline_reenactment import (
    GenerationCancelled,
    PipelineInputError,
    ReenactmentPipeline,
    gaussian_blur,
    plan_segments,
    uniform_context_windows,
)
from reenactment.engine.preprocessing import (
    ColorMatch,
    DrivingFrame,
    ReferenceFace,
    preprocess_reference,
    resize_rgb,
    track_driving_faces,
)
from reenactment.engine.video_io import iter_frames, make_test_clip, probe_video

RESOLUTION = 64
STEPS = 2
NTSC = Fraction(30000, 1001)
CAMERA = np.stack([skdata.camera()] * 3, axis=-1)
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


def head_frame(index: int, size: int = 256) -> np.ndarray:
    """The cameraman's head, upscaled to ``size`` (dlib needs >= ~80 px faces), under a small
    affine motion: rotation up to 3 degrees, shifts up to 6 px, scale within 3 %."""
    head = Image.fromarray(CAMERA[60:252, 124:316]).resize((size, size), Image.Resampling.BICUBIC)
    angle = math.radians(3.0 * math.sin(index / 3.0))
    scale = 1.0 + 0.03 * math.sin(index / 5.0)
    tx, ty = 6.0 * math.sin(index / 4.0), 4.0 * math.cos(index / 3.5)
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    centre = size / 2.0
    off_x = centre - c * (centre + tx) - s * (centre + ty)
    off_y = centre + s * (centre + tx) - c * (centre + ty)
    moved = head.transform(
        (size, size), Image.Transform.AFFINE, (c, s, off_x, -s, c, off_y), Image.Resampling.BILINEAR
    )
    return np.asarray(moved)


def synthetic_driving_frames(count: int, crop_of: ReferenceFace) -> Iterator[DrivingFrame]:
    """Prepared driving frames made on the fly (no detection), for long-video runs."""
    crops = [resize_rgb(head_frame(i), 224, resample="lanczos") for i in range(8)]
    for index in range(count):
        yield DrivingFrame(
            index=index,
            time_s=index / 25.0,
            motion_crop=crops[index % 8].copy(),
            bbox_param=np.array([0.0, 0.0, 1.0], np.float32),
            crop=crop_of.crop,
            detected=True,
        )


def audio_duration(path: Path) -> float:
    """Seconds of decoded audio in ``path``."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def leftovers(folder: Path) -> list[str]:
    """Temporary files a writer might have left behind."""
    return [p.name for p in folder.iterdir() if p.name.endswith(".partial")]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny networks run fastest on one thread, above all on a shared, busy CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", seed=0)


@pytest.fixture(scope="module")
def pipe(model_dir: Path) -> ReenactmentPipeline:
    pipeline = ReenactmentPipeline.from_model_folder(model_dir)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def backend() -> FaceBackend:
    return faces.get_face_backend("dlib")


@pytest.fixture(scope="module")
def reference(backend: FaceBackend) -> ReferenceFace:
    return preprocess_reference(skdata.astronaut(), backend, generation_size=RESOLUTION)


@pytest.fixture(scope="module")
def driving_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 frames at NTSC 29.97 fps with a 440 Hz tone lasting 1 s (longer than the video)."""
    folder = tmp_path_factory.mktemp("driving")
    frames = (head_frame(i) for i in range(12))
    return make_test_clip(
        folder / "driving.mp4", frames, NTSC, audio_tone_hz=440.0, audio_seconds=1.0
    )


@pytest.fixture(scope="module")
def driving_frames(
    driving_clip: Path, reference: ReferenceFace, backend: FaceBackend
) -> list[DrivingFrame]:
    """The clip tracked once, reused by the runs that do not test tracking."""
    return list(
        track_driving_faces(
            iter_frames(driving_clip),
            backend=backend,
            reference=reference,
            fps=float(NTSC),
            detect_every=4,
        )
    )


def run(pipe: ReenactmentPipeline, reference: ReferenceFace, driving: Any, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "num_inference_steps": STEPS,
        "resolution": RESOLUTION,
        "seed": 0,
        "fps": 25,
        "motion_batch_size": 4,  # one input shape for every run: CPU kernels warm up once
    }
    options.update(kwargs)
    return pipe(reference, driving, **options)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def test_context_windows_follow_the_release() -> None:
    assert uniform_context_windows(20) == [list(range(20))]
    assert uniform_context_windows(24, offset=5) == [list(range(24))]
    windows = uniform_context_windows(30)
    assert windows == [list(range(24)), list(range(20, 30)) + list(range(14))]
    windows = uniform_context_windows(100)
    assert len(windows) == 5
    assert windows[-1] == list(range(80, 100)) + list(range(4))
    shifted = uniform_context_windows(100, offset=7)
    assert shifted[0] == list(range(7, 31))
    assert all(len(set(w)) == 24 for w in shifted)
    assert sorted(set().union(*map(set, shifted))) == list(range(100))
    # Open loop: no window starts in the last `overlap` frames (here: no wrap-around).
    assert uniform_context_windows(44, closed_loop=False) == [list(range(24)), list(range(20, 44))]
    assert uniform_context_windows(44)[-1] == [40, 41, 42, 43, *range(20)]
    assert uniform_context_windows(10, 4, 1, 1, offset=0) == [
        [0, 1, 2, 3],
        [3, 4, 5, 6],
        [6, 7, 8, 9],
        [9, 0, 1, 2],
    ]


def test_gaussian_blur_is_torchvisions_reflect_blur() -> None:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((1, 4, 12, 12), generator=generator)
    x = np.arange(-4, 5, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / 18.0) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(latents.numpy()[0], ((0, 0), (4, 4), (4, 4)), mode="reflect")
    expected = np.zeros((4, 12, 12))
    for i in range(9):
        for j in range(9):
            expected += kernel[i] * kernel[j] * padded[:, i : i + 12, j : j + 12]
    np.testing.assert_allclose(gaussian_blur(latents)[0].numpy(), expected, atol=1e-5)
    # Maps too small for reflect padding fall back to replication instead of failing.
    assert gaussian_blur(torch.ones((1, 4, 4, 4))).allclose(torch.ones((1, 4, 4, 4)))


def test_segment_plan() -> None:
    assert plan_segments(230, 500, 24) == [230]
    assert plan_segments(523, 500, 24) == [523]  # a short tail joins the last segment
    assert plan_segments(524, 500, 24) == [500, 24]
    assert plan_segments(40, 16, 8) == [16, 16, 8]
    assert sum(plan_segments(10_001, 500, 24)) == 10_001


def test_initial_latents_are_the_blurred_reference_noised_to_the_first_step(
    pipe: ReenactmentPipeline,
) -> None:
    pipe.scheduler.set_timesteps(35)
    first = pipe.scheduler.timesteps[0]
    assert int(first) == 953  # the release's first step with beta_end 0.02
    generator = torch.Generator().manual_seed(1)
    reference_latents = torch.randn((1, 4, 8, 8), generator=generator)
    noise = torch.randn((1, 4, 3, 8, 8), generator=generator)
    latents = pipe.initial_latents(reference_latents, noise, first)
    alpha = pipe.scheduler.alphas_cumprod[953]
    expected = (
        alpha.sqrt() * gaussian_blur(reference_latents).unsqueeze(2) + (1 - alpha).sqrt() * noise
    )
    torch.testing.assert_close(latents, expected)
    assert float(alpha.sqrt()) == pytest.approx(0.0237, abs=1e-4)


def test_motion_tokens_of_8_bit_crops(pipe: ReenactmentPipeline) -> None:
    generator = torch.Generator().manual_seed(2)
    crops = torch.randint(0, 256, (3, 224, 224, 3), generator=generator, dtype=torch.uint8)
    params = np.array([[0.0, 0.0, 1.0], [0.1, -0.2, 1.1], [0.0, 0.3, 0.9]], np.float32)
    with torch.no_grad():
        tokens = pipe.encode_motion(crops.numpy(), params)
        # h w c uint8 -> c h w in [-1, 1], what the release's image processor produces
        images = crops.permute(0, 3, 1, 2).float() / 127.5 - 1
        expected = pipe.motion_encoder(images, torch.from_numpy(params))
    assert tokens.shape == (3, 32, 16)
    torch.testing.assert_close(tokens, expected)


def test_denoising_loop_matches_the_release(
    pipe: ReenactmentPipeline,
    tiny_unets: tuple[Any, Any],
    scheduler_config: dict[str, Any],
    tiny_inputs: dict[str, torch.Tensor],
    tiny_outputs: dict[str, torch.Tensor],
) -> None:
    """The release's own 2-step run (parity fixture: tiny UNets, guidance 2.5, DDIM)."""
    from diffusers import DDIMScheduler

    reference_unet, denoising_unet = tiny_unets
    release = ReenactmentPipeline(
        vae=pipe.vae,
        image_encoder=pipe.image_encoder,
        reference_unet=reference_unet,
        denoising_unet=denoising_unet,
        motion_encoder=pipe.motion_encoder,  # unused: the fixture's tokens are given
        scheduler=DDIMScheduler(**scheduler_config),
    )
    clip = tiny_inputs["ddim.clip_embeds"]
    release.scheduler.set_timesteps(2)
    torch.testing.assert_close(release.scheduler.timesteps, tiny_inputs["ddim.timesteps"])
    steps: list[torch.Tensor] = []

    def record(step: int, t: Any, latents: torch.Tensor, noise_pred: Any, windows: int) -> Any:
        assert windows == 1
        steps.append(latents.clone())
        return latents

    try:
        with torch.no_grad():
            banks = reference_pass(
                reference_unet,
                tiny_inputs["ddim.ref_latents"].repeat(2, 1, 1, 1),
                torch.cat([torch.zeros_like(clip), clip]),
            )
            load_reference_banks(denoising_unet, banks, do_classifier_free_guidance=True)
            latents, _ = release.denoise_latents(
                tiny_inputs["ddim.init_latents"].clone(),
                tiny_outputs["ddim.step0.motion_tokens"],
                clip,
                tiny_outputs["ddim.neg_motion_tokens"],
                timesteps=release.scheduler.timesteps,
                offsets=lambda: 13,  # a single window: the offset must not matter
                on_step_end=record,
            )
    finally:
        clear_reference_banks(reference_unet, denoising_unet)
    torch.testing.assert_close(steps[0], tiny_outputs["ddim.step0.latents_out"], **TOLERANCE)
    torch.testing.assert_close(
        latents, tiny_outputs["ddim.variant_bank_fp32.final_latents"], **TOLERANCE
    )


# --------------------------------------------------------------------------------------------
# Whole runs
# --------------------------------------------------------------------------------------------


def test_video_keeps_frame_count_fps_and_trimmed_audio(
    pipe: ReenactmentPipeline, reference: ReferenceFace, driving_clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.mp4"
    result = run(pipe, reference, driving_clip, output_path=out, detect_every=4, fps=None)
    assert result.path == out and out.is_file()
    assert result.frames is None  # streamed out, not kept
    info = probe_video(out)
    assert info.frame_count == result.num_frames == 12
    assert info.fps == result.fps == NTSC  # exact, not 25
    assert (info.width, info.height) == result.size == (RESOLUTION, RESOLUTION)  # bare crop
    assert info.has_audio and result.has_audio
    # The 1 s tone is trimmed to the video's 12 / 29.97 s.
    assert audio_duration(out) == pytest.approx(12 / float(NTSC), abs=0.03)
    assert leftovers(tmp_path) == []
    params = result.parameters
    assert params["seed"] == 0 and params["num_inference_steps"] == STEPS
    assert params["guidance_scale"] == 2.5 and params["context_frames"] == 24
    assert params["scheduler"]["class"] == "DDIMScheduler"
    assert params["scheduler"]["beta_end"] == 0.02
    assert params["fps"] == "30000/1001" and params["num_segments"] == 1
    assert set(result.timings) >= {"tracking_s", "denoise_s", "decode_s", "total_s"}


def test_same_seed_gives_identical_frames(
    pipe: ReenactmentPipeline, reference: ReferenceFace, driving_frames: list[DrivingFrame]
) -> None:
    # 8-frame windows over 12 frames: several windows whose offsets come from the seed.
    options = {"context_frames": 8, "context_overlap": 2}
    first = run(pipe, reference, driving_frames, seed=7, **options)
    again = run(pipe, reference, driving_frames, seed=7, **options)
    other = run(pipe, reference, driving_frames, seed=8, **options)
    assert first.num_frames == len(first.frames) == 12
    for a, b in zip(first.frames, again.frames, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first.frames, other.frames, strict=True))
    assert first.parameters["offset_seed"] == again.parameters["offset_seed"]
    assert first.parameters["offset_seed"] != other.parameters["offset_seed"]


def test_paste_back_output_has_the_portraits_size(
    pipe: ReenactmentPipeline, reference: ReferenceFace, driving_frames: list[DrivingFrame]
) -> None:
    result = run(pipe, reference, driving_frames[:4], paste_back=True)
    portrait = reference.image
    assert result.size == (portrait.shape[1], portrait.shape[0])
    crop = reference.crop
    for frame in result.frames:
        assert frame.shape == portrait.shape
        # Left of the face crop the portrait is untouched.
        np.testing.assert_array_equal(frame[:, : crop.x0], portrait[:, : crop.x0])
        assert not np.array_equal(frame, portrait)


def test_color_match_gives_the_generated_faces_the_portraits_colours(
    pipe: ReenactmentPipeline, reference: ReferenceFace, driving_frames: list[DrivingFrame]
) -> None:
    plain = run(pipe, reference, driving_frames[:4])
    matched = run(pipe, reference, driving_frames[:4], color_match="reference")
    assert plain.parameters["color_match"] == "none"
    assert matched.parameters["color_match"] == "reference"
    crop = resize_rgb(reference.generation_crop, RESOLUTION).reshape(-1, 3).astype(np.float64)
    assert len(plain.frames) == len(matched.frames) == 4
    frames = {
        name: np.stack(result.frames).reshape(-1, 3).astype(np.float64)
        for name, result in (("plain", plain), ("matched", matched))
    }
    # The untrained networks' colours are far from the portrait's; matched ones are the
    # portrait's per-channel mean and spread (one fit for the whole clip).
    assert np.abs(frames["plain"].mean(axis=0) - crop.mean(axis=0)).max() > 5
    np.testing.assert_allclose(frames["matched"].mean(axis=0), crop.mean(axis=0), atol=1.5)
    # Exactly the plain frames corrected by one fit on all of them (they fit one decode chunk).
    fit = ColorMatch.fit(np.stack(plain.frames), resize_rgb(reference.generation_crop, RESOLUTION))
    np.testing.assert_array_equal(np.stack(matched.frames), fit.apply(np.stack(plain.frames)))


def test_odd_sized_portrait_gives_an_even_h264_video(
    pipe: ReenactmentPipeline,
    backend: FaceBackend,
    driving_frames: list[DrivingFrame],
    tmp_path: Path,
) -> None:
    portrait = np.ascontiguousarray(skdata.astronaut()[:401, :419])
    odd = preprocess_reference(portrait, backend, generation_size=RESOLUTION)
    out = tmp_path / "odd.mp4"
    result = run(pipe, odd, driving_frames[:3], output_path=out, paste_back=True)
    info = probe_video(out)
    # yuv420p needs even sides: the writer repeats the last column and row.
    assert (info.width, info.height) == result.size == (420, 402)
    assert info.codec == "h264" and info.frame_count == 3


def test_long_video_is_denoised_in_segments_with_carried_frames(
    pipe: ReenactmentPipeline, reference: ReferenceFace, driving_frames: list[DrivingFrame]
) -> None:
    frames = (driving_frames * 4)[:40]
    seen: list[tuple[int, int, int]] = []

    def callback(_pipe: Any, step: int, _t: Any, info: dict[str, Any]) -> dict[str, Any]:
        seen.append((info["segment_index"], step, info["segment_frames"]))
        assert info["num_segments"] == 3 and info["total_frames"] == 40
        return {}

    result = run(
        pipe,
        reference,
        frames,
        segment_frames=16,
        context_frames=8,
        context_overlap=2,
        callback_on_step_end=callback,
    )
    assert result.num_frames == 40 and result.num_segments == 3
    assert seen == [(s, step, n) for s, n in ((0, 16), (1, 16), (2, 8)) for step in range(STEPS)]


def test_carried_frames_follow_the_previous_segments_trajectory(
    pipe: ReenactmentPipeline,
) -> None:
    generator = torch.Generator().manual_seed(3)
    pipe.scheduler.set_timesteps(STEPS)
    timesteps = pipe.scheduler.timesteps
    latents = torch.randn((1, 4, 10, 8, 8), generator=generator)
    tokens = torch.randn((1, 10, 32, 16), generator=generator)
    clip = torch.randn((1, 1, 32), generator=generator)
    negative = torch.randn((1, 32, 16), generator=generator)
    common = {"timesteps": timesteps, "context_frames": 4, "context_overlap": 1}
    with torch.no_grad():
        _, carried = pipe.denoise_latents(latents, tokens, clip, negative, carry_out=3, **common)
        assert len(carried) == STEPS and carried[0].shape == (1, 4, 3, 8, 8)
        torch.testing.assert_close(carried[0], latents[:, :, 7:])
        following = torch.randn((1, 4, 10, 8, 8), generator=generator)
        _, seen = pipe.denoise_latents(
            following, tokens, clip, negative, carry_in=carried, carry_out=10, **common
        )
    # At every step the first three frames start from the previous segment's latents.
    for step in range(STEPS):
        torch.testing.assert_close(seen[step][:, :, :3], carried[step])


def test_strength_runs_the_tail_of_the_schedule_from_a_less_noised_start(
    pipe: ReenactmentPipeline,
    reference: ReferenceFace,
    driving_frames: list[DrivingFrame],
) -> None:
    timesteps: list[int] = []

    def callback(p: ReenactmentPipeline, step: int, t: Any, info: dict[str, Any]) -> dict:
        timesteps.append(int(t))
        if step == 0:
            first_latents.append(info["latents"].clone())
        return {}

    first_latents: list[torch.Tensor] = []
    full = run(
        pipe, reference, driving_frames, num_inference_steps=10, callback_on_step_end=callback
    )
    full_steps = list(timesteps)
    timesteps.clear()
    half = run(
        pipe,
        reference,
        driving_frames,
        num_inference_steps=10,
        strength=0.5,
        initial_latents="reference",
        callback_on_step_end=callback,
    )
    assert len(full_steps) == 10 and timesteps == full_steps[5:]
    assert half.parameters["strength"] == 0.5
    assert half.parameters["initial_latents"] == "reference"
    assert full.parameters["strength"] == 1.0
    assert not np.array_equal(np.stack(full.frames), np.stack(half.frames))
    # Every strength runs at least the last step.
    timesteps.clear()
    run(
        pipe,
        reference,
        driving_frames,
        num_inference_steps=10,
        strength=0.01,
        callback_on_step_end=callback,
    )
    assert timesteps == full_steps[-1:]


def test_unblurred_initial_latents_are_the_reference_noised(pipe: ReenactmentPipeline) -> None:
    pipe.scheduler.set_timesteps(10)
    t = pipe.scheduler.timesteps[5]
    generator = torch.Generator().manual_seed(2)
    reference_latents = torch.randn((1, 4, 8, 8), generator=generator)
    noise = torch.randn((1, 4, 3, 8, 8), generator=generator)
    latents = pipe.initial_latents(reference_latents, noise, t, mode="reference")
    alpha = pipe.scheduler.alphas_cumprod[int(t)]
    expected = alpha.sqrt() * reference_latents.unsqueeze(2) + (1 - alpha).sqrt() * noise
    torch.testing.assert_close(latents, expected)


def test_progress_callback_and_interrupt_leave_no_output(
    pipe: ReenactmentPipeline,
    reference: ReferenceFace,
    driving_frames: list[DrivingFrame],
    tmp_path: Path,
) -> None:
    out = tmp_path / "cancelled.mp4"
    reports: list[dict[str, Any]] = []

    def callback(p: ReenactmentPipeline, step: int, t: Any, info: dict[str, Any]) -> dict:
        reports.append({k: v for k, v in info.items() if k != "latents"})
        assert info["latents"].shape == (1, 4, 12, 8, 8)
        with pytest.raises(RuntimeError, match="already generating"):
            p(reference, driving_frames)  # one call at a time per instance
        p._interrupt = True  # stop at the next step
        return {}

    with pytest.raises(GenerationCancelled):
        run(pipe, reference, driving_frames, output_path=out, callback_on_step_end=callback)
    assert len(reports) == 1
    report = reports[0]
    assert report["step_index"] == 0 and report["num_inference_steps"] == STEPS
    assert report["segment_index"] == 0 and report["num_segments"] == 1
    assert report["num_windows"] == 1 and report["frames_done"] == 0
    assert report["segment_frames"] == 12 and report["total_frames"] == 12
    assert report["progress"] == pytest.approx(0.5)
    assert not out.exists() and leftovers(tmp_path) == []
    assert not pipe.interrupted  # reset for the next call

    polls = iter(range(100))
    with pytest.raises(GenerationCancelled):
        run(
            pipe,
            reference,
            driving_frames,
            output_path=out,
            cancel=lambda: next(polls) > 3,
        )
    assert not out.exists() and leftovers(tmp_path) == []


def live_tensor_bytes(exclude: set[int]) -> int:
    """Bytes of every torch storage reachable from live Python objects, except ``exclude``."""
    seen: dict[int, int] = {}
    for obj in gc.get_objects():
        if type(obj) is torch.Tensor and obj.device.type == "cpu":
            storage = obj.untyped_storage()
            if storage.data_ptr() not in exclude:
                seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def test_long_video_memory_does_not_grow_with_length(
    pipe: ReenactmentPipeline, reference: ReferenceFace
) -> None:
    """Peak memory of a 48-frame run stays at that of a 24-frame run (8-frame segments).

    Frames are pasted into the 512x512 portrait, so keeping the video's frames (786 KB each) or
    its driving crops (150 KB) would add megabytes for the 24 extra frames. Two measurements:

    * Python and numpy allocations (frames, crops): the real peak, from ``tracemalloc``;
    * torch tensors (latents, motion tokens, noise predictions, decoded chunks), which
      ``tracemalloc`` cannot see: every live CPU tensor outside the networks' weights, summed
      at the end of every denoising step, when a segment's tensors are all alive. Both runs
      peak in a middle segment (carried frames in, look-ahead tokens pending, carried frames
      out), so they must match; keeping every frame's latents and tokens (the release's
      design) would add about 3 KB per frame here.

    The frames are generated and dropped (no encoder) to keep the test fast; writing is
    streamed by ``VideoWriter`` and covered by the other runs.
    """
    weights = {
        t.untyped_storage().data_ptr()
        for m in pipe.components.values()
        if isinstance(m, torch.nn.Module)
        for t in [*m.parameters(), *m.buffers()]
    }

    def measure(count: int) -> tuple[int, int]:
        torch_peak = python_peak = 0

        def sample(_pipe: Any, _step: int, _t: Any, _info: dict[str, Any]) -> dict[str, Any]:
            nonlocal torch_peak, python_peak
            python_peak = max(python_peak, tracemalloc.get_traced_memory()[1])
            torch_peak = max(torch_peak, live_tensor_bytes(weights))
            tracemalloc.reset_peak()  # the sampling's own list of objects is not the pipeline's
            return {}

        tracemalloc.start()
        try:
            result = run(
                pipe,
                reference,
                synthetic_driving_frames(count, reference),
                return_frames=False,
                paste_back=True,
                resolution=32,
                segment_frames=8,
                context_frames=8,
                context_overlap=2,
                num_inference_steps=1,
                callback_on_step_end=sample,
            )
            python_peak = max(python_peak, tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert result.num_frames == count and result.frames is None
        assert result.num_segments == max(1, count // 8)
        return python_peak, torch_peak

    measure(4)  # warm-up: first-call allocations (kernels, caches) do not depend on length
    short_python, short_torch = measure(24)
    long_python, long_torch = measure(48)
    # One kept output frame alone would be 786 KB.
    assert long_python < short_python + 300_000, (short_python, long_python)
    # All 48 frames' latents and tokens would add ~80 KB.
    assert long_torch < short_torch + 20_000, (short_torch, long_torch)


# --------------------------------------------------------------------------------------------
# Inputs, model folders
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"context_frames": 40}, "context_frames must be within 1..32"),
        ({"resolution": 60}, "multiple of 8"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"segment_frames": 10}, "segment_frames"),
        ({"negative_clip": "noise"}, "negative_clip must be one of"),
        ({"callback_on_step_end_tensor_inputs": ["banks"]}, "not among"),
        ({"strength": 0.0}, "strength must be in"),
        ({"strength": 1.5}, "strength must be in"),
        ({"initial_latents": "blurred"}, "initial_latents must be one of"),
        ({"color_match": "histogram"}, "color_match must be one of"),
    ],
)
def test_bad_options_are_refused_before_any_work(
    pipe: ReenactmentPipeline,
    reference: ReferenceFace,
    driving_frames: list[DrivingFrame],
    option: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(PipelineInputError, match=message):
        run(pipe, reference, driving_frames, **option)


def test_demo_model_folder(model_dir: Path, tmp_path: Path) -> None:
    assert folder_size(model_dir) < 15_000_000
    card = (model_dir / "README.md").read_text()
    assert "meaningless" in card and "random" in card
    # Idempotent for the same seed; a different seed replaces it; foreign folders are refused.
    assert build_tiny_model(model_dir, seed=0) == model_dir
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_tiny_model(tmp_path / "foreign")


def test_model_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderNotFoundError, match="not found"):
        ReenactmentPipeline.from_model_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderNotFoundError, match="model_index.json") as caught:
        ReenactmentPipeline.from_model_folder(tmp_path / "empty")
    assert "xnemo_*.pth" in str(caught.value)
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "xnemo_reference_unet.pth").write_bytes(b"")
    with pytest.raises(ModelFolderNotFoundError):
        ReenactmentPipeline.from_model_folder(tmp_path / "partial")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tiny_model_on_gpu(
    model_dir: Path,
    reference: ReferenceFace,
    driving_frames: list[DrivingFrame],
    dtype: torch.dtype,
) -> None:
    gpu = ReenactmentPipeline.from_model_folder(model_dir, device="cuda", dtype=dtype)
    gpu.set_progress_bar_config(disable=True)
    first = run(gpu, reference, driving_frames)
    again = run(gpu, reference, driving_frames)
    assert gpu.vae.dtype == torch.float16 and first.num_frames == 12
    for a, b in zip(first.frames, again.frames, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_detail_refiner_runs_on_every_decoded_frame_with_the_portrait(
    pipe: ReenactmentPipeline, reference: ReferenceFace, driving_frames: list[DrivingFrame]
) -> None:
    """A model's detail refiner changes the decoded frames (before the colour match), only
    when asked, is recorded, and refuses a resolution it was not built for."""
    from reenactment.engine.networks import ReferenceDetailRefiner

    torch.manual_seed(0)
    refiner = ReferenceDetailRefiner(
        sample_size=RESOLUTION,
        channels=(8, 16),
        attention_levels=(1,),
        attention_heads=2,
        norm_groups=4,
    ).eval()
    refined_pipe = ReenactmentPipeline(**{**pipe.components, "detail_refiner": refiner})
    refined_pipe.set_progress_bar_config(disable=True)
    frames = driving_frames[:4]
    plain = run(pipe, reference, frames)
    assert plain.parameters["refine_details"] is False  # no refiner, nothing refined
    assert "detail_refiner" not in plain.parameters["components"]

    # Untrained, the refiner is the identity: the same frames, but recorded as refined.
    untrained = run(refined_pipe, reference, frames)
    assert untrained.parameters["refine_details"] is True
    assert untrained.parameters["components"]["detail_refiner"].endswith("ReferenceDetailRefiner")
    for a, b in zip(plain.frames, untrained.frames, strict=True):
        np.testing.assert_array_equal(a, b)

    torch.nn.init.normal_(refiner.conv_out.weight, std=0.05)
    refined = run(refined_pipe, reference, frames)
    assert all(not np.array_equal(a, b) for a, b in zip(plain.frames, refined.frames, strict=True))
    # Exactly the refiner applied to the plain decoded frames with the portrait's crop.
    portrait = ReenactmentPipeline._to_unit_range(
        resize_rgb(reference.generation_crop, RESOLUTION)[None]
    )
    decoded = ReenactmentPipeline._to_unit_range(np.stack(plain.frames))
    with torch.no_grad():
        expected = refiner(decoded, portrait)
    expected_u8 = ((expected.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    got = torch.from_numpy(np.stack(refined.frames)).permute(0, 3, 1, 2)
    # The decoded frames went through uint8 in between here, not in the pipeline.
    assert (got.int() - expected_u8.int()).abs().float().mean() < 1.0
    off = run(refined_pipe, reference, frames, refine_details=False)
    assert off.parameters["refine_details"] is False
    for a, b in zip(plain.frames, off.frames, strict=True):
        np.testing.assert_array_equal(a, b)

    with pytest.raises(PipelineInputError, match=f"works at {RESOLUTION} px"):
        run(refined_pipe, reference, frames, resolution=2 * RESOLUTION)
    with pytest.raises(PipelineInputError, match="refine_details must be true or false"):
        run(refined_pipe, reference, frames, refine_details="yes")
    # Without the refiner, another resolution is fine.
    assert (
        run(
            refined_pipe, reference, frames[:2], resolution=2 * RESOLUTION, refine_details=False
        ).num_frames
        == 2
    )
