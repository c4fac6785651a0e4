"""``python -m reenactment.engine animate``: a real run, and every kind of bad input.

The model is the seeded demonstration model (``build_tiny_model``) at 64x64; the portrait is
scikit-image's astronaut; the driving clip is synthesized with PyAV from the cameraman's head
under a small affine motion, with a sine tone. Bad input must give exit code 2, one line on
stderr (no traceback) and no output file, not even a temporary one.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from reenactment.engine.__main__ import (
    RELEASE_SETTINGS,
    _generation_settings,
    build_parser,
    main,
)
from reenactment.engine.demo_model import build_tiny_model
from reenactment.engine.video_io import make_test_clip, probe_video

REPO_ROOT = Path(__file__).resolve().parents[2]
CAMERA = np.stack([skdata.camera()] * 3, axis=-1)
FAST = ["--steps", "2", "--resolution", "64", "--detect-every", "4", "--seed", "5"]


def head_frame(index: int, size: int = 256) -> np.ndarray:
    """The cameraman's head, upscaled to ``size``, under a small affine motion."""
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


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny networks run fastest on one thread, above all on a shared, busy CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model, portrait and driving clip, made once for the module."""
    folder = tmp_path_factory.mktemp("media")
    build_tiny_model(folder / "model", seed=0)
    Image.fromarray(skdata.astronaut()).save(folder / "portrait.png")
    make_test_clip(
        folder / "driving.mp4",
        (head_frame(i) for i in range(12)),
        10,
        audio_tone_hz=440.0,
        audio_seconds=2.0,  # longer than the 1.2 s of video: must be trimmed
    )
    return folder


def animate(media: Path, out: Path, *extra: str, **paths: Path) -> list[str]:
    args = {
        "--portrait": paths.get("portrait", media / "portrait.png"),
        "--driving": paths.get("driving", media / "driving.mp4"),
        "--out": out,
        "--model": paths.get("model", media / "model"),
    }
    return ["animate", *(str(x) for pair in args.items() for x in pair), *FAST, *extra]


def test_animate_writes_the_pasted_back_video(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.mp4"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(
        [sys.executable, "-m", "reenactment.engine", *animate(media, out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"wrote {out}: 12 frames, 512x512, 10 fps, audio yes")
    assert "seed 5" in completed.stdout
    assert "Traceback" not in completed.stderr
    info = probe_video(out)
    # Paste-back is the default: the portrait's size; fps and frame count of the driving video.
    assert (info.width, info.height) == (512, 512)
    assert info.frame_count == 12 and info.fps == 10
    assert info.codec == "h264" and info.pixel_format == "yuv420p"
    assert info.has_audio and audio_seconds(out) == pytest.approx(1.2, abs=0.03)
    assert files_in(tmp_path) == ["result.mp4"]  # the temporary file was renamed


def test_bare_crop_from_a_downscaled_large_portrait(
    media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.png"
    Image.fromarray(skdata.astronaut()).resize((1200, 1200)).save(big)
    out = tmp_path / "crop.mp4"
    argv = animate(media, out, "--no-paste-back", "--max-portrait-side", "600", "--quiet")
    argv[argv.index("--portrait") + 1] = str(big)
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert (
        "note: big.png: image downscaled from 1200x1200 to 600x600 "
        "(longer side limited to 600 px)" in captured.err
    )
    info = probe_video(out)
    assert (info.width, info.height) == (64, 64) and info.frame_count == 12


# --------------------------------------------------------------------------------------------
# Bad input: exit code 2, one clear line, no output
# --------------------------------------------------------------------------------------------


def text_as_mp4(folder: Path) -> Path:
    path = folder / "notes.mp4"
    path.write_text("this is a shopping list, not a video\n" * 20)
    return path


def truncated_mp4(folder: Path) -> Path:
    full = make_test_clip(folder / "full.mp4", (head_frame(i) for i in range(10)), 10)
    data = full.read_bytes()
    cut = folder / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: gone
    return cut


def zero_frame_mp4(folder: Path) -> Path:
    clip = make_test_clip(folder / "clip.mp4", (head_frame(i) for i in range(4)), 10)
    data = bytearray(clip.read_bytes())
    at = data.find(b"mdat")
    size = int.from_bytes(data[at - 4 : at], "big")
    data[at + 4 : at - 4 + size] = bytes(size - 8)  # every video packet zeroed
    path = folder / "zeroed.mp4"
    path.write_bytes(bytes(data))
    return path


def audio_only(folder: Path) -> Path:
    return make_test_clip(folder / "voice.m4a", [], 10, audio_tone_hz=440.0, audio_seconds=0.5)


def image_as_driving(folder: Path) -> Path:
    path = folder / "still.png"
    Image.fromarray(head_frame(0)).save(path)
    return path


def strip_video(folder: Path) -> Path:
    return make_test_clip(folder / "strip.mp4", (np.zeros((32, 640, 3), np.uint8),) * 3, 10)


def lost_face_clip(folder: Path) -> Path:
    blank = np.full((256, 256, 3), 96, np.uint8)
    frames = [head_frame(i) for i in range(5)] + [blank] * 12
    return make_test_clip(folder / "lost.mp4", frames, 10)


def strip_image(folder: Path) -> Path:
    path = folder / "strip.png"
    Image.fromarray(np.zeros((100, 1000, 3), np.uint8)).save(path)
    return path


def gif_image(folder: Path) -> Path:
    path = folder / "portrait.gif"
    Image.fromarray(skdata.astronaut()).save(path)
    return path


def corrupt_jpeg(folder: Path) -> Path:
    path = folder / "portrait.jpg"
    Image.fromarray(skdata.astronaut()).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def faceless_image(folder: Path) -> Path:
    path = folder / "wall.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(path)
    return path


def two_faces(folder: Path) -> Path:
    path = folder / "pair.png"
    astronaut = skdata.astronaut()
    Image.fromarray(np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)).save(path)
    return path


def empty_model(folder: Path) -> Path:
    path = folder / "not-a-model"
    path.mkdir()
    (path / "weights.bin").write_bytes(b"\0" * 16)
    return path


BAD_DRIVING: list[tuple[str, Callable[[Path], Path], str]] = [
    ("corrupt", text_as_mp4, "not a video or unreadable"),
    ("truncated", truncated_mp4, "not a video or unreadable"),
    ("zero-frames", zero_frame_mp4, "has zero decodable frames"),
    ("audio-only", audio_only, "contains no video stream (audio-only file?)"),
    ("still-image", image_as_driving, "unsupported format"),
    ("extreme-aspect", strip_video, "aspect ratio 20:1"),
    ("face-lost", lost_face_clip, "face is lost for more than 0.5 s from second 0.5"),
]
BAD_PORTRAIT: list[tuple[str, Callable[[Path], Path], str]] = [
    ("extreme-aspect", strip_image, "aspect ratio 10:1"),
    ("gif", gif_image, "unsupported image format GIF"),
    ("corrupt", corrupt_jpeg, "corrupt or truncated"),
    ("no-face", faceless_image, "no face found"),
    ("two-faces", two_faces, "found 2 similarly large faces"),
]


def expect_bad_input(
    argv: list[str], out: Path, capsys: pytest.CaptureFixture[str], message: str
) -> None:
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".partial")]


def widened_copy(model: Path, out: Path, channels: int) -> Path:
    """A copy of ``model`` with ``channels`` latent channels, widened as the trainer's
    ``init_widen_latent`` does (same function on the old channels)."""
    from diffusers import AutoencoderKLTemporalDecoder

    from reenactment.engine.networks import UNet2DReferenceModel, UNet3DDenoisingModel
    from reenactment.engine.training.latent_expansion import widen_latent_state

    shutil.copytree(model, out)
    networks: tuple[tuple[str, Any, tuple[str, ...]], ...] = (
        ("vae", AutoencoderKLTemporalDecoder, ("latent_channels",)),
        ("reference_unet", UNet2DReferenceModel, ("in_channels",)),
        ("denoising_unet", UNet3DDenoisingModel, ("in_channels", "out_channels")),
    )
    for name, cls, keys in networks:
        old = cls.from_pretrained(out / name)
        new = cls.from_config({**old.config, **dict.fromkeys(keys, channels)})
        new.load_state_dict(
            widen_latent_state(name, old.state_dict(), new.state_dict(), 4, channels)
        )
        new.save_pretrained(out / name)
    return out


def test_a_model_with_more_latent_channels_animates(
    media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The product pipeline draws its noise with the VAE's latent channels, not a fixed 4."""
    wide = widened_copy(media / "model", tmp_path / "wide", 8)
    out = tmp_path / "wide.mp4"
    assert main([*animate(media, out, "--no-paste-back", "--quiet", model=wide)]) == 0
    info = probe_video(out)
    assert (info.width, info.height) == (64, 64) and info.frame_count == 12
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(("name", "make", "message"), BAD_DRIVING, ids=[b[0] for b in BAD_DRIVING])
def test_bad_driving_video(
    media: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    make: Callable[[Path], Path],
    message: str,
) -> None:
    out = tmp_path / "out" / "result.mp4"
    out.parent.mkdir()
    argv = animate(media, out, "--max-gap-seconds", "0.5", driving=make(tmp_path))
    if name == "face-lost":
        argv[argv.index("--detect-every") + 1] = "2"
    expect_bad_input(argv, out, capsys, message)


