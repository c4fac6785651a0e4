"""Vectorised numpy 2.5-D renderer for SynthFace.

Scene model (head-local units, frame spans ``[-1, 1]``; ``x`` right, ``y`` up, ``z`` towards the
camera; orthographic camera looking down ``-z``):

* The head is an ellipsoid whose half-width tapers towards the jaw (``jaw_roundness``) and whose
  lower half lengthens as the mouth opens, ray-cast per pixel (two fixed-point passes of a
  per-pixel quadric): every pixel gets its depth and surface normal (Lambert shading with a
  fixed key light from the upper left) and the head-local surface point ``(u, v)`` it shows.
  Eyes, eyelids, irises, brows, mouth, facial hair and the hair cap are *painted in head-local
  coordinates* with analytic signed-distance coverage (anti-aliased edges, no supersampling), so
  they rotate, foreshorten and hide exactly with the head.
* The nose, ears, earrings, hair volume, bun, long-hair drape, neck and torso are further
  ellipsoids (the nose is depth-tested against the head, the rest are layered back to front).
* Pose: the head is rotated by ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``, scaled by ``scale`` and
  translated by ``(tx, ty)``; the neck and torso translate and scale but do not rotate.
* A fixed camera zoom (:data:`_ZOOM`) frames head and shoulders; every primitive is rasterised
  only inside its projected bounding box, in float32.

The same inputs always give bit-identical output (no randomness, no threading).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .identity import IdentityParams
from .motion import MotionParams, MotionTrack

__all__ = [
    "LABELS",
    "CrossReenactmentSample",
    "cross_reenactment",
    "cross_reenactment_sample",
    "render_clip",
    "render_frame",
    "render_frame_and_labels",
]

#: Semantic label ids of :func:`render_frame_and_labels`.
LABELS: dict[str, int] = {
    "background": 0,
    "skin": 1,
    "hair": 2,
    "eye_white": 3,
    "iris": 4,
    "brow": 5,
    "lips": 6,
    "mouth_interior": 7,
    "nose": 8,
    "ear": 9,
    "neck": 10,
    "clothing": 11,
    "facial_hair": 12,
    "glasses": 13,
    "earring": 14,
}

Background = str | Sequence[float] | np.ndarray

_HEAD_CY = 0.0  # image y of the head centre at ty = 0
_ZOOM = 1.3  # camera zoom: head-local unit -> image units at motion scale 1
_LIGHT = np.array([-0.28, 0.42, 0.86]) / np.linalg.norm([-0.28, 0.42, 0.86])
_LX, _LY, _LZ = (float(x) for x in _LIGHT)
_EYE_Y = 0.0
_CULL = True  # rasterise primitives only inside their projected boxes (False: benchmarks only)
_SKULL_RZ = 0.95  # head depth radius / face_width
_TAPER_Y = -0.12  # head-local height below which the head narrows towards the jaw
_OPEN_H = 0.075  # half-height of the mouth opening at mouth_open = 1 (head-local units)
_CHIN_DROP = 0.15  # relative lengthening of the lower head at mouth_open = 1
_EYE_WHITE = np.array([0.94, 0.93, 0.90], dtype=np.float32)
_MOUTH_DARK = np.array([0.20, 0.05, 0.07], dtype=np.float32)
_TEETH = np.array([0.90, 0.86, 0.74], dtype=np.float32)
_TONGUE = np.array([0.62, 0.26, 0.30], dtype=np.float32)
_BLACK = np.array([0.03, 0.025, 0.025], dtype=np.float32)


def _f32(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


# ---------------------------------------------------------------------------- caches


@functools.lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(size, dtype=np.float64) + 0.5) * (2.0 / size)
    xs = (centres - 1.0).astype(np.float32)
    ys = (1.0 - centres).astype(np.float32)
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


@functools.lru_cache(maxsize=16)
def _background(size: int, rgb: tuple[float, float, float]) -> np.ndarray:
    _, ys = _grid(size)
    xs, _ = _grid(size)
    col = np.asarray(rgb, dtype=np.float32)
    vertical = 1.08 - 0.22 * (1.0 - ys) / 2.0  # lighter at the top
    radial = 1.0 - 0.10 * (xs[None, :] ** 2 + (ys[:, None] - 0.2) ** 2)
    img = (vertical[:, None] * radial)[..., None] * col
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    img.setflags(write=False)
    return img


@dataclass(frozen=True)
class _Rig:
    """Per-identity constants (derived geometry and float32 colours)."""

    a: float
    b: float
    jaw_ratio: float
    skin: np.ndarray
    hair: np.ndarray
    brow: np.ndarray
    iris: np.ndarray
    lip: np.ndarray
    lip_dark: np.ndarray
    ear_skin: np.ndarray
    neck_skin: np.ndarray
    nostril: np.ndarray
    glasses: np.ndarray
    metal: np.ndarray
    clothing: np.ndarray
    bg: tuple[float, float, float]
    nose_y: float
    nose_bottom: float
    nose_depth: float
    mouth_y: float
    eye_h_top: float
    brow_y: float
    hairline_y: float
    side_hair_y: float


@functools.lru_cache(maxsize=512)
def _rig(ident: IdentityParams) -> _Rig:
    a, b = ident.face_width, ident.face_height
    skin = _f32(ident.skin_rgb)
    hair = _f32(ident.hair_rgb)
    nose_bottom = _EYE_Y - 0.035 - 2.0 * ident.nose_length
    mouth_y = nose_bottom - 0.34 * (b + nose_bottom)
    eh = ident.eye_size * ident.eye_aspect
    brow_y = _EYE_Y + eh + 0.05
    # Highest brow point at full raise, so the hair never hides the brow motion.
    brow_top = brow_y + 0.035 + 0.024 + ident.brow_thickness
    if ident.hair_style == "fringe":
        hairline = brow_top + 0.03
    else:
        hairline = max(brow_top + 0.05, _EYE_Y + 0.19 + 0.15 * ident.hairline)
    side = -0.30 * b if ident.hair_style == "long" else _EYE_Y + 0.04
    return _Rig(
        a=a,
        b=b,
        jaw_ratio=0.72 + 0.3 * ident.jaw_roundness,
        skin=skin,
        hair=hair,
        brow=np.clip(hair * 0.62 + 0.03, 0, 1).astype(np.float32),
        iris=_f32(ident.iris_rgb),
        lip=_f32(ident.lip_rgb),
        lip_dark=(_f32(ident.lip_rgb) * 0.42).astype(np.float32),
        ear_skin=(skin * 0.93).astype(np.float32),
        neck_skin=(skin * 0.9).astype(np.float32),
        nostril=(skin * 0.3).astype(np.float32),
        glasses=_f32(ident.glasses_rgb),
        metal=_f32(ident.earring_rgb),
        clothing=_f32(ident.clothing_rgb),
        bg=ident.background_rgb,
        nose_y=nose_bottom + ident.nose_length,
        nose_bottom=nose_bottom,
        nose_depth=0.062 + 0.5 * (ident.nose_length - 0.06),
        mouth_y=mouth_y,
        eye_h_top=eh,
        brow_y=brow_y,
        hairline_y=hairline,
        side_hair_y=side,
    )


def _taper(v: np.ndarray, jaw_ratio: float, b_low: float) -> tuple[np.ndarray, np.ndarray]:
    """Head half-width factor below the cheekbones and its derivative d/dv."""
    span = _TAPER_Y + b_low
    x = _clip01((_TAPER_Y - v) * (1.0 / span))
    k = 1.0 - jaw_ratio
    taper = 1.0 - k * (x * x * (3.0 - 2.0 * x))
    dtaper = k * (6.0 * x * (1.0 - x)) * (1.0 / span)
    return taper, dtaper


def _skull_z(u: float, v: float, a: float, b_up: float, b_low: float, jaw_ratio: float) -> float:
    """Head-local depth of the front of the head surface at ``(u, v)`` (0 outside)."""
    x = min(1.0, max(0.0, (_TAPER_Y - v) / (_TAPER_Y + b_low)))
    taper = 1.0 - (1.0 - jaw_ratio) * (x * x * (3.0 - 2.0 * x))
    b = b_low if v < 0.0 else b_up
    k = 1.0 - (u / (a * taper)) ** 2 - (v / b) ** 2
    return _SKULL_RZ * a * math.sqrt(k) if k > 0.0 else 0.0


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = math.radians(yaw), math.radians(pitch), math.radians(roll)
    cy, sy, cp, sp, cr, sr = (
        math.cos(y),
        math.sin(y),
        math.cos(p),
        math.sin(p),
        math.cos(r),
        math.sin(r),
    )
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
    rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ rx


def _rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])


def _clip01(x: np.ndarray) -> np.ndarray:
    """``clip(x, 0, 1)`` computed in place: only for temporaries (cheaper than ``np.clip``)."""
    np.maximum(x, 0.0, out=x)
    return np.minimum(x, 1.0, out=x)


def _cov(sd: np.ndarray, fw: np.ndarray | float) -> np.ndarray:
    """Anti-aliased coverage of a signed distance (negative inside), ``fw`` = pixel footprint."""
    return _clip01(0.5 - sd / fw)


def _slab(t: np.ndarray, lo: np.ndarray, hi: np.ndarray, fw: np.ndarray) -> np.ndarray:
    """Coverage of ``lo <= t <= hi`` that fades to zero as the slab gets thinner than a pixel."""
    h = hi - lo
    sd = np.abs(t - 0.5 * (hi + lo)) - 0.5 * h
    return _cov(sd, fw) * _clip01(h / fw)


def _lerp(dst: np.ndarray, cov: np.ndarray, colour: np.ndarray) -> None:
    dst += cov[..., None] * (colour - dst)


# ---------------------------------------------------------------------------- frame state


class _Ellipsoid(NamedTuple):
    centre: np.ndarray  # world (3,)
    q: np.ndarray  # world quadric matrix (3, 3): P^T Q P = 1, P = p - centre
    m: np.ndarray  # silhouette conic (2, 2)
    half: tuple[float, float]  # silhouette half extents in x, y


class _Raster(NamedTuple):
    alpha: np.ndarray
    z: np.ndarray  # world z
    nx: np.ndarray
    ny: np.ndarray
    nz: np.ndarray


class _Frame:
    """State of one frame being rendered."""

    def __init__(self, ident: IdentityParams, motion: MotionParams, size: int) -> None:
        self.ident = ident
        self.rig = _rig(ident)
        self.motion = motion
        self.size = size
        self.px = 2.0 / size
        self.xs, self.ys = _grid(size)
        self.rot = _rotation(motion.yaw, motion.pitch, motion.roll)
        self.s = motion.scale * _ZOOM
        self.t = np.array([motion.tx, _HEAD_CY + motion.ty, 0.0])
        self.tx, self.ty = float(self.t[0]), float(self.t[1])
        self.rot_list: list[list[float]] = self.rot.tolist()
        self.canvas: np.ndarray = np.empty((size, size, 3), dtype=np.float32)
        self.labels: np.ndarray | None = None

    # ---- geometry helpers

    def ellipsoid(
        self,
        centre: Sequence[float],
        radii: Sequence[float],
        local_rot: np.ndarray | None = None,
        body: bool = False,
    ) -> _Ellipsoid:
        """A head-local (or, with ``body``, non-rotating) ellipsoid in world coordinates."""
        rot = np.eye(3) if body else self.rot
        basis = rot if local_rot is None else rot @ local_rot
        c = self.s * (rot @ np.asarray(centre, dtype=np.float64)) + self.t
        inv_r2 = 1.0 / (self.s * np.asarray(radii, dtype=np.float64)) ** 2
        q = (basis * inv_r2) @ basis.T
        m = q[:2, :2] - np.outer(q[:2, 2], q[:2, 2]) / q[2, 2]
        minv = np.linalg.inv(m)
        return _Ellipsoid(c, q, m, (math.sqrt(minv[0, 0]), math.sqrt(minv[1, 1])))

    def bbox(self, x0: float, x1: float, y0: float, y1: float) -> tuple[int, int, int, int] | None:
        """Pixel box ``(r0, r1, c0, c1)`` covering the world rectangle, with a margin."""
        n, px = self.size, self.px
        if not _CULL:  # benchmark ablation: rasterise every primitive over the whole frame
            return 0, n, 0, n
        c0 = max(0, int(math.floor((x0 + 1.0) / px - 0.5)) - 1)
        c1 = min(n, int(math.ceil((x1 + 1.0) / px - 0.5)) + 2)
        r0 = max(0, int(math.floor((1.0 - y1) / px - 0.5)) - 1)
        r1 = min(n, int(math.ceil((1.0 - y0) / px - 0.5)) + 2)
        if c0 >= c1 or r0 >= r1:
            return None
        return r0, r1, c0, c1

    def ell_bbox(self, e: _Ellipsoid) -> tuple[int, int, int, int] | None:
        hx, hy = e.half
        return self.bbox(e.centre[0] - hx, e.centre[0] + hx, e.centre[1] - hy, e.centre[1] + hy)

    def raster(self, e: _Ellipsoid, box: tuple[int, int, int, int]) -> _Raster:
        r0, r1, c0, c1 = box
        dx = self.xs[c0:c1] - np.float32(e.centre[0])
        dy = (self.ys[r0:r1] - np.float32(e.centre[1]))[:, None]
        m, q = e.m, e.q
        mx = float(m[0, 0]) * dx + float(m[0, 1]) * dy
        my = float(m[0, 1]) * dx + float(m[1, 1]) * dy
        f = dx * mx + dy * my - 1.0
        grad = np.sqrt(mx * mx + my * my)
        alpha = _cov(f / (2.0 * grad + 1e-6), self.px)
        qzz = float(q[2, 2])
        dz = (
            np.sqrt(np.maximum(-f, 0.0) * qzz) - (float(q[0, 2]) * dx + float(q[1, 2]) * dy)
        ) / qzz
        nx = float(q[0, 0]) * dx + float(q[0, 1]) * dy + float(q[0, 2]) * dz
        ny = float(q[0, 1]) * dx + float(q[1, 1]) * dy + float(q[1, 2]) * dz
        nz = float(q[0, 2]) * dx + float(q[1, 2]) * dy + qzz * dz
        inv = 1.0 / np.sqrt(nx * nx + ny * ny + nz * nz + 1e-12)
        return _Raster(alpha, dz + np.float32(e.centre[2]), nx * inv, ny * inv, nz * inv)

    def local(self, box: tuple[int, int, int, int], z: np.ndarray, row: int) -> np.ndarray:
        """Head-local coordinate ``row`` (0 = u, 1 = v, 2 = depth) of the world points."""
        r0, r1, c0, c1 = box
        rt = self.rot[:, row] / self.s  # row of R^T, divided by scale
        x = self.xs[c0:c1] - np.float32(self.t[0])
        y = (self.ys[r0:r1] - np.float32(self.t[1]))[:, None]
        return float(rt[0]) * x + float(rt[1]) * y + float(rt[2]) * z

    @staticmethod
    def shade(r: _Raster, ambient: float = 0.50, diffuse: float = 0.56) -> np.ndarray:
        lam = r.nx * _LX + r.ny * _LY + r.nz * _LZ
        return ambient + diffuse * np.maximum(lam, 0.0) + 0.06 * r.ny

    def composite(
        self, box: tuple[int, int, int, int], alpha: np.ndarray, colour: np.ndarray, label: int
    ) -> None:
        r0, r1, c0, c1 = box
        _lerp(self.canvas[r0:r1, c0:c1], alpha, colour)
        if self.labels is not None:
            lab = self.labels[r0:r1, c0:c1]
            lab[alpha >= 0.5] = label

    def solid(
        self,
        e: _Ellipsoid,
        albedo: np.ndarray,
        label: int,
        *,
        cut_below: float | None = None,
        spec: float = 0.0,
        darken_top: float | None = None,
    ) -> None:
        """Layer a shaded ellipsoid; ``cut_below`` drops points below a head-local height."""
        box = self.ell_bbox(e)
        if box is None:
            return
        r = self.raster(e, box)
        alpha = r.alpha
        if cut_below is not None:
            v = self.local(box, r.z, 1)
            alpha = alpha * _clip01(0.5 + (v - cut_below) / (self.px / self.s))
        shade = self.shade(r)
        if spec:
            lam = r.nx * _LX + r.ny * _LY + r.nz * _LZ
            shade = shade + spec * _clip01((lam - 0.8) * 5.0)
        if darken_top is not None:
            y = self.ys[box[0] : box[1]][:, None]
            shade = shade * np.clip(0.62 + (darken_top - y) * 3.0 / self.s, 0.62, 1.0)
        self.composite(box, alpha, shade[..., None] * albedo, label)

    def project_box(
        self, u0: float, u1: float, v0: float, v1: float
    ) -> tuple[float, float, float, float]:
        """World ``(x0, x1, y0, y1)`` bounds of a head-local rectangle lying on the face."""
        a, b, jr = self.rig.a, self.rig.b, self.rig.jaw_ratio
        b_low = b * (1.0 + _CHIN_DROP * self.motion.mouth_open)
        (r00, r01, r02), (r10, r11, r12), _ = self.rot_list
        s, tx, ty = self.s, self.tx, self.ty
        xs: list[float] = []
        ys: list[float] = []
        # Wide rectangles reach round the side of the head, whose silhouette may lie between
        # samples and, turned away, behind the head's equator (negative depth).
        wide = u1 - u0 >= 0.25
        nu = 7 if wide else 3
        us = [u0 + (u1 - u0) * k / (nu - 1) for k in range(nu)]
        for v in (v0, 0.5 * (v0 + v1), v1):
            zs_list = [(u, _skull_z(u, v, a, b, b_low, jr)) for u in us]
            pts = [(u, zs + 0.03) for u, zs in zs_list] + [
                (u, max(zs - 0.12, 0.0)) for u, zs in zs_list
            ]
            if wide:
                zneg = -0.6 * _SKULL_RZ * a * math.sqrt(max(0.0, 1.0 - (v / b) ** 2))
                pts += [(u0, zneg), (u1, zneg)]
            for u, z in pts:
                xs.append(s * (r00 * u + r01 * v + r02 * z) + tx)
                ys.append(s * (r10 * u + r11 * v + r12 * z) + ty)
        return min(xs), max(xs), min(ys), max(ys)


# ---------------------------------------------------------------------------- the head


class _Head:
    """Head raster (jaw-tapered ellipsoid) with its texture-space painting helpers."""

    def __init__(self, fr: _Frame) -> None:
        self.fr = fr
        rig, m = fr.rig, fr.motion
        a, b = rig.a, rig.b
        self.box = self._bounds()
        if self.box is None or min(self.box[1] - self.box[0], self.box[3] - self.box[2]) < 2:
            self.box = None  # off-frame (np.gradient below needs at least 2x2 pixels)
            return
        r0, r1, c0, c1 = self.box
        s_inv = 1.0 / fr.s
        rt = fr.rot.T * s_inv  # world offset -> head-local
        x = fr.xs[c0:c1] - np.float32(fr.t[0])
        y = (fr.ys[r0:r1] - np.float32(fr.t[1]))[:, None]
        # Ray q(z) = q0 + z * d in head-local coordinates.
        q0 = [float(rt[i, 0]) * x + float(rt[i, 1]) * y for i in range(3)]
        d = [float(rt[i, 2]) for i in range(3)]
        c2 = 1.0 / (_SKULL_RZ * a) ** 2
        b_up, b_low = b, b * (1.0 + _CHIN_DROP * m.mouth_open)
        # Tapered ellipsoid (qx / W(qy))^2 + (qy / B(qy))^2 + (qz / C)^2 = 1, solved by two
        # fixed-point passes: W and B are evaluated at the previous pass's surface height.
        v_guess = q0[1] + d[1] * (_SKULL_RZ * a)
        for _ in range(2):
            taper, dtaper = _taper(v_guess, rig.jaw_ratio, b_low)
            w2 = 1.0 / (a * taper) ** 2
            b2 = np.where(v_guess < 0.0, 1.0 / b_low**2, 1.0 / b_up**2).astype(np.float32)
            qa = d[0] * d[0] * w2 + d[1] * d[1] * b2 + d[2] * d[2] * c2
            qb = q0[0] * d[0] * w2 + q0[1] * d[1] * b2 + q0[2] * d[2] * c2  # half of B
            qc = q0[0] * q0[0] * w2 + q0[1] * q0[1] * b2 + q0[2] * q0[2] * c2 - 1.0
            f = qc - qb * qb / qa  # < 0 where the ray meets the head (min of F along the ray)
            z = (np.sqrt(np.maximum(-f * qa, 0.0)) - qb) / qa
            v_guess = q0[1] + d[1] * z
        u = q0[0] + d[0] * z
        v = v_guess
        qz = q0[2] + d[2] * z
        # Anti-aliased silhouette from the pixel-space gradient of f.
        gy, gx = np.gradient(f)
        gmag = np.sqrt(gx * gx + gy * gy) + 1e-6
        self.alpha = _clip01(0.5 - f / gmag)
        # Surface normal: gradient of F in head-local coordinates, rotated to world.
        gu = u * w2
        gv = v * b2 - u * u * w2 * dtaper / taper
        gz = qz * c2
        rot = fr.rot
        nx = float(rot[0, 0]) * gu + float(rot[0, 1]) * gv + float(rot[0, 2]) * gz
        ny = float(rot[1, 0]) * gu + float(rot[1, 1]) * gv + float(rot[1, 2]) * gz
        nz = float(rot[2, 0]) * gu + float(rot[2, 1]) * gv + float(rot[2, 2]) * gz
        inv = 1.0 / np.sqrt(nx * nx + ny * ny + nz * nz + 1e-12)
        self.z = z  # world depth (the ray parameter; head centre at z = 0)
        self.normal = _Raster(self.alpha, self.z, nx * inv, ny * inv, nz * inv)
        self.u, self.v = u, v
        self.fw = (fr.px / fr.s) / np.maximum(self.normal.nz, 0.3)
        h, wd = self.alpha.shape
        self.albedo = np.empty((h, wd, 3), dtype=np.float32)
        self.albedo[...] = rig.skin
        self.labels: np.ndarray | None = None
        if fr.labels is not None:
            self.labels = np.full((h, wd), LABELS["skin"], dtype=np.uint8)

    def _bounds(self) -> tuple[int, int, int, int] | None:
        fr, rig = self.fr, self.fr.rig
        a, b = rig.a, rig.b * (1.0 + _CHIN_DROP * fr.motion.mouth_open)
        e = fr.ellipsoid((0.0, 0.0, 0.0), (a, b, _SKULL_RZ * rig.a))
        return fr.ell_bbox(e)

    def region(self, u0: float, u1: float, v0: float, v1: float) -> tuple[slice, slice] | None:
        """Slices (into the head box) of the pixels that can show the head-local rectangle."""
        assert self.box is not None
        x0, x1, y0, y1 = self.fr.project_box(u0, u1, v0, v1)
        box = self.fr.bbox(x0, x1, y0, y1)
        if box is None:
            return None
        r0, r1, c0, c1 = box
        hr0, hr1, hc0, hc1 = self.box
        r0, r1, c0, c1 = max(r0, hr0), min(r1, hr1), max(c0, hc0), min(c1, hc1)
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0 - hr0, r1 - hr0), slice(c0 - hc0, c1 - hc0)

    def paint(
        self, sl: tuple[slice, slice], cov: np.ndarray, colour: np.ndarray, label: int | None
    ) -> None:
        _lerp(self.albedo[sl], cov, colour)
        if label is not None and self.labels is not None:
            self.labels[sl][cov >= 0.5] = label

    def detail(self, freq: float) -> float:
        """Amplitude factor for a texture of angular frequency ``freq`` (fades before aliasing)."""
        pixels_per_period = 2.0 * math.pi / (freq * self.fr.px / self.fr.s)
        return min(1.0, max(0.0, (pixels_per_period - 3.0) / 3.0))

    def darken(self, sl: tuple[slice, slice], amount: np.ndarray) -> None:
        self.albedo[sl] *= (1.0 - amount)[..., None]

    # ---- features

    def eye(self, side: float) -> None:
        fr, rig, m, ident = self.fr, self.fr.rig, self.fr.motion, self.fr.ident
        ew = ident.eye_size
        eht, ehb = rig.eye_h_top, rig.eye_h_top * 0.72
        ex, ey = side * ident.eye_spacing, _EYE_Y
        sl = self.region(ex - 1.6 * ew, ex + 1.6 * ew, ey - 2.4 * eht, ey + 2.6 * eht)
        if sl is None:
            return
        u, v, fw = self.u[sl], self.v[sl], self.fw[sl]
        du, t = u - ex, v - ey
        x = du * (1.0 / ew)
        # Socket shadow and upper-lid crease.
        k = (du * (1.0 / (1.5 * ew))) ** 2 + ((t - 0.25 * eht) * (1.0 / (2.2 * eht))) ** 2
        self.darken(sl, 0.14 * _clip01(1.0 - k))
        e = _clip01(1.0 - x * x)
        se = np.sqrt(e)
        tilt = 0.12 * eht * x * side  # outer corners slightly higher
        top = eht * se + tilt
        bot = -ehb * se + tilt
        crease = top + 0.32 * eht + 0.004
        self.darken(sl, 0.28 * _slab(t, crease - 0.0035, crease + 0.0035, fw) * _clip01(e * 4))
        lid = top - m.blink * (top - bot)
        # Lid skin shows between the open-eye top and the lid edge: slightly darker.
        self.darken(sl, 0.10 * _slab(t, lid, top, fw))
        ap = _slab(t, bot, lid, fw)
        self.paint(sl, ap, _EYE_WHITE, LABELS["eye_white"])
        # Iris and pupil follow the camera (counter-rotate with the head).
        g = fr.rot[2, :]  # head-local direction towards the camera
        ix = ex + 0.55 * ew * float(g[0])
        iy = ey + 0.55 * ew * float(g[1]) - 0.05 * eht
        ri = 0.44 * ew
        di2 = (u - ix) ** 2 + (v - iy) ** 2
        di = np.sqrt(di2)
        ci = _cov(di - ri, fw) * ap
        iris_col = (1.12 - 0.5 * di2 * (1.0 / (ri * ri)))[..., None] * rig.iris
        self.paint(sl, ci, iris_col, LABELS["iris"])
        self.paint(sl, _cov(di - 0.45 * ri, fw) * ap, _BLACK, None)
        dh = np.sqrt((u - (ix - 0.35 * ri)) ** 2 + (v - (iy + 0.35 * ri)) ** 2)
        self.paint(sl, 0.9 * _cov(dh - 0.17 * ri, fw) * ap, _EYE_WHITE, None)
        # Lash lines: strong on the upper lid edge, faint on the lower lid.
        ends = _clip01(e * 6.0)
        lash = 0.0055 + 0.004 * m.blink
        self.paint(sl, _slab(t, lid - 0.3 * lash, lid + lash, fw) * ends, _BLACK, None)
        self.paint(sl, 0.3 * _slab(t, bot - 0.003, bot + 0.0015, fw) * ends, _BLACK, None)

    def brow(self, side: float) -> None:
        rig, m, ident = self.fr.rig, self.fr.motion, self.fr.ident
        ew, bt = ident.eye_size, ident.brow_thickness
        bx = side * (ident.eye_spacing + 0.1 * ew)
        hl = 1.3 * ew
        by = rig.brow_y + 0.035 * m.brow_raise
        arch = 0.010 + 0.014 * m.brow_raise
        sl = self.region(bx - hl - 0.01, bx + hl + 0.01, by - bt - 0.01, by + arch + bt + 0.01)
        if sl is None:
            return
        u, v, fw = self.u[sl], self.v[sl], self.fw[sl]
        du = u - bx
        x = du * (1.0 / hl)
        centre = by + arch * (1.0 - x * x) - 0.006 * x * side
        th = bt * (0.85 - 0.3 * x * side) * (1.0 - 0.35 * x * x)
        sd = np.maximum(np.abs(v - centre) - 0.5 * th, np.abs(du) - hl)
        self.paint(sl, 0.95 * _cov(sd, fw), rig.brow, LABELS["brow"])

    def nose_shadow(self) -> None:
        rig, ident = self.fr.rig, self.fr.ident
        nw = ident.nose_width
        cy = rig.nose_bottom - 0.012
        sl = self.region(-2.2 * nw, 2.2 * nw, cy - 0.04, cy + 0.03)
        if sl is None:
            return
        u, v = self.u[sl], self.v[sl]
        k = (u * (1.0 / (1.6 * nw))) ** 2 + ((v - cy) * (1.0 / 0.025)) ** 2
        self.darken(sl, 0.22 * _clip01(1.0 - k))

    def smile_folds(self) -> None:
        rig, m, ident = self.fr.rig, self.fr.motion, self.fr.ident
        if m.smile < 0.02:
            return
        top, bottom = rig.nose_bottom + 0.015, rig.mouth_y - 0.02
        w = ident.mouth_width * (1.0 + 0.15 * m.smile)
        for side in (-1.0, 1.0):
            u_top = side * (ident.nose_width + 0.02)
            u_bot = side * (w + 0.02)
            lo = min(u_top, u_bot) - 0.03
            hi = max(u_top, u_bot) + 0.03
            sl = self.region(lo, hi, bottom, top)
            if sl is None:
                continue
            u, v, fw = self.u[sl], self.v[sl], self.fw[sl]
            s = _clip01((top - v) * (1.0 / (top - bottom)))
            uc = u_top + (u_bot - u_top) * s + side * 0.025 * np.sin(np.pi * s)
            fade = _clip01(s * (1 - s) * 8.0)
            d = np.abs(u - uc)
            amount = (
                0.35 * m.smile * fade * (_cov(d - 0.004, fw) + 0.4 * _cov(d - 0.012, fw + 0.01))
            )
            self.darken(sl, np.clip(amount, 0.0, 0.6))

    def facial_hair(self) -> None:
        rig, m, ident = self.fr.rig, self.fr.motion, self.fr.ident
        style = ident.facial_hair
        if style == "none":
            return
        a, b, w = rig.a, rig.b, ident.mouth_width
        lab = LABELS["facial_hair"]
        my = rig.mouth_y + 0.5 * m.smile * 0.03
        if style in ("full", "stubble"):
            sl = self.region(-a, a, -b - 0.05, _EYE_Y)
            if sl is None:
                return
            u, v, fw = self.u[sl], self.v[sl], self.fw[sl]
            lo_top = rig.mouth_y + 0.05
            s = _clip01((np.abs(u) - 0.4 * a) * (1.0 / (0.45 * a)))
            s = s * s * (3 - 2 * s)
            top = lo_top + (_EYE_Y + 0.02 - lo_top) * s
            edge = fw + 0.012
            cov = _cov(v - top, edge)
            if style == "full":
                amp = 0.12 * self.detail(110.0)
                tex = 1.0 - amp + amp * np.sin(u * 110.0 + 3.0 * np.sin(v * 40.0))
                self.paint(sl, 0.95 * cov, tex[..., None] * rig.hair, lab)
            else:
                amp = 0.1 * self.detail(260.0)
                tex = 0.3 + amp * np.sin(u * 260.0) * np.sin(v * 240.0)
                self.paint(sl, tex * cov, rig.hair * 0.8, None)
            return
        # Moustache (also part of the goatee).
        mt = my + ident.lip_thickness * 0.85 + 0.004
        sl = self.region(-1.3 * w, 1.3 * w, mt - 0.02, mt + 0.05)
        if sl is not None:
            u, v, fw = self.u[sl], self.v[sl], self.fw[sl]
            x = u * (1.0 / (1.2 * w))
            e = _clip01(1.0 - x * x)
            lo = mt - 0.018 * (1.0 - e)  # the ends droop
            hi = lo + 0.026 * np.sqrt(e)
            amp = 0.15 * self.detail(150.0)
            tex = 1.0 - amp + amp * np.sin(u * 150.0)
            self.paint(sl, 0.95 * _slab(v, lo, hi, fw), tex[..., None] * rig.hair, lab)
        if style == "goatee":
            cy = rig.mouth_y - 0.09 - 1.2 * _OPEN_H * m.mouth_open
            sl = self.region(-w, w, cy - 0.09, cy + 0.07)
            if sl is None:
                return
            u, v, fw = self.u[sl], self.v[sl], self.fw[sl]
            rx, ry = 0.8 * w, 0.07
            k = np.sqrt((u * (1.0 / rx)) ** 2 + ((v - cy) * (1.0 / ry)) ** 2)
            amp = 0.15 * self.detail(120.0)
            tex = 1.0 - amp + amp * np.sin(u * 120.0) * np.sin(v * 100.0)
            self.paint(sl, 0.95 * _cov((k - 1.0) * ry, fw + 0.006), tex[..., None] * rig.hair, lab)

    def mouth(self) -> None:
        rig, m, ident = self.fr.rig, self.fr.motion, self.fr.ident
        w = ident.mouth_width * (1.0 + 0.15 * m.smile - 0.06 * m.mouth_open)
        lip = ident.lip_thickness
        my = rig.mouth_y
        opening = _OPEN_H * m.mouth_open
        top_max = my + 0.05 * m.smile + 0.6 * opening + lip + 0.02
        bot_min = my - 1.4 * opening - 1.2 * lip - 0.02
        sl = self.region(-w - 0.02, w + 0.02, bot_min, top_max)
        if sl is None:
            return
        u, v, fw = self.u[sl], self.v[sl], self.fw[sl]
        x = u * (1.0 / w)
        x2 = x * x
        e = _clip01(1.0 - x2)
        se = np.sqrt(e)
        mid = my + m.smile * (0.045 * x2 - 0.008)
        # The opening (2 * ho high) lifts the upper lip a little and drops the lower lip more.
        ho = opening * se
        top = mid + 0.6 * ho
        bottom = mid - 1.4 * ho
        upper = top + lip * 0.85 * se * (1.0 - 0.18 * _clip01(1.0 - 25.0 * x2))
        lower = bottom - lip * 1.1 * se
        lips = _slab(v, lower, upper, fw)
        # Upper lip a little darker than the lower one.
        lip_col = np.where((v > mid)[..., None], rig.lip * 0.88, rig.lip)
        self.paint(sl, lips, lip_col, LABELS["lips"])
        seam = _slab(v, mid - 0.0025, mid + 0.0025, fw) * _clip01(e * 5)
        self.paint(sl, 0.6 * seam, rig.lip_dark, None)
        if m.mouth_open > 0.0:
            inner = _slab(v, bottom, top, fw)
            self.paint(sl, inner, _MOUTH_DARK, LABELS["mouth_interior"])
            tooth = np.minimum(2.0 * ho, 0.018 * se)
            front_teeth = _clip01((0.72 - np.abs(x)) * 8.0)
            self.paint(sl, _slab(v, top - tooth, top, fw) * front_teeth * inner, _TEETH, None)
            tongue = _slab(v, bottom, bottom + 0.35 * ho * m.mouth_open, fw)
            self.paint(sl, tongue * inner * _clip01((0.8 - np.abs(x)) * 5.0), _TONGUE, None)

    def hair_cap(self) -> None:
        rig, ident = self.fr.rig, self.fr.ident
        style = ident.hair_style
        if style == "none":
            return
        a, b = rig.a, rig.b
        front, side = rig.hairline_y, rig.side_hair_y
        sl = self.region(-1.05 * a, 1.05 * a, min(front, side) - 0.05, b * 1.05)
        if sl is None:
            return
        u, v, fw = self.u[sl], self.v[sl], self.fw[sl]
        au = np.abs(u) * (1.0 / a)
        s = _clip01((au - 0.62) * (1.0 / 0.26))
        s = s * s * (3 - 2 * s)
        line = front + 0.04 * au * au + (side - front) * s
        if style == "fringe":
            line = line - 0.022 * np.abs(np.sin(u * 30.0)) * (1.0 - s)
        else:
            line = line + 0.006 * np.sin(u * 45.0)
        cov = _cov(line - v, fw + 0.004)
        amp = 0.12 * self.detail(90.0)
        tex = 1.0 - amp + amp * np.sin(u * 90.0 + v * 25.0)
        self.paint(sl, cov, tex[..., None] * rig.hair, LABELS["hair"])

    def finish(self) -> None:
        """Shade the painted albedo and lay the head onto the canvas."""
        fr = self.fr
        assert self.box is not None
        shade = fr.shade(self.normal)
        lam = self.normal.nx * _LX + self.normal.ny * _LY + self.normal.nz * _LZ
        shade = shade + 0.05 * _clip01((lam - 0.75) * 4.0)
        col = self.albedo * shade[..., None]
        r0, r1, c0, c1 = self.box
        _lerp(fr.canvas[r0:r1, c0:c1], self.alpha, col)
        if fr.labels is not None and self.labels is not None:
            lab = fr.labels[r0:r1, c0:c1]
            mask = self.alpha >= 0.5
            lab[mask] = self.labels[mask]

    def glasses(self) -> None:
        fr, rig, ident = self.fr, self.fr.rig, self.fr.ident
        if ident.glasses == "none":
            return
        a, ew, sp = rig.a, ident.eye_size, ident.eye_spacing
        rx = 1.45 * ew
        ry = min(1.05 * ew, rig.brow_y - 0.008 - 0.5 * ident.brow_thickness - 0.014)
        vy = _EYE_Y + 0.008
        th = 0.011
        sl = self.region(-a, a, vy - ry - 0.02, vy + ry + 0.02)
        if sl is None:
            return
        u, v, fw = self.u[sl], self.v[sl], self.fw[sl]
        frame = np.zeros_like(u)
        lens = np.zeros_like(u)
        for side in (-1.0, 1.0):
            du = u - side * sp
            dv = v - vy
            if ident.glasses == "round":
                kx, ky = du * (1.0 / rx), dv * (1.0 / ry)
                k = np.sqrt(kx * kx + ky * ky)
                sd = (k - 1.0) * (rx * ry) / np.sqrt((kx * ry) ** 2 + (ky * rx) ** 2 + 1e-12) * k
            else:
                rr = 0.35 * ry
                qx = np.abs(du) - (rx - rr)
                qy = np.abs(dv) - (ry - rr)
                out = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
                sd = out + np.minimum(np.maximum(qx, qy), 0.0) - rr
            frame = np.maximum(frame, _cov(np.abs(sd) - 0.5 * th, fw))
            lens = np.maximum(lens, _cov(sd, fw))
        inner = sp - rx
        bridge = np.maximum(np.abs(v - (vy + 0.25 * ry)) - 0.4 * th, np.abs(u) - inner - 0.004)
        temple = np.maximum(np.abs(v - (vy + 0.2 * ry)) - 0.4 * th, sp + rx - 0.004 - np.abs(u))
        frame = np.maximum(frame, _cov(np.minimum(bridge, temple), fw))
        box = self.box
        assert box is not None
        rows, cols = sl
        r0, c0 = box[0] + rows.start, box[2] + cols.start
        target = fr.canvas[r0 : r0 + u.shape[0], c0 : c0 + u.shape[1]]
        head_a = self.alpha[sl]
        shade = fr.shade(
            _Raster(head_a, head_a, self.normal.nx[sl], self.normal.ny[sl], self.normal.nz[sl])
        )
        tint = np.array([0.80, 0.88, 0.95], dtype=np.float32)
        _lerp(target, 0.16 * lens * head_a, tint)
        cov = frame * head_a
        _lerp(target, cov, (0.3 + 0.7 * shade)[..., None] * rig.glasses)
        if fr.labels is not None:
            fr.labels[r0 : r0 + u.shape[0], c0 : c0 + u.shape[1]][cov >= 0.5] = LABELS["glasses"]


def _nose(fr: _Frame, head: _Head) -> None:
    rig, ident = fr.rig, fr.ident
    if head.box is None:
        return
    nl, nw, nd = ident.nose_length, ident.nose_width, rig.nose_depth
    a, b = rig.a, rig.b
    cy = rig.nose_y
    zs = _skull_z(0.0, cy, a, b, b * (1.0 + _CHIN_DROP * fr.motion.mouth_open), rig.jaw_ratio)
    tilt = _rot_x(0.42)
    e = fr.ellipsoid((0.0, cy - 0.1 * nl, zs - 0.3 * nd), (0.62 * nw, 1.1 * nl, nd), tilt)
    box = fr.ell_bbox(e)
    if box is None:
        return
    hr0, hr1, hc0, hc1 = head.box
    r0, r1, c0, c1 = box
    r0, r1, c0, c1 = max(r0, hr0), min(r1, hr1), max(c0, hc0), min(c1, hc1)
    if r0 >= r1 or c0 >= c1:
        return
    box = (r0, r1, c0, c1)
    r = fr.raster(e, box)
    hsl = (slice(r0 - hr0, r1 - hr0), slice(c0 - hc0, c1 - hc0))
    head_z = head.z[hsl]
    alpha = r.alpha * _clip01((r.z - head_z) / (0.012 * fr.s) + 0.5) * head.alpha[hsl]
    # Nostrils, in nose-local unit coordinates.
    basis = fr.rot @ tilt
    x = fr.xs[c0:c1] - np.float32(e.centre[0])
    y = (fr.ys[r0:r1] - np.float32(e.centre[1]))[:, None]
    zz = r.z - np.float32(e.centre[2])
    inv = 1.0 / fr.s
    lx = (float(basis[0, 0]) * x + float(basis[1, 0]) * y + float(basis[2, 0]) * zz) * (
        inv / (0.62 * nw)
    )
    ly = (float(basis[0, 1]) * x + float(basis[1, 1]) * y + float(basis[2, 1]) * zz) * (
        inv / (1.1 * nl)
    )
    albedo = np.empty(alpha.shape + (3,), dtype=np.float32)
    albedo[...] = rig.skin
    fwn = (fr.px / fr.s) / (nw * np.maximum(r.nz, 0.25))
    for side in (-1.0, 1.0):
        k = np.sqrt(((lx - side * 0.5) * (1.0 / 0.3)) ** 2 + ((ly + 0.86) * (1.0 / 0.12)) ** 2)
        _lerp(albedo, 0.75 * _cov((k - 1.0) * 0.12, fwn), rig.nostril)
    shade = fr.shade(r)
    lam = r.nx * _LX + r.ny * _LY + r.nz * _LZ
    shade = shade + 0.08 * _clip01((lam - 0.8) * 5.0)
    fr.composite(box, alpha, albedo * shade[..., None], LABELS["nose"])


# ---------------------------------------------------------------------------- public API


def _resolve_background(ident: IdentityParams, size: int, background: Background) -> np.ndarray:
    if isinstance(background, str):
        if background == "identity":
            return _background(size, ident.background_rgb)
        if background == "black":
            return np.zeros((size, size, 3), dtype=np.float32)
        if background == "white":
            return np.ones((size, size, 3), dtype=np.float32)
        raise ValueError(f"unknown background {background!r}")
    arr = np.asarray(background)
    if arr.shape == (3,):
        col = arr.astype(np.float32)
        if np.any(col < 0) or np.any(col > 1):
            raise ValueError("a background colour is three floats in [0, 1]")
        return np.broadcast_to(col, (size, size, 3))
    if arr.shape == (size, size, 3):
        if arr.dtype == np.uint8:
            return arr.astype(np.float32) * np.float32(1.0 / 255.0)
        return np.clip(arr.astype(np.float32), 0.0, 1.0)
    raise ValueError(
        f"background must be 'identity', 'black', 'white', an RGB triple or a {size}x{size}x3 image"
    )


def _render(
    ident: IdentityParams, motion: MotionParams, size: int, background: Background, labels: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    if not isinstance(ident, IdentityParams) or not isinstance(motion, MotionParams):
        raise TypeError("render_frame(identity: IdentityParams, motion: MotionParams, ...)")
    size = int(size)
    if size < 16 or size > 4096:
        raise ValueError("size must be in [16, 4096]")
    fr = _Frame(ident, motion, size)
    fr.canvas[...] = _resolve_background(ident, size, background)
    if labels:
        fr.labels = np.zeros((size, size), dtype=np.uint8)
    rig = fr.rig
    a, b = rig.a, rig.b
    style = ident.hair_style
    hair_lab = LABELS["hair"]

    if style == "long":
        drape = fr.ellipsoid((0.0, -0.30 * b, -0.30 * a), (1.2 * a, 1.25 * b, 0.5 * a))
        fr.solid(drape, rig.hair * 0.92, hair_lab)
    fr.solid(
        fr.ellipsoid((0.0, -b - 0.62, -0.35), (2.1 * a, 0.55, 0.4), body=True),
        rig.clothing,
        LABELS["clothing"],
    )
    neck_top = float(fr.t[1]) - 0.55 * b * fr.s
    fr.solid(
        fr.ellipsoid((0.0, -0.95 * b, -0.12), (0.55 * a, 0.42, 0.5 * a), body=True),
        rig.neck_skin,
        LABELS["neck"],
        darken_top=neck_top,
    )
    if style == "bun":
        fr.solid(fr.ellipsoid((0.0, 0.92 * b, -0.4 * a), (0.15, 0.13, 0.14)), rig.hair, hair_lab)
    if style != "none":
        cut = None if style == "long" else _EYE_Y - 0.01
        fr.solid(
            fr.ellipsoid((0.0, 0.13 * b, -0.03), (a + 0.035, 0.9 * b + 0.04, 0.95 * a + 0.035)),
            rig.hair,
            hair_lab,
            cut_below=cut,
        )
    ear_y = _EYE_Y - 0.035
    if style != "long":
        for side in (-1.0, 1.0):
            fr.solid(
                fr.ellipsoid((side * 0.975 * a, ear_y, -0.06 * a), (0.032, ident.ear_size, 0.06)),
                rig.ear_skin,
                LABELS["ear"],
            )
    if ident.earrings:
        drop = ear_y - ident.ear_size - 0.015
        for side in (-1.0, 1.0):
            fr.solid(
                fr.ellipsoid((side * 0.985 * a, drop, -0.06 * a), (0.022, 0.026, 0.022)),
                rig.metal,
                LABELS["earring"],
                spec=0.6,
            )

    head = _Head(fr)
    if head.box is not None:
        for side in (-1.0, 1.0):
            head.eye(side)
            head.brow(side)
        head.nose_shadow()
        head.smile_folds()
        head.facial_hair()
        head.mouth()
        head.hair_cap()
        head.finish()
        _nose(fr, head)
        head.glasses()

    out = np.empty((size, size, 3), dtype=np.uint8)
    np.multiply(fr.canvas, 255.0, out=fr.canvas)
    np.add(fr.canvas, 0.5, out=fr.canvas)
    np.clip(fr.canvas, 0.0, 255.0, out=fr.canvas)
    out[...] = fr.canvas  # truncation after +0.5 = rounding
    return out, fr.labels


def render_frame(
    identity: IdentityParams,
    motion: MotionParams,
    size: int = 256,
    *,
    background: Background = "identity",
) -> np.ndarray:
    """Render ``identity`` posed by ``motion`` as one ``uint8`` RGB frame ``(size, size, 3)``.

    ``background``: ``"identity"`` (the identity's own backdrop colour, a soft gradient),
    ``"black"``, ``"white"``, an RGB triple in ``[0, 1]``, or a ``size x size x 3`` image.
    Deterministic: the same arguments give a bit-identical array.
    """
    return _render(identity, motion, size, background, False)[0]


def render_frame_and_labels(
    identity: IdentityParams,
    motion: MotionParams,
    size: int = 256,
    *,
    background: Background = "identity",
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`render_frame`, plus a ``uint8`` ``H x W`` label map (ids in :data:`LABELS`).

    A pixel gets the label of the front-most layer covering at least half of it. The RGB output
    is identical to :func:`render_frame`'s.
    """
    rgb, labels = _render(identity, motion, size, background, True)
    assert labels is not None
    return rgb, labels


def render_clip(
    identity: IdentityParams,
    track: MotionTrack | Sequence[MotionParams],
    size: int = 256,
    *,
    background: Background = "identity",
) -> np.ndarray:
    """Render every frame of ``track`` for ``identity``: ``uint8`` array ``(T, H, W, 3)``."""
    frames = list(track)
    if not frames:
        raise ValueError("empty motion track")
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for i, m in enumerate(frames):
        out[i] = _render(identity, m, size, background, False)[0]
    return out


def cross_reenactment(
    identity_a: IdentityParams,
    track_b: MotionTrack | Sequence[MotionParams],
    size: int = 256,
    *,
    background: Background = "identity",
) -> np.ndarray:
    """Ground truth of cross-reenactment: identity A performing B's motion, ``(T, H, W, 3)``.

    By construction this is exactly ``render_clip(identity_a, track_b, size)``: SynthFace keeps
    identity and motion in separate parameters, so "A with the motion of B" is simply A rendered
    with B's motion parameters, frame for frame. The *driving* clip is
    ``render_clip(identity_b, track_b, size)``; :func:`cross_reenactment_sample` returns both.
    """
    return render_clip(identity_a, track_b, size, background=background)


class CrossReenactmentSample(NamedTuple):
    """One evaluation triplet: A's reference frame, B's driving clip, and the A-with-B target."""

    reference: np.ndarray  # (H, W, 3) identity A with ``reference_motion``
    driving: np.ndarray  # (T, H, W, 3) identity B with track B
    target: np.ndarray  # (T, H, W, 3) identity A with track B (the ground truth)


def cross_reenactment_sample(
    identity_a: IdentityParams,
    identity_b: IdentityParams,
    track_b: MotionTrack | Sequence[MotionParams],
    size: int = 256,
    *,
    reference_motion: MotionParams | None = None,
    background: Background = "identity",
) -> CrossReenactmentSample:
    """Reference (A, neutral by default), driving (B with track B), target (A with track B)."""
    ref_motion = MotionParams.neutral() if reference_motion is None else reference_motion
    return CrossReenactmentSample(
        reference=render_frame(identity_a, ref_motion, size, background=background),
        driving=render_clip(identity_b, track_b, size, background=background),
        target=cross_reenactment(identity_a, track_b, size, background=background),
    )
