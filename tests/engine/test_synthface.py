"""SynthFace: determinism, identity/motion separation measured on the pixels, datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reenactment.engine.synthface import (
    FACIAL_HAIR,
    GLASSES,
    HAIR_STYLES,
    IDENTITY_VECTOR_SIZE,
    LABELS,
    LICENCE,
    MOTION_FIELDS,
    MOTION_RANGES,
    IdentityParams,
    MotionParams,
    MotionTrack,
    cross_reenactment,
    cross_reenactment_sample,
    generate_dataset,
    identity_for,
    identity_vector_layout,
    iter_training_pairs,
    load_clip_params,
    read_clip,
    render_clip,
    render_frame,
    render_frame_and_labels,
    verify_dataset,
)

SIZE = 128
GREEN = (0.25, 0.45, 0.3)  # a backdrop that is neither eye-white nor dark


def _identities() -> list[IdentityParams]:
    """A spread of faces: default, every hair style, glasses, beards, earrings."""
    out = [IdentityParams(background_rgb=GREEN)]
    for seed in range(1, 40):
        out.append(IdentityParams.sample(seed))
    picked: list[IdentityParams] = [out[0]]
    for ident in out[1:]:
        new_feature = (
            all(p.hair_style != ident.hair_style for p in picked)
            or (ident.glasses != "none" and all(p.glasses == "none" for p in picked))
            or (ident.facial_hair == "full" and all(p.facial_hair != "full" for p in picked))
            or (ident.earrings and not any(p.earrings for p in picked))
        )
        if new_feature:
            picked.append(ident)
    return picked


IDENTITIES = _identities()


def _labels(ident: IdentityParams, motion: MotionParams, size: int = SIZE) -> np.ndarray:
    return render_frame_and_labels(ident, motion, size)[1]


def _count(ident: IdentityParams, motion: MotionParams, label: str) -> int:
    return int((_labels(ident, motion) == LABELS[label]).sum())


def _eye_white_pixels(img: np.ndarray) -> int:
    """Bright, colourless pixels in the upper face: what a viewer reads as the white of the eye."""
    f = img[SIZE // 4 : SIZE // 2 + 8].astype(np.int32)
    lo = f.min(axis=-1)
    return int(((lo > 165) & (f.max(axis=-1) - lo < 32)).sum())


def _dark_pixels(img: np.ndarray) -> int:
    """Very dark pixels in the lower face: the open mouth's interior."""
    f = img[SIZE // 2 + 8 : SIZE - 24].astype(np.int32)
    return int((f.max(axis=-1) < 75).sum())


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    assert xs.size, "empty mask"
    return float(xs.mean()), float(ys.mean())


# ---------------------------------------------------------------------------- basics


def test_frame_shape_dtype_and_sizes() -> None:
    ident = IdentityParams()
    for size in (32, 64, 97, 128):
        img = render_frame(ident, MotionParams(), size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
    rgb, lab = render_frame_and_labels(ident, MotionParams(), 64)
    assert lab.shape == (64, 64) and lab.dtype == np.uint8
    assert np.array_equal(rgb, render_frame(ident, MotionParams(), 64))
    present = set(np.unique(_labels(ident, MotionParams())).tolist())
    for name in ("background", "skin", "hair", "eye_white", "iris", "brow", "lips", "nose", "ear"):
        assert LABELS[name] in present, name


def test_same_inputs_bit_identical_and_different_inputs_differ() -> None:
    a, b = IdentityParams.sample(11), IdentityParams.sample(11)
    assert a == b and IdentityParams.sample(12) != a
    t1, t2 = MotionTrack.random(12, 5), MotionTrack.random(12, 5)
    assert t1 == t2 and MotionTrack.random(12, 6) != t1
    c1 = render_clip(a, t1, 64)
    c2 = render_clip(b, t2, 64)
    assert np.array_equal(c1, c2)
    assert not np.array_equal(c1, render_clip(IdentityParams.sample(12), t1, 64))
    assert not np.array_equal(c1, render_clip(a, MotionTrack.random(12, 6), 64))
    # Consecutive frames of a smooth track differ, but only a little.
    diffs = np.abs(np.diff(c1.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    assert np.all(diffs > 0) and np.all(diffs < 12)


def test_identity_vector_round_trip_and_layout() -> None:
    layout = identity_vector_layout()
    assert layout[0][1] == 0 and layout[-1][2] == IDENTITY_VECTOR_SIZE
    assert all(prev[2] == nxt[1] for prev, nxt in zip(layout, layout[1:]))
    for seed in range(25):
        ident = IdentityParams.sample(seed)
        vec = ident.to_vector()
        assert vec.shape == (IDENTITY_VECTOR_SIZE,) and vec.dtype == np.float32
        assert vec.min() >= 0.0 and vec.max() <= 1.0
        back = IdentityParams.from_vector(vec)
        assert np.allclose(back.to_vector(), vec, atol=1e-6)
        for cat in ("hair_style", "glasses", "facial_hair", "earrings"):
            assert getattr(back, cat) == getattr(ident, cat)
        assert IdentityParams.from_dict(json.loads(json.dumps(ident.to_dict()))) == ident
    styles = {IdentityParams.sample(s).hair_style for s in range(200)}
    assert styles == set(HAIR_STYLES)
    assert {IdentityParams.sample(s).glasses for s in range(200)} == set(GLASSES)
    assert {IdentityParams.sample(s).facial_hair for s in range(200)} == set(FACIAL_HAIR)
    # Raw regressor output (any reals) still gives a renderable identity.
    noisy = IdentityParams.from_vector(
        np.random.default_rng(0).normal(0.5, 1.0, IDENTITY_VECTOR_SIZE)
    )
    assert render_frame(noisy, MotionParams(), 32).shape == (32, 32, 3)
    with pytest.raises(ValueError):
        IdentityParams(face_width=2.0)
    with pytest.raises(ValueError):
        IdentityParams(hair_style="mohawk")


def test_motion_vector_round_trip_and_ranges() -> None:
    for seed in range(25):
        m = MotionParams.sample(seed)
        vec = m.to_vector()
        assert vec.shape == (len(MOTION_FIELDS),) and vec.min() >= 0 and vec.max() <= 1
        back = MotionParams.from_vector(vec)
        assert np.allclose(back.to_vector(normalized=False), m.to_vector(normalized=False))
        assert MotionParams.from_vector(m.to_vector(normalized=False), normalized=False) == m
    with pytest.raises(ValueError):
        MotionParams(yaw=90.0)
    assert MotionParams.clipped(yaw=90.0).yaw == MOTION_RANGES["yaw"][1]
    track = MotionTrack.random(200, 3, fps=25.0)
    values = track.values
    assert values.shape == (200, len(MOTION_FIELDS))
    lo = np.array([MOTION_RANGES[f][0] for f in MOTION_FIELDS])
    hi = np.array([MOTION_RANGES[f][1] for f in MOTION_FIELDS])
    assert np.all(values >= lo) and np.all(values <= hi)
    # Head pose is smooth (degrees per frame at 25 fps); blinks happen and are brief.
    assert np.abs(np.diff(values[:, :3], axis=0)).max() < 3.0
    blinks = [MotionTrack.random(100, s).values[:, 6].max() for s in range(10)]
    assert max(blinks) > 0.95
    back = MotionTrack.from_array(track.to_array(normalized=True), normalized=True)
    assert np.allclose(back.values, values)
    assert track[5] == MotionParams(**dict(zip(MOTION_FIELDS, values[5].tolist())))


# ---------------------------------------------------------------------------- motion is visible


def test_blink_closes_the_eyes() -> None:
    for ident in IDENTITIES:
        labelled = [
            _count(ident, MotionParams(blink=b), "eye_white") for b in (0, 0.3, 0.6, 0.9, 1)
        ]
        assert labelled[0] > 40, ident
        assert all(x > y for x, y in zip(labelled[:-2], labelled[1:-1])), labelled
        assert labelled[-1] == 0, labelled
    ident = IDENTITIES[0]  # colour-only measurement on the pixels themselves
    seen = [
        _eye_white_pixels(render_frame(ident, MotionParams(blink=b), SIZE)) for b in (0, 0.5, 1)
    ]
    assert seen[0] > 25 and seen[0] > seen[1] > seen[2] and seen[2] <= 1, seen


def test_mouth_open_grows_the_mouth_interior_monotonically() -> None:
    opens = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    for ident in IDENTITIES:
        areas = [_count(ident, MotionParams(mouth_open=o), "mouth_interior") for o in opens]
        assert areas[0] == 0 and all(x < y for x, y in zip(areas, areas[1:])), areas
    ident = IDENTITIES[0]
    dark = [_dark_pixels(render_frame(ident, MotionParams(mouth_open=o), SIZE)) for o in opens]
    assert all(x < y for x, y in zip(dark, dark[1:])), dark


def test_smile_and_brow_raise_are_visible() -> None:
    ident = IDENTITIES[0]
    neutral = _labels(ident, MotionParams())
    smile = _labels(ident, MotionParams(smile=1.0))
    # Smiling lifts the mouth corners: the lips' outermost columns sit higher than their middle.
    for lab, lifted in ((neutral, False), (smile, True)):
        ys, xs = np.nonzero(lab == LABELS["lips"])
        corners = ys[(xs <= xs.min() + 2) | (xs >= xs.max() - 2)].mean()
        middle = ys[np.abs(xs - xs.mean()) < 3].mean()
        assert (corners < middle - 1.5) == lifted
    brow_y = [
        _centroid(_labels(ident, MotionParams(brow_raise=r)) == LABELS["brow"])[1]
        for r in (0, 0.5, 1)
    ]
    assert brow_y[0] > brow_y[1] > brow_y[2] and brow_y[0] - brow_y[2] > 2.0


def test_pose_moves_the_face_in_the_expected_direction() -> None:
    for ident in IDENTITIES[:4]:
        xs = [
            _centroid(_labels(ident, MotionParams(yaw=y)) == LABELS["nose"])[0]
            for y in (-30, -15, 0, 15, 30)
        ]
        assert all(a < b for a, b in zip(xs, xs[1:])), xs  # positive yaw turns towards image right
        ys = [
            _centroid(_labels(ident, MotionParams(pitch=p)) == LABELS["nose"])[1]
            for p in (-20, 0, 20)
        ]
        assert ys[0] > ys[1] > ys[2], ys  # positive pitch tilts the face up (smaller row index)
    ident = IDENTITIES[0]
    # Roll: the eye line tilts (counter-clockwise = right eye higher in the image).
    lab = _labels(ident, MotionParams(roll=15))
    eyes = (lab == LABELS["eye_white"]) | (lab == LABELS["iris"])
    half = SIZE // 2
    left_y = _centroid(eyes[:, :half])[1]
    right_y = _centroid(eyes[:, half:])[1]
    assert right_y < left_y - 2
    # Translation and scale.
    base = _centroid(_labels(ident, MotionParams()) == LABELS["skin"])
    moved = _centroid(_labels(ident, MotionParams(tx=0.1, ty=0.1)) == LABELS["skin"])
    assert moved[0] > base[0] + 4 and moved[1] < base[1] - 4
    skin = [(_labels(ident, MotionParams(scale=s)) == LABELS["skin"]).sum() for s in (0.9, 1.1)]
    assert skin[1] > 1.2 * skin[0]


# ---------------------------------------------------------------------------- separation


def _mean_colour(img: np.ndarray, lab: np.ndarray, name: str) -> np.ndarray:
    mask = lab == LABELS[name]
    assert mask.sum() > 20, name
    return img[mask].astype(np.float64).mean(axis=0)


def test_motion_leaves_identity_colours_unchanged() -> None:
    motions = [
        MotionParams(),
        MotionParams(blink=1.0, smile=1.0),
        MotionParams(mouth_open=1.0, brow_raise=1.0),
        MotionParams(yaw=20, pitch=-10, roll=8, tx=0.05, scale=1.1),
        MotionParams(yaw=-20, pitch=10, roll=-8, ty=-0.05, scale=0.9),
    ]
    skins = []
    for ident in IDENTITIES:
        per_motion = []
        for m in motions:
            img, lab = render_frame_and_labels(ident, m, SIZE)
            per_motion.append(_mean_colour(img, lab, "skin"))
            if ident.hair_style != "none":
                hair = _mean_colour(img, lab, "hair")
                expected = np.array(ident.hair_rgb) * 255
                assert np.abs(hair - expected).max() < 0.35 * expected.max() + 20
        per_motion = np.array(per_motion)
        # Expression alone changes almost nothing; pose changes the shading (brightness) a
        # little, the chromaticity (the identity's colour) hardly at all.
        assert np.abs(per_motion[1:3] - per_motion[0]).max() < 6, per_motion
        brightness = per_motion.sum(axis=1)
        assert brightness.max() / brightness.min() < 1.25, per_motion
        chroma = per_motion / brightness[:, None]
        assert np.abs(chroma - chroma[0]).max() < 0.01, chroma
        skins.append(per_motion.mean(axis=0))
    skins = np.array(skins)
    spread = np.abs(skins[:, None] - skins[None]).max(axis=-1)
    assert np.median(spread[np.triu_indices(len(skins), 1)]) > 20  # identities differ far more


def test_same_motion_reads_as_the_same_expression_on_every_identity() -> None:
    blink_ratios, mouth_heights, brow_lifts = [], [], []
    for ident in IDENTITIES:
        open_white = _count(ident, MotionParams(), "eye_white")
        blink_ratios.append(_count(ident, MotionParams(blink=0.5), "eye_white") / open_white)
        lab = _labels(ident, MotionParams(mouth_open=0.8))
        mouth_heights.append(int((lab == LABELS["mouth_interior"]).any(axis=1).sum()))
        y0 = _centroid(_labels(ident, MotionParams()) == LABELS["brow"])[1]
        y1 = _centroid(_labels(ident, MotionParams(brow_raise=1.0)) == LABELS["brow"])[1]
        brow_lifts.append(y0 - y1)
    assert max(blink_ratios) - min(blink_ratios) < 0.2, blink_ratios
    assert max(mouth_heights) - min(mouth_heights) <= 2, mouth_heights
    assert max(brow_lifts) - min(brow_lifts) < 1.5, brow_lifts


# ---------------------------------------------------------------------------- ground truth


def test_cross_reenactment_is_exactly_a_rendered_with_b_motion() -> None:
    a, b = IdentityParams.sample(1), IdentityParams.sample(2)
    track_b = MotionTrack.random(6, 9)
    target = cross_reenactment(a, track_b, 64)
    assert np.array_equal(target, np.stack([render_frame(a, m, 64) for m in track_b]))
    sample = cross_reenactment_sample(a, b, track_b, 64)
    assert np.array_equal(sample.target, target)
    assert np.array_equal(sample.driving, render_clip(b, track_b, 64))
    assert np.array_equal(sample.reference, render_frame(a, MotionParams(), 64))
    assert not np.array_equal(sample.driving, sample.target)


def test_training_stream_is_deterministic_and_consistent() -> None:
    first = list(iter_training_pairs(5, size=48, frames=3, count=6))
    again = list(iter_training_pairs(5, size=48, frames=3, start=2, count=4))
    assert len(first) == 6
    for x, y in zip(first[2:], again):
        assert np.array_equal(x.target, y.target) and np.array_equal(x.driving, y.driving)
        assert np.array_equal(x.reference, y.reference)
    kinds = {s.meta["kind"] for s in first}
    assert kinds == {"self", "cross"}
    for ref, driving, target, meta in first:
        assert ref.shape == (48, 48, 3) and driving.shape == target.shape == (3, 48, 48, 3)
        ident_a = IdentityParams.from_vector(meta["identity_a"])
        assert ident_a.hair_style in HAIR_STYLES
        if meta["kind"] == "self":
            assert np.array_equal(driving, target)
        else:
            assert not np.array_equal(driving, target)
    pool = list(iter_training_pairs(5, size=32, frames=2, identity_indices=[3, 4], count=4))
    allowed = {tuple(identity_for(5, i).to_vector()) for i in (3, 4)}
    assert all(tuple(s.meta["identity_a"]) in allowed for s in pool)


# ---------------------------------------------------------------------------- datasets


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_npz_dataset_is_byte_identical_and_manifest_matches(tmp_path: Path) -> None:
    kwargs = dict(
        num_identities=3,
        clips_per_identity=2,
        frames=4,
        size=48,
        seed=7,
        format="npz",
        cross_pairs=2,
    )
    s1 = generate_dataset(tmp_path / "a", **kwargs)
    generate_dataset(tmp_path / "b", **kwargs)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert verify_dataset(s1.out_dir) == []
    lines = [json.loads(x) for x in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 3 * 2 + 2 == s1.num_clips
    assert {x["kind"] for x in lines} == {"clip", "cross"}
    for line in lines:
        assert line["licence"] == LICENCE
        assert line["frames"] == 4 and line["size"] == 48 and line["fps"] == 25.0
        frames = read_clip(tmp_path / "a" / line["path"])
        ident, track = load_clip_params(tmp_path / "a" / line["sidecar"])
        assert np.array_equal(frames, render_clip(ident, track, 48))  # exact regeneration
        with np.load(tmp_path / "a" / line["path"]) as data:
            assert np.allclose(data["identity"], ident.to_vector())
    card = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert card["spdx"] == "CC0-1.0" and "CC0" in (tmp_path / "a" / "LICENSE.txt").read_text()
    # A different seed gives different data; tampering is detected.
    other = generate_dataset(tmp_path / "c", **{**kwargs, "seed": 8})
    assert other.entries[0]["sha256"] != s1.entries[0]["sha256"]
    (tmp_path / "a" / lines[0]["path"]).write_bytes(b"tampered")
    assert verify_dataset(tmp_path / "a")


def test_mp4_dataset_decodes_identically_and_close_to_the_render(tmp_path: Path) -> None:
    kwargs = dict(num_identities=2, clips_per_identity=1, frames=5, size=64, seed=1)
    s1 = generate_dataset(tmp_path / "a", **kwargs)
    s2 = generate_dataset(tmp_path / "b", **kwargs)
    assert verify_dataset(s1.out_dir) == [] and verify_dataset(s2.out_dir) == []
    assert (tmp_path / "a" / "manifest.jsonl").read_bytes() == (
        tmp_path / "b" / "manifest.jsonl"
    ).read_bytes()
    for e1, e2 in zip(s1.entries, s2.entries):
        assert e1["path"].endswith(".mp4")
        f1, f2 = read_clip(tmp_path / "a" / e1["path"]), read_clip(tmp_path / "b" / e2["path"])
        assert f1.shape == (5, 64, 64, 3) and np.array_equal(f1, f2)
        ident, track = load_clip_params(tmp_path / "a" / e1["sidecar"])
        exact = render_clip(ident, track, 64).astype(np.float64)
        mse = np.mean((f1.astype(np.float64) - exact) ** 2)
        assert 10 * np.log10(255.0**2 / mse) > 28  # lossy, but faithful
