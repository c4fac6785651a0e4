"""SynthFace rendering speed, one process, against a naive PIL baseline measured in the same run.

Run: ``.venv/bin/python benchmarks/synthface_speed.py [--seconds 2.0]``

Prints frames/s of :func:`render_frame` at 64, 128 and 256 px; clips/s for a 16-frame 128 px
clip kept in memory and written as an H.264 MP4 (plus the sidecar and manifest, through
:func:`generate_dataset`); and the speed ratio against a straightforward PIL ``ImageDraw``
renderer of the same scene (the same projected 3-D feature outlines drawn as flat polygons at 4x
resolution, then box-filtered down for anti-aliasing). The baseline does *less* work than
SynthFace (no per-pixel depth, shading or soft eyelid/iris clipping), so the ratio is
conservative. A second column ablates SynthFace's bounding-box culling (every primitive
rasterised over the whole frame; the image matches up to a few pixels of soft tails) to show
what rasterising each primitive only inside its projected box buys.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reenactment.engine.synthface import (  # noqa: E402 - after the path set-up
    IdentityParams,
    MotionParams,
    MotionTrack,
    generate_dataset,
    render_clip,
    render_frame,
)
from reenactment.engine.synthface import render as _render_mod  # noqa: E402
from reenactment.engine.synthface.render import _ZOOM, _rotation  # noqa: E402


def _rate(fn: Callable[[int], object], seconds: float) -> float:
    """Calls per second of ``fn(i)`` over about ``seconds`` (after one warm-up call)."""
    fn(0)
    n, start = 0, time.perf_counter()
    while True:
        fn(n)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 3:
            return n / elapsed


# ---------------------------------------------------------------------------- PIL baseline


def _to255(rgb: tuple[float, float, float], k: float = 1.0) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, round(c * k * 255)))) for c in rgb)  # type: ignore[return-value]


def pil_baseline(ident: IdentityParams, m: MotionParams, size: int, ss: int = 4) -> np.ndarray:
    """The same scene drawn naively with PIL: projected outlines as flat polygons, 4x SSAA."""
    big = size * ss
    img = Image.new("RGB", (big, big), _to255(ident.background_rgb))
    draw = ImageDraw.Draw(img)
    rot = _rotation(m.yaw, m.pitch, m.roll)
    s = m.scale * _ZOOM
    t = np.array([m.tx, m.ty, 0.0])
    a, b = ident.face_width, ident.face_height

    def px(points: np.ndarray) -> list[tuple[float, float]]:
        world = s * points @ rot.T + t
        return [((x + 1) * big / 2, (1 - y) * big / 2) for x, y in world[:, :2]]

    def on_face(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        z = 0.95 * a * np.sqrt(np.clip(1 - (u / a) ** 2 - (v / b) ** 2, 0, 1))
        return np.stack([u, v, z], 1)

    def ellipse(cu: float, cv: float, ru: float, rv: float, n: int = 24) -> np.ndarray:
        ang = np.linspace(0, 2 * math.pi, n, endpoint=False)
        return on_face(cu + ru * np.cos(ang), cv + rv * np.sin(ang))

    body = [(-2.1 * a * s + m.tx, -b * s - 0.1), (2.1 * a * s + m.tx, 1.0)]
    bx = [((x + 1) * big / 2) for x, _ in body]
    draw.ellipse(
        [bx[0], (1 + b * s + 0.07) * big / 2, bx[1], big * 1.3], fill=_to255(ident.clothing_rgb)
    )
    draw.rectangle(
        [
            (m.tx + 1 - 0.5 * a * s) * big / 2,
            (1 - m.ty) * big / 2,
            (m.tx + 1 + 0.5 * a * s) * big / 2,
            big * 0.95,
        ],
        fill=_to255(ident.skin_rgb, 0.85),
    )
    ang = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    if ident.hair_style != "none":
        hair = np.stack(
            [
                (a + 0.035) * np.cos(ang),
                0.9 * b * np.sin(ang) + 0.13 * b + 0.04,
                np.zeros_like(ang),
            ],
            1,
        )
        draw.polygon(px(hair), fill=_to255(ident.hair_rgb))
    for side in (-1, 1):
        draw.polygon(
            px(ellipse(side * 0.975 * a, -0.035, 0.032, ident.ear_size, 16) * [1, 1, 0]),
            fill=_to255(ident.skin_rgb, 0.9),
        )
    taper = np.where(
        np.sin(ang) < 0, 1 - (1 - (0.72 + 0.3 * ident.jaw_roundness)) * np.sin(ang) ** 2, 1.0
    )
    head = np.stack([a * taper * np.cos(ang), b * np.sin(ang), np.zeros_like(ang)], 1)
    draw.polygon(px(head), fill=_to255(ident.skin_rgb))
    if ident.hair_style != "none":
        u = np.linspace(-a, a, 24)
        cap = on_face(
            np.concatenate([u, u[::-1]]),
            np.concatenate([np.full(24, 0.25), b * np.sqrt(1 - (u[::-1] / a) ** 2)]),
        )
        draw.polygon(px(cap), fill=_to255(ident.hair_rgb))
    ew = ident.eye_size
    eh = ew * ident.eye_aspect
    for side in (-1, 1):
        ex = side * ident.eye_spacing
        uu = np.linspace(-ew, ew, 16)
        top = eh * np.sqrt(1 - (uu / ew) ** 2)
        lid = top - m.blink * (top + 0.72 * top)
        outline = on_face(
            np.concatenate([ex + uu, ex + uu[::-1]]), np.concatenate([lid, -0.72 * top[::-1]])
        )
        if m.blink < 0.98:
            draw.polygon(px(outline), fill=(240, 237, 230))
            draw.polygon(
                px(ellipse(ex, -0.05 * eh, 0.44 * ew, 0.44 * ew, 16)), fill=_to255(ident.iris_rgb)
            )
            draw.polygon(px(ellipse(ex, -0.05 * eh, 0.2 * ew, 0.2 * ew, 12)), fill=(8, 6, 6))
        draw.line(px(on_face(ex + uu, lid)), fill=(10, 8, 8), width=max(1, ss))
        by = eh + 0.05 + 0.035 * m.brow_raise
        bu = np.linspace(-1.3 * ew, 1.3 * ew, 12)
        brow = on_face(
            side * (ident.eye_spacing + 0.1 * ew) + bu, by + 0.012 * (1 - (bu / (1.3 * ew)) ** 2)
        )
        draw.line(
            px(brow),
            fill=_to255(ident.hair_rgb, 0.62),
            width=max(1, int(ident.brow_thickness * s * big / 2)),
        )
    nb = -0.035 - 2 * ident.nose_length
    nose = np.array(
        [
            [0, -0.03, 0.9 * a],
            [ident.nose_width, nb, 0.9 * a + 0.05],
            [-ident.nose_width, nb, 0.9 * a + 0.05],
        ]
    )
    draw.polygon(px(nose), fill=_to255(ident.skin_rgb, 0.8))
    my = nb - 0.34 * (b + nb)
    w = ident.mouth_width * (1 + 0.15 * m.smile)
    uu = np.linspace(-w, w, 20)
    e = np.sqrt(1 - (uu / w) ** 2)
    mid = my + m.smile * 0.045 * (uu / w) ** 2
    ho = 0.075 * m.mouth_open * e
    lips = on_face(
        np.concatenate([uu, uu[::-1]]),
        np.concatenate(
            [mid + ho + ident.lip_thickness * e, (mid - ho - ident.lip_thickness * e)[::-1]]
        ),
    )
    draw.polygon(px(lips), fill=_to255(ident.lip_rgb))
    if m.mouth_open > 0.01:
        inner = on_face(
            np.concatenate([uu, uu[::-1]]), np.concatenate([mid + ho, (mid - ho)[::-1]])
        )
        draw.polygon(px(inner), fill=(51, 13, 18))
    return np.asarray(img.resize((size, size), Image.Resampling.BOX))


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    sec = args.seconds

    idents = [IdentityParams.sample(i) for i in range(32)]
    track = MotionTrack.random(64, 1)
    frames = list(track)

    def frame_fn(size: int) -> Callable[[int], object]:
        return lambda i: render_frame(idents[i % len(idents)], frames[i % len(frames)], size)

    def base_fn(size: int) -> Callable[[int], object]:
        return lambda i: pil_baseline(idents[i % len(idents)], frames[i % len(frames)], size)

    print(f"SynthFace speed, one process (numpy {np.__version__}), ~{sec:g} s per figure")
    print(f"{'size':>6} {'SynthFace fps':>14} {'PIL baseline fps':>17} {'ratio':>7}", end="")
    print(f" {'no-culling fps':>15} {'ratio':>7}")
    for size in (64, 128, 256):
        ours = _rate(frame_fn(size), sec)
        base = _rate(base_fn(size), sec)
        _render_mod._CULL = False  # ablation: every primitive over the whole frame
        try:
            full = _rate(frame_fn(size), sec)
        finally:
            _render_mod._CULL = True
        print(f"{size:>6} {ours:>14.1f} {base:>17.1f} {ours / base:>6.2f}x", end="")
        print(f" {full:>15.1f} {ours / full:>6.2f}x")

    clip_tracks = [MotionTrack.random(16, 100 + i) for i in range(16)]
    in_mem = _rate(lambda i: render_clip(idents[i % 32], clip_tracks[i % 16], 128), sec)
    base_clip = _rate(
        lambda i: [pil_baseline(idents[i % 32], m, 128) for m in clip_tracks[i % 16]], sec
    )
    with tempfile.TemporaryDirectory() as tmp:
        n_clips = max(4, int(in_mem * sec / 2))
        start = time.perf_counter()
        generate_dataset(
            Path(tmp) / "mp4", num_identities=n_clips, clips_per_identity=1, frames=16, size=128
        )
        mp4 = n_clips / (time.perf_counter() - start)
        start = time.perf_counter()
        generate_dataset(
            Path(tmp) / "npz",
            num_identities=n_clips,
            clips_per_identity=1,
            frames=16,
            size=128,
            format="npz",
        )
        npz = n_clips / (time.perf_counter() - start)
    print("16-frame 128 px clips per second:")
    ratio = in_mem / base_clip
    print(f"  in memory (render_clip)      {in_mem:8.1f}", end="")
    print(f"   PIL baseline {base_clip:6.1f}   ratio {ratio:.1f}x")
    print(f"  written as MP4 (+json, hash) {mp4:8.1f}")
    print(f"  written as NPZ (+json, hash) {npz:8.1f}")


if __name__ == "__main__":
    main()
