"""Tests for reenactment.engine.video_io on real files made with PyAV/Pillow (no mocks)."""

from __future__ import annotations

import os
import re
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from reenactment.engine import video_io as vio
from reenactment.engine.video_io import (
    ImageInputError,
    VideoInputError,
    VideoOutputError,
    VideoWriter,
    fit_within,
    iter_frames,
    load_image,
    make_test_clip,
    orient_frame,
    orientation_from_display_matrix,
    probe_video,
)

FAST = "ultrafast"  # x264 preset that keeps the tests quick


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def marker_frames(n: int, width: int = 64, height: int = 48) -> Iterator[np.ndarray]:
    """Grey frames with a red block in the top-left quadrant and a per-frame counter bar."""
    for i in range(n):
        frame = np.full((height, width, 3), 96, np.uint8)
        frame[: height // 2, : width // 2] = (230, 20, 20)
        frame[-4:, :, 2] = (i * 5) % 256
        yield frame


def noise_frames(n: int, width: int = 64, height: int = 64, seed: int = 0) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def red_corner(frame: np.ndarray) -> str:
    """Which corner of ``frame`` holds the red marker block."""
    h, w = frame.shape[:2]
    corners = {
        "top-left": frame[: h // 4, : w // 4],
        "top-right": frame[: h // 4, -w // 4 :],
        "bottom-left": frame[-h // 4 :, : w // 4],
        "bottom-right": frame[-h // 4 :, -w // 4 :],
    }
    redness = {k: float(v[..., 0].mean()) - float(v[..., 1].mean()) for k, v in corners.items()}
    return max(redness, key=lambda k: redness[k])


def audio_samples(path: Path) -> tuple[np.ndarray, int]:
    """All decoded audio of ``path`` as (channels, samples) float32, and the sample rate."""
    chunks = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        for frame in container.decode(stream):
            chunks.append(frame.to_ndarray().reshape(frame.layout.nb_channels, -1))
    return np.concatenate(chunks, axis=1).astype(np.float32), rate


def transcode(src: Path, dst: Path, *, audio_source: Path | None = None) -> vio.VideoInfo:
    info = probe_video(src)
    with VideoWriter(dst, info.fps, audio_source=audio_source, preset=FAST) as writer:
        for frame in iter_frames(src):
            writer.write(frame)
    return info


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------------
# round trips: frame count, exact fps, size, codec
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [Fraction(30), Fraction(25), Fraction(30000, 1001)])
def test_round_trip_keeps_frame_count_size_and_exact_rate(tmp_path: Path, fps: Fraction) -> None:
    src = make_test_clip(tmp_path / "src.mp4", marker_frames(37), fps)
    info = probe_video(src)
    assert info.fps == fps and isinstance(info.fps, Fraction)
    assert (info.width, info.height, info.frame_count) == (64, 48, 37)
    assert info.frame_count_exact
    assert info.duration == pytest.approx(float(37 / fps), abs=1e-3)

    out = tmp_path / "out.mp4"
    transcode(src, out)
    result = probe_video(out)
    assert result.fps == fps  # exact rational, not 25 and not 29.97
    assert (result.width, result.height, result.frame_count) == (64, 48, 37)
    assert sum(1 for _ in iter_frames(out)) == 37
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == fps
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert not container.streams.audio


def test_output_is_faststart_and_colours_survive(tmp_path: Path) -> None:
    out = tmp_path / "colours.mp4"
    colours = [(230, 20, 20), (20, 200, 40), (30, 40, 220), (250, 250, 250), (10, 10, 10)]
    with VideoWriter(out, 25, crf=10, preset=FAST) as writer:
        for colour in colours:
            writer.write(np.full((64, 64, 3), colour, np.uint8))
    head = out.read_bytes()[:4096]
    assert 0 <= head.find(b"moov") < len(head)  # moov before mdat: playable while downloading
    data = out.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    for frame, colour in zip(iter_frames(out), colours, strict=True):
        assert np.abs(frame[16:48, 16:48].astype(int) - colour).max() <= 8


def test_odd_dimensions_are_padded_to_even_with_edge_pixels(tmp_path: Path) -> None:
    out = tmp_path / "odd.mp4"
    frame = np.zeros((47, 63, 3), np.uint8)
    frame[:, -1] = (0, 200, 0)  # last column green
    frame[-1, :] = (0, 0, 200)  # last row blue
    with VideoWriter(out, 25, crf=0, preset=FAST) as writer:
        for _ in range(3):
            writer.write(frame)
        assert writer.size == (64, 48)
    info = probe_video(out)
    assert (info.width, info.height) == (64, 48)
    decoded = next(iter_frames(out))
    # The added column repeats the green last column, the added row the blue last row.
    assert decoded[10:30, -1, 1].mean() > 150 and decoded[10:30, -1, 0].mean() < 60
    assert decoded[-1, 10:50, 2].mean() > 150


def test_writer_validates_frames(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "v.mp4", 25, preset=FAST) as writer:
        writer.write(np.zeros((32, 32, 3), np.uint8))
        with pytest.raises(ValueError, match="must match the first"):
            writer.write(np.zeros((32, 34, 3), np.uint8))
        with pytest.raises(ValueError, match="uint8 RGB"):
            writer.write(np.zeros((32, 32, 3), np.float32))
        with pytest.raises(ValueError, match="uint8 RGB"):
            writer.write(np.zeros((32, 32), np.uint8))
        with pytest.raises(TypeError):
            writer.write([[0]])  # type: ignore[arg-type]
    assert probe_video(tmp_path / "v.mp4").frame_count == 1


# ------------------------------------------------------------------------------------------
# audio
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("audio_seconds", [3.0, 0.5], ids=["audio-longer", "audio-shorter"])
def test_audio_is_muxed_and_matches_video_duration(tmp_path: Path, audio_seconds: float) -> None:
    fps = Fraction(25)
    src = make_test_clip(
        tmp_path / "drive.mp4",
        marker_frames(30),
        fps,
        audio_tone_hz=440.0,
        sample_rate=44100,
        audio_seconds=audio_seconds,
    )
    info = probe_video(src)
    assert info.has_audio and info.audio_codec == "aac"
    assert (info.audio_sample_rate, info.audio_channels) == (44100, 2)

    out = tmp_path / "out.mp4"
    transcode(src, out, audio_source=src)
    video_seconds = 30 / 25
    result = probe_video(out)
    assert result.has_audio and result.audio_codec == "aac" and result.fps == fps
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        assert stream.duration is not None and stream.time_base is not None
        declared = float(stream.duration * stream.time_base)
    samples, rate = audio_samples(out)
    one_frame = 1024 / rate
    assert declared == pytest.approx(video_seconds, abs=one_frame)
    assert samples.shape[1] / rate == pytest.approx(video_seconds, abs=one_frame)

    def rms(a: float, b: float) -> float:
        return float(np.sqrt(np.mean(samples[:, int(a * rate) : int(b * rate)] ** 2)))

    assert rms(0.05, 0.45) > 0.1  # the tone is there from the start
    if audio_seconds < video_seconds:
        assert rms(0.6, video_seconds - 0.05) < 0.01  # padded with silence, not garbage


def test_audio_from_non_aac_source_is_reencoded_to_aac(tmp_path: Path) -> None:
    # PCM in Matroska: a codec MP4 cannot carry as-is, so this only works by re-encoding.
    src = make_test_clip(
        tmp_path / "drive.mkv",
        marker_frames(20),
        Fraction(20),
        audio_tone_hz=300.0,
        sample_rate=22050,
        audio_channels=1,
        audio_codec="pcm_s16le",
    )
    info = probe_video(src)
    assert info.audio_codec == "pcm_s16le" and info.audio_channels == 1
    assert not info.frame_count_exact  # Matroska has no sample index: estimated count
    assert info.frame_count == 20
    out = tmp_path / "out.mp4"
    transcode(src, out, audio_source=src)
    result = probe_video(out)
    assert (result.audio_codec, result.audio_sample_rate, result.audio_channels) == (
        "aac",
        22050,
        1,
    )
    samples, rate = audio_samples(out)
    assert samples.shape[1] / rate == pytest.approx(1.0, abs=1024 / rate)


def test_audio_starting_after_the_video_is_delayed_to_match(tmp_path: Path) -> None:
    # Build by hand a Matroska file whose audio starts 0.4 s after its first video frame.
    src = tmp_path / "late_audio.mkv"
    rate = 16000
    with av.open(str(src), mode="w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=rate)
        audio.layout = "mono"
        for i, array in enumerate(marker_frames(25)):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, 25)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        t = np.arange(int(0.6 * rate)) / rate
        tone = (0.3 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)[None, :]
        chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        chunk.sample_rate = rate
        chunk.pts = int(0.4 * rate)
        chunk.time_base = Fraction(1, rate)
        for packet in audio.encode(chunk):
            container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)
    out = tmp_path / "out.mp4"
    transcode(src, out, audio_source=src)
    samples, out_rate = audio_samples(out)
    assert samples.shape[1] / out_rate == pytest.approx(1.0, abs=1024 / out_rate)

    def rms(a: float, b: float) -> float:
        return float(np.sqrt(np.mean(samples[:, int(a * out_rate) : int(b * out_rate)] ** 2)))

    assert rms(0.02, 0.35) < 0.01  # silence until the audio really starts
    assert rms(0.45, 0.95) > 0.1


def test_source_without_audio_gives_silent_video(tmp_path: Path) -> None:
    src = make_test_clip(tmp_path / "silent.mp4", marker_frames(5), 25)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 25, audio_source=src, preset=FAST) as writer:
        assert not writer.has_audio
        for frame in iter_frames(src):
            writer.write(frame)
    assert not probe_video(out).has_audio


# ------------------------------------------------------------------------------------------
# streaming
# ------------------------------------------------------------------------------------------


def test_iterating_a_long_clip_keeps_memory_flat(tmp_path: Path) -> None:
    n, side = 600, 64
    src = make_test_clip(
        tmp_path / "long.mp4",
        (np.full((side, side, 3), i % 256, np.uint8) for i in range(n)),
        25,
    )
    all_frames_bytes = n * side * side * 3  # 7.4 MB

    # Warm-up: decoder threads, swscale contexts and lazy imports are one-off costs.
    for _ in zip(range(5), iter_frames(src)):
        pass

    rss_before = rss_bytes()
    rss_peak = rss_before
    tracemalloc.start()
    try:
        count = 0
        for frame in iter_frames(src):
            assert frame.shape == (side, side, 3)
            count += 1
            if count % 50 == 0:
                rss_peak = max(rss_peak, rss_bytes())
        _, traced_peak = tracemalloc.get_traced_memory()

        # Control: tracemalloc does see the yielded frames, so the bound above is meaningful.
        tracemalloc.reset_peak()
        kept = [frame for _, frame in zip(range(100), iter_frames(src))]
        _, kept_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert kept_peak >= 100 * side * side * 3
    assert len(kept) == 100
    assert traced_peak < all_frames_bytes / 20
    assert rss_peak - rss_before < all_frames_bytes / 2


def test_frames_are_independent_writable_arrays(tmp_path: Path) -> None:
    src = make_test_clip(tmp_path / "c.mp4", marker_frames(3), 25)
    frames = list(iter_frames(src))
    assert len(frames) == 3
    for frame in frames:
        assert frame.dtype == np.uint8 and frame.flags.c_contiguous and frame.flags.writeable
        assert frame.flags.owndata
    frames[0][:] = 0  # must not affect the others
    assert frames[1].max() > 0


def test_max_side_downscales_frames(tmp_path: Path) -> None:
    src = make_test_clip(tmp_path / "big.mp4", marker_frames(3, 128, 96), 25)
    info = probe_video(src)
    assert info.output_size(64) == (64, 48)
    frames = list(iter_frames(src, max_side=64))
    assert [f.shape for f in frames] == [(48, 64, 3)] * 3
    assert red_corner(frames[0]) == "top-left"
    assert next(iter_frames(src, max_side=1000)).shape == (96, 128, 3)  # never enlarged


# ------------------------------------------------------------------------------------------
# rotation and pixel aspect
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rotation", "corner"),
    [(0, "top-left"), (90, "top-right"), (180, "bottom-right"), (270, "bottom-left")],
)
def test_rotation_metadata_is_applied(tmp_path: Path, rotation: int, corner: str) -> None:
    src = make_test_clip(tmp_path / "rot.mp4", marker_frames(4, 64, 48), 25, rotation=rotation)
    info = probe_video(src)
    assert info.rotation == rotation and not info.mirrored
    assert (info.coded_width, info.coded_height) == (64, 48)
    expected = (48, 64) if rotation in (90, 270) else (64, 48)
    assert (info.width, info.height) == expected
    frames = list(iter_frames(src))
    assert len(frames) == 4
    assert frames[0].shape == (expected[1], expected[0], 3)
    assert red_corner(frames[0]) == corner
    # Downscaling is computed in display orientation.
    assert next(iter_frames(src, max_side=32)).shape[:2] == (
        (32, 24) if rotation in (90, 270) else (24, 32)
    )


def test_display_matrix_decisions_match_ffmpeg_autorotate() -> None:
    one = 1 << 16
    w = 1 << 30

    def matrix(a: int, b: int, c: int, d: int) -> tuple[int, ...]:
        return (a * one, b * one, 0, c * one, d * one, 0, 0, 0, w)

    assert orientation_from_display_matrix(None) == "identity"
    assert orientation_from_display_matrix(matrix(1, 0, 0, 1)) == "identity"
    # What PyAV's set_display_rotation(-90) (a phone held upright) stores.
    assert orientation_from_display_matrix(matrix(0, 1, -1, 0)) == "rot90cw"
    assert orientation_from_display_matrix(matrix(0, -1, 1, 0)) == "rot90ccw"
    assert orientation_from_display_matrix(matrix(-1, 0, 0, -1)) == "rot180"
    assert orientation_from_display_matrix(matrix(-1, 0, 0, 1)) == "hflip"
    assert orientation_from_display_matrix(matrix(1, 0, 0, -1)) == "vflip"
    assert orientation_from_display_matrix(matrix(0, 1, 1, 0)) == "transpose"
    assert orientation_from_display_matrix(matrix(0, -1, -1, 0)) == "transverse"

    image = np.arange(2 * 3, dtype=np.uint8).reshape(2, 3, 1)
    assert orient_frame(image, "rot90cw")[..., 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    assert orient_frame(image, "rot90ccw")[..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]
    assert orient_frame(image, "transpose")[..., 0].tolist() == [[0, 3], [1, 4], [2, 5]]
    assert orient_frame(image, "transverse")[..., 0].tolist() == [[5, 2], [4, 1], [3, 0]]
    assert orient_frame(image, "hflip")[..., 0].tolist() == [[2, 1, 0], [5, 4, 3]]


def test_non_square_pixels_are_corrected(tmp_path: Path) -> None:
    src = make_test_clip(
        tmp_path / "sar.mp4", marker_frames(2, 64, 48), 25, sample_aspect_ratio=Fraction(2)
    )
    info = probe_video(src)
    assert info.sample_aspect_ratio == 2
    assert (info.width, info.height) == (128, 48)
    assert next(iter_frames(src)).shape == (48, 128, 3)


# ------------------------------------------------------------------------------------------
# atomic writing
# ------------------------------------------------------------------------------------------


def test_writer_publishes_only_on_successful_close(tmp_path: Path) -> None:
    out = tmp_path / "result.mp4"
    writer = VideoWriter(out, 25, preset=FAST)
    for frame in marker_frames(3):
        writer.write(frame)
    assert not out.exists()
    assert len(leftovers(tmp_path)) == 1  # work in progress lives in a hidden temp file
    assert writer.close() == out
    assert out.exists() and leftovers(tmp_path) == []
    assert writer.close() == out  # idempotent
    with pytest.raises(RuntimeError):
        writer.write(next(marker_frames(1)))


def test_exception_leaves_no_file_and_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "result.mp4"
    with pytest.raises(KeyError), VideoWriter(out, 25, preset=FAST) as writer:
        for frame in marker_frames(5):
            writer.write(frame)
        raise KeyError("pipeline failed midway")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_existing_destination_intact(tmp_path: Path) -> None:
    out = tmp_path / "result.mp4"
    out.write_bytes(b"previous good result")
    with pytest.raises(RuntimeError), VideoWriter(out, 25, preset=FAST) as writer:
        writer.write(next(marker_frames(1)))
        raise RuntimeError("boom")
    assert out.read_bytes() == b"previous good result"

    writer = VideoWriter(out, 25, preset=FAST)
    writer.write(next(marker_frames(1)))
    writer.abort()
    writer.abort()  # idempotent
    assert out.read_bytes() == b"previous good result"
    with pytest.raises(RuntimeError):
        writer.close()

    # An empty video is refused, and refusing it changes nothing either.
    with pytest.raises(VideoOutputError, match="no frames"), VideoWriter(out, 25):
        pass
    assert out.read_bytes() == b"previous good result"
    assert [p.name for p in tmp_path.iterdir()] == ["result.mp4"]

    # A successful write replaces it.
    with VideoWriter(out, 25, preset=FAST) as writer:
        writer.write(next(marker_frames(1)))
    assert probe_video(out).frame_count == 1
    assert [p.name for p in tmp_path.iterdir()] == ["result.mp4"]


def test_bad_audio_source_fails_before_anything_is_written(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.mp4"
    bogus.write_text("not media")
    with pytest.raises(VideoInputError, match="audio source"):
        VideoWriter(tmp_path / "out.mp4", 25, audio_source=bogus)
    assert [p.name for p in tmp_path.iterdir()] == ["bogus.mp4"]
    with pytest.raises(VideoOutputError, match="does not exist"):
        VideoWriter(tmp_path / "missing" / "out.mp4", 25)


def test_dropped_writer_removes_its_temp_file(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "out.mp4", 25, preset=FAST)
    writer.write(next(marker_frames(1)))
    del writer
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# bad video input
# ------------------------------------------------------------------------------------------


def expect_video_error(path: Path, code: str, text: str) -> VideoInputError:
    with pytest.raises(VideoInputError) as caught:
        probe_video(path)
    assert caught.value.code == code
    assert text in str(caught.value)
    assert path.name in str(caught.value)
    return caught.value


def test_text_file_renamed_mp4(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is a shopping list, not a video\n" * 20)
    expect_video_error(path, "unreadable", "not a video or unreadable")
    with pytest.raises(VideoInputError):
        next(iter_frames(path))


def test_missing_file(tmp_path: Path) -> None:
    expect_video_error(tmp_path / "nope.mp4", "not_found", "not found")


def test_truncated_mp4_without_index_is_unreadable(tmp_path: Path) -> None:
    # Camera-style MP4: the index (moov) is written last, so the first half has none.
    src = make_test_clip(tmp_path / "full.mp4", noise_frames(60), 25)
    data = src.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    expect_video_error(cut, "unreadable", "not a video or unreadable")


def test_truncated_faststart_mp4_is_an_error_naming_the_frame(tmp_path: Path) -> None:
    # Web-style MP4 (index first): the header promises 60 frames, the data stops halfway.
    # Decision: an error, found up front from the index, not a silently shorter result.
    full = tmp_path / "full.mp4"
    with VideoWriter(full, 25, preset=FAST) as writer:
        for frame in noise_frames(60):
            writer.write(frame)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    error = expect_video_error(cut, "truncated", "the video is truncated")
    match = re.search(
        r"only (\d+) of 60 frames are in the file; it stops at frame \1 \((\S+) s", str(error)
    )
    assert match, str(error)
    present = int(match.group(1))
    assert 20 < present < 40
    assert float(match.group(2)) == pytest.approx(present / 25, abs=0.01)
    with pytest.raises(VideoInputError, match="truncated"):
        next(iter_frames(cut))  # refused before any frame is produced


def test_truncated_matroska_yields_prefix_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Matroska has no per-frame index to prove frames are missing (its duration covers the
    # audio too), so the decodable prefix is returned and the suspicion logged.
    src = make_test_clip(tmp_path / "full.mkv", noise_frames(60), 25)
    with caplog.at_level("WARNING", logger=vio.__name__):
        assert sum(1 for _ in iter_frames(src)) == 60
    assert "truncated?" not in caplog.text  # the complete file raises no suspicion
    data = src.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    info = probe_video(cut)
    assert not info.frame_count_exact and info.duration == pytest.approx(2.4, abs=0.05)
    with caplog.at_level("WARNING", logger=vio.__name__):
        count = sum(1 for _ in iter_frames(cut))
    assert 10 < count < 50
    assert "truncated?" in caplog.text and "cut.mkv" in caplog.text


def test_mid_stream_decoding_failure_names_frame_and_time(tmp_path: Path) -> None:
    # Complete file, but from frame 30 on every packet's payload is garbage.
    src = make_test_clip(tmp_path / "clip.mp4", noise_frames(60), 25)
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as container:
        entries = [(e.timestamp, e.pos, e.size) for e in container.streams.video[0].index_entries]
    for _, pos, size in sorted(entries)[30:]:
        data[pos : pos + size] = bytes(size)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    probe_video(broken)  # the beginning is fine
    seen = 0
    with pytest.raises(VideoInputError) as caught:
        for _ in iter_frames(broken):
            seen += 1
    assert caught.value.code == "decode_failed"
    assert 25 <= seen <= 30
    assert f"decoding failed at frame {seen} ({seen / 25:.2f} s)" in str(caught.value)


def test_zero_decodable_frames(tmp_path: Path) -> None:
    # Valid container and index, but every video packet is zeroed out.
    src = make_test_clip(tmp_path / "clip.mp4", noise_frames(20), 25)
    data = bytearray(src.read_bytes())
    at = data.find(b"mdat")
    size = int.from_bytes(data[at - 4 : at], "big")
    data[at + 4 : at - 4 + size] = bytes(size - 8)
    zeroed = tmp_path / "zeroed.mp4"
    zeroed.write_bytes(bytes(data))
    expect_video_error(zeroed, "zero_frames", "has zero decodable frames")
    with pytest.raises(VideoInputError, match="zero decodable frames"):
        list(iter_frames(zeroed))


def test_isolated_corruption_is_tolerated(tmp_path: Path) -> None:
    src = make_test_clip(tmp_path / "clip.mp4", noise_frames(60), 25)
    data = bytearray(src.read_bytes())
    start = data.find(b"mdat") + 8
    end = data.find(b"moov")
    for offset in np.linspace(start + (end - start) // 3, end - 200, 3).astype(int):
        data[offset : offset + 16] = b"\xff" * 16
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    # The damage is real: FFmpeg flags the frames it had to conceal...
    with av.open(str(damaged)) as container:
        flags = [frame.is_corrupt for frame in container.decode(video=0)]
    assert any(flags)
    # ...and the reader passes them through instead of failing the whole video.
    assert sum(1 for _ in iter_frames(damaged)) >= 58


def test_audio_only_file(tmp_path: Path) -> None:
    path = make_test_clip(tmp_path / "voice.m4a", [], 25, audio_tone_hz=440.0, audio_seconds=0.5)
    expect_video_error(path, "no_video_stream", "contains no video stream (audio-only file?)")


def test_extreme_aspect_ratio(tmp_path: Path) -> None:
    path = make_test_clip(tmp_path / "strip.mp4", (np.zeros((16, 640, 3), np.uint8),) * 2, 25)
    error = expect_video_error(path, "aspect_ratio", "aspect ratio 40:1")
    assert "outside the supported range" in str(error)


def test_tiny_video(tmp_path: Path) -> None:
    path = make_test_clip(tmp_path / "tiny.mp4", (np.zeros((16, 16, 3), np.uint8),) * 2, 25)
    expect_video_error(path, "too_small", "too small")


def test_still_image_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "photo.mp4"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(path, format="PNG")
    expect_video_error(path, "unsupported_format", "unsupported format")


# ------------------------------------------------------------------------------------------
# portrait images
# ------------------------------------------------------------------------------------------


def test_very_large_image_is_downscaled_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    # Greyscale keeps the 54-megapixel test light; load_image must still return RGB.
    big = Image.new("L", (9000, 6000), 90)
    big.paste(200, (0, 0, 4500, 3000))
    big.save(path, compress_level=1)
    del big
    array, report = load_image(path)
    assert array.shape == (2731, 4096, 3) and array.dtype == np.uint8
    assert report.downscaled
    assert report.original_size == (9000, 6000) and report.size == (4096, 2731)
    assert "9000x6000" in report.message and "4096x2731" in report.message
    assert "4096 px" in report.message
    assert array[100, 100].tolist() == [200, 200, 200] and array[-100, -100].tolist() == [90] * 3


def test_large_jpeg_uses_reduced_decoding_and_exact_target(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (3000, 2000), (200, 100, 50)).save(path, quality=90)
    array, report = load_image(path, max_side=700)
    assert array.shape == (467, 700, 3)
    assert report.format == "JPEG" and report.size == (700, 467)
    assert np.abs(array[200, 300].astype(int) - (200, 100, 50)).max() <= 6


def test_small_image_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "face.png"
    Image.new("RGB", (300, 400), (1, 2, 3)).save(path)
    array, report = load_image(path)
    assert array.shape == (400, 300, 3)
    assert not report.downscaled and report.message == ""
    assert report.original_size == report.size == (300, 400)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    raw = np.full((120, 160, 3), 96, np.uint8)
    raw[:60, :80] = (230, 20, 20)  # red top-left as stored
    image = Image.fromarray(raw)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone held upright
    path = tmp_path / "phone.jpg"
    image.save(path, quality=95, exif=exif.tobytes())
    array, report = load_image(path)
    assert array.shape == (160, 120, 3)
    assert report.exif_orientation == 6 and report.original_size == (120, 160)
    assert red_corner(array) == "top-right"


def test_transparency_is_flattened_onto_white(tmp_path: Path) -> None:
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[:50] = (255, 0, 0, 255)  # opaque red top half, transparent bottom half
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    array, report = load_image(path)
    assert report.flattened_alpha and report.original_mode == "RGBA"
    assert array[10, 10].tolist() == [255, 0, 0]
    assert array[90, 90].tolist() == [255, 255, 255]


def test_sixteen_bit_greyscale_is_scaled(tmp_path: Path) -> None:
    values = np.full((80, 80), 32768, np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    array, _ = load_image(path)
    assert array.shape == (80, 80, 3)
    assert abs(int(array[0, 0, 0]) - 128) <= 1


@pytest.mark.parametrize(
    ("name", "make", "code", "text"),
    [
        (
            "garbage.jpg",
            lambda p: p.write_bytes(b"\x00\x13not an image at all" * 100),
            "unreadable",
            "not an image",
        ),
        (
            "anim.gif",
            lambda p: Image.new("RGB", (100, 100)).save(p, format="GIF"),
            "unsupported_format",
            "unsupported image format GIF",
        ),
        (
            "scan.tiff",
            lambda p: Image.new("RGB", (100, 100)).save(p, format="TIFF"),
            "unsupported_format",
            "unsupported image format TIFF",
        ),
        (
            "icon.png",
            lambda p: Image.new("RGB", (40, 40)).save(p),
            "too_small",
            "too small (40x40)",
        ),
        (
            "banner.png",
            lambda p: Image.new("RGB", (1000, 100)).save(p),
            "aspect_ratio",
            "aspect ratio 10:1",
        ),
    ],
)
def test_bad_images(
    tmp_path: Path, name: str, make: Callable[[Path], object], code: str, text: str
) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(ImageInputError) as caught:
        load_image(path)
    assert caught.value.code == code
    assert text in str(caught.value) and name in str(caught.value)


def test_truncated_jpeg_is_reported_as_corrupt(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(whole, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImageInputError) as caught:
        load_image(cut)
    assert caught.value.code == "corrupt"
    assert "corrupt or truncated" in str(caught.value)
    with pytest.raises(ImageInputError, match="not found"):
        load_image(tmp_path / "absent.png")


# ------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------


def test_fit_within() -> None:
    assert fit_within(9000, 6000, 4096) == (4096, 2731)
    assert fit_within(6000, 9000, 4096) == (2731, 4096)
    assert fit_within(100, 50, 4096) == (100, 50)
    assert fit_within(100, 50, None) == (100, 50)


def test_make_test_clip_needs_content(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_test_clip(tmp_path / "empty.mp4", [], 25)


def test_error_hierarchy() -> None:
    assert issubclass(VideoInputError, vio.MediaInputError)
    assert issubclass(ImageInputError, vio.MediaInputError)
    assert issubclass(vio.MediaInputError, ValueError)
    assert issubclass(VideoOutputError, vio.MediaError)
    assert struct.calcsize("=9i") == 36  # display-matrix layout assumed by the reader