@pytest.mark.parametrize(
    ("name", "make", "message"), BAD_PORTRAIT, ids=[b[0] for b in BAD_PORTRAIT]
)
def test_bad_portrait(
    media: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    make: Callable[[Path], Path],
    message: str,
) -> None:
    out = tmp_path / "out" / "result.mp4"
    out.parent.mkdir()
    expect_bad_input(animate(media, out, portrait=make(tmp_path)), out, capsys, message)


def test_bad_model_folder_device_and_output_name(
    media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "result.mp4"
    expect_bad_input(
        animate(media, out, model=empty_model(tmp_path)), out, capsys, "is not a model folder"
    )
    expect_bad_input(
        animate(media, out, model=tmp_path / "nowhere"), out, capsys, "model folder not found"
    )
    broken = tmp_path / "broken-defaults"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_generation_defaults": {"strength": "half"}}')
    expect_bad_input(
        animate(media, out, model=broken), out, capsys, "unusable _generation_defaults"
    )
    # The generation size must fit the model's own autoencoder tile: 8 px for the tiny model,
    # 4 px for the preview model (so 68 would do there, 66 not).
    expect_bad_input(
        animate(media, out, "--resolution", "60"), out, capsys, "multiple of 8 (this model's"
    )
    preview = Path(__file__).resolve().parents[2] / "reenactment" / "engine" / "preview_model"
    expect_bad_input(
        animate(media, out, "--resolution", "66", model=preview),
        out,
        capsys,
        "--resolution must be a multiple of 4 (this model's autoencoder tile), got 66",
    )
    wrong = tmp_path / "result.avi"
    expect_bad_input(animate(media, wrong), wrong, capsys, "the output must be an .mp4 file")
    expect_bad_input(animate(media, out, "--device", "warp9"), out, capsys, "not a device name")
    if not torch.cuda.is_available():
        expect_bad_input(
            animate(media, out, "--device", "cuda"), out, capsys, "CUDA is not available"
        )


def test_commands_are_registered() -> None:
    text = build_parser().format_help()
    assert "animate" in text and "inspect-checkpoint" in text
    args = build_parser().parse_args(
        ["animate", "--portrait", "p", "--driving", "d", "--out", "o.mp4", "--model", "m"]
    )
    assert (args.seed, args.no_paste_back, args.device, args.dtype) == (None, False, "auto", "auto")
    # Generation settings not given come from the model folder, else from the release.
    assert (args.steps, args.guidance, args.resolution, args.strength) == (None, None, None, None)
    assert (
        _generation_settings(args)
        == RELEASE_SETTINGS
        == {
            "num_inference_steps": 35,
            "guidance_scale": 2.5,
            "resolution": 512,
            "strength": 1.0,
            "initial_latents": "blurred_reference",
            "color_match": "none",
            "refine_details": True,
        }
    )
    args.steps = 4
    args.color_match = "reference"
    assert _generation_settings(args)["num_inference_steps"] == 4
    assert _generation_settings(args)["color_match"] == "reference"
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["animate", "--portrait", "p", "--driving", "d", "--out", "o.mp4"]
            + ["--model", "m", "--color-match", "histogram"]
        )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["animate", "--portrait", "p"])
    assert main(["inspect-checkpoint", "/nonexistent/checkpoint.pth"]) == 2
