"""SynthFace ground-truth benchmark of trained reenactment models.

SynthFace keeps identity and motion in separate parameters, so "portrait A driven by performer B"
has an exact answer: A rendered with B's motion. For held-out identities (a seed never used for
training data) each case is a reference frame of A, a driving clip of B and the target clip; every
model animates the reference with the driving clip and is scored on:

* **cross-reenactment error** vs the target: L1 (pixels in [0, 1]), PSNR and SSIM
  (scikit-image, per frame, channel axis);
* **motion error**: the 10 motion parameters regressed from the output vs the driver's true ones
  (mean absolute error in normalised [0, 1] units; pose = yaw/pitch/roll/tx/ty/scale,
  expression = blink/brow/mouth/smile);
* **identity leakage**: identity parameters regressed from the output, distance (L2 over the
  normalised identity vector) to the source A and to the driver B; ``leak`` = mean of
  ``d_A / (d_A + d_B)`` (0 = pure source identity, 1 = the driver's), and the share of frames
  closer to the driver.
* **faces as the platform's gate sees them** (dlib, the platform's default recogniser, on each
  frame upscaled to ``--face-side`` px): the share of frames in which a face is found (the gate
  fails a job with more than 25 % faceless frames) and, over those, the similarity to the
  portrait (the case's reference of A) and to the driving frame at the same index (B in the same
  pose), and the share of frames more similar to the portrait than to the driver. L1 and SSIM
  against a blurry 64-px ground truth reward averaged, featureless faces; this column does not.
  ``--no-faces`` skips it (about 0.3 s per frame).

The regressors are small CNNs trained on SynthFace renders (random identities and motions from a
third seed) against the ground-truth vectors, inside this script, and cached under
``var/synthface_eval/``; their own errors on the ground-truth targets are reported as the floor.

Reference rows: ``target`` (the ground truth itself, i.e. the regressors' floor), ``copy
reference`` (no motion transferred), ``driving clip`` (full identity leakage; its dlib
similarity to the portrait is the baseline between the two characters).

Usage::

    .venv/bin/python benchmarks/synthface_eval.py \\
        --model xnemo=/tmp/runs/xnemo_s1 --model spatial=/tmp/runs/spatial_s1 \\
        [--cases 16] [--case-seed N] [--frames 6] [--steps 20] [--threads 1] \\
        [--json out.json] [--sheet out.png] [--vae-floor] [--vae NAME=FOLDER] [--no-faces] \\
        [--face-side 256]

``--vae-floor`` adds, per model, the score of its VAE's round trip of the targets (encode,
decode): no sampler can beat the autoencoder it decodes with. ``--vae NAME=FOLDER`` scores an
autoencoder alone (e.g. a stage-0 run, whose export holds nothing else). Either adds a second
row, the round trip through the detail refiner with each case's portrait, for a folder that has
a refiner (the model's own sampling uses it unless ``refine=no``).

A model may carry its own sampler settings, e.g. the preview model with the settings its folder
recommends, next to the release's sampling::

    --model preview=reenactment/engine/preview_model \
    --model preview-recommended=reenactment/engine/preview_model,defaults \
    --model v0-at-half-strength=OLD_FOLDER,strength=0.5,init=reference,guidance=1.5 \
    --model unrefined=reenactment/engine/preview_model,defaults,refine=no
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from reenactment.engine.configs import COLOR_MATCH_MODES  # noqa: E402
from reenactment.engine.synthface import (  # noqa: E402
    IDENTITY_VECTOR_SIZE,
    MOTION_FIELDS,
    IdentityParams,
    MotionParams,
    MotionTrack,
    cross_reenactment_sample,
    render_frame,
)
from reenactment.engine.training import load_model_folder  # noqa: E402
from reenactment.engine.training.sampling import (  # noqa: E402
    SAMPLER_INITIAL_LATENTS,
    motion_condition,
    recommended_sampler_settings,
    reenact,
)

CACHE_DIR = REPO_ROOT / "var" / "synthface_eval"
TEST_SEED = 20251124  # identities of the test cases (training used other seeds)
REGRESSOR_SEED = 7007  # identities/motions of the regressors' training renders
POSE = slice(0, 6)
EXPRESSION = slice(6, 10)


# --------------------------------------------------------------------------- regressors


class ParameterRegressor(nn.Module):
    """Image ``(N, 3, S, S)`` in [0, 1] -> (motion ``(N, 10)``, identity ``(N, D)``), in [0, 1]."""

    def __init__(self, size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 3
        for ch in (32, 64, 96, 128):
            layers += [
                nn.Conv2d(prev, ch, 3, padding=1),
                nn.BatchNorm2d(ch),
                nn.ReLU(),
                nn.Conv2d(ch, ch, 3, stride=2, padding=1),
                nn.BatchNorm2d(ch),
                nn.ReLU(),
            ]
            prev = ch
        self.features = nn.Sequential(*layers)
        side = size // 16
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(prev * side * side, 256), nn.ReLU())
        self.motion = nn.Linear(256, len(MOTION_FIELDS))
        self.identity = nn.Linear(256, IDENTITY_VECTOR_SIZE)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(self.features(images * 2 - 1))
        return torch.sigmoid(self.motion(h)), torch.sigmoid(self.identity(h))


def _render_regressor_set(count: int, size: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), np.uint8)
    motions = np.empty((count, len(MOTION_FIELDS)), np.float32)
    identities = np.empty((count, IDENTITY_VECTOR_SIZE), np.float32)
    for i in range(count):
        ident = IdentityParams.sample(rng)
        motion = MotionParams.sample(rng)
        images[i] = render_frame(ident, motion, size)
        motions[i] = motion.to_vector()
        identities[i] = ident.to_vector()
    return images, motions, identities


def _to_unit(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def train_regressor(size: int, count: int = 8000, steps: int = 2500) -> ParameterRegressor:
    """Train (or load from the cache) the motion/identity regressor for ``size`` pixels."""
    path = CACHE_DIR / f"regressor_{size}px_{count}_{steps}.pt"
    model = ParameterRegressor(size)
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    started = time.perf_counter()
    images, motions, identities = _render_regressor_set(count, size, REGRESSOR_SEED)
    x, m, ident = _to_unit(images), torch.from_numpy(motions), torch.from_numpy(identities)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, count, (64,), generator=generator)
        pred_m, pred_i = model(x[idx])
        loss = F.mse_loss(pred_m, m[idx]) + F.mse_loss(pred_i, ident[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 500 == 0:
            print(f"  regressor step {step}: loss {loss.item():.4f}", flush=True)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    print(f"  regressor trained in {time.perf_counter() - started:.0f} s -> {path}", flush=True)
    return model.eval()


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    reference: np.ndarray  # (S, S, 3) uint8, identity A
    driving: np.ndarray  # (F, S, S, 3) identity B
    target: np.ndarray  # (F, S, S, 3) A with B's motion
    motion: np.ndarray  # (F, 10) normalised, the driver's motion
    identity_a: np.ndarray
    identity_b: np.ndarray


def make_cases(count: int, frames: int, size: int, seed: int = TEST_SEED) -> list[Case]:
    """``count`` held-out cases; another ``seed`` draws another set (e.g. a validation set to
    choose settings on, so the test cases stay unseen)."""
    cases = []
    for k in range(count):
        rng = np.random.default_rng([seed, k])
        a, b = IdentityParams.sample(rng), IdentityParams.sample(rng)
        track = MotionTrack.random(frames, rng)
        sample = cross_reenactment_sample(
            a, b, track, size, reference_motion=MotionParams.sample(rng)
        )
        cases.append(
            Case(
                sample.reference,
                sample.driving,
                sample.target,
                track.to_array(normalized=True).astype(np.float32),
                a.to_vector().astype(np.float32),
                b.to_vector().astype(np.float32),
            )
        )
    return cases


def parse_model_spec(spec: str, steps: int, guidance: float) -> tuple[str, str, dict[str, Any]]:
    """``NAME=FOLDER[,key=value...]`` -> name, folder, sampler settings.

    Keys: ``steps``, ``guidance``, ``strength``, ``init`` (``blurred_reference`` / ``reference``),
    ``color`` (``none`` / ``reference``: the pipeline's ``color_match``), ``refine`` (``yes`` /
    ``no``: the pipeline's ``refine_details``, for a model with a detail refiner), and the bare
    word ``defaults`` (the folder's ``_generation_defaults``, under what is given).
    """
    from reenactment.engine.training.export import (
        MODEL_SUBFOLDERS,
        incomplete_model_reason,
        resolve_model_folder,
    )

    name, _, rest = spec.partition("=")
    folder, *options = rest.split(",")
    try:
        incomplete = incomplete_model_reason(resolve_model_folder(folder), MODEL_SUBFOLDERS)
    except FileNotFoundError as exc:
        raise SystemExit(f"--model {spec!r}: {exc}") from None
    if incomplete:
        raise SystemExit(f"--model {spec!r}: {incomplete} (an autoencoder alone: --vae)")
    settings: dict[str, Any] = {"num_inference_steps": steps, "guidance_scale": guidance}
    keys = {
        "steps": ("num_inference_steps", int),
        "guidance": ("guidance_scale", float),
        "strength": ("strength", float),
        "init": ("initial_latents", str),
        "color": ("color_match", str),
        "refine": ("refine_details", lambda value: value == "yes"),
    }
    choices = {
        "init": SAMPLER_INITIAL_LATENTS,
        "color": COLOR_MATCH_MODES,
        "refine": ("yes", "no"),
    }
    for option in options:
        if option == "defaults":
            settings.update(recommended_sampler_settings(folder))
            continue
        key, _, value = option.partition("=")
        if key not in keys:
            raise SystemExit(f"unknown model option {key!r} in {spec!r}")
        if key in choices and value not in choices[key]:
            raise SystemExit(
                f"model option {key}={value!r} in {spec!r}: choose from {', '.join(choices[key])}"
            )
        try:
            settings[keys[key][0]] = keys[key][1](value)
        except ValueError:
            raise SystemExit(f"model option {key}={value!r} in {spec!r} is not a number") from None
    return name, folder, settings


def _to_uint8(frames: torch.Tensor) -> list[np.ndarray]:
    """``(B, 3, F, S, S)`` in ``[-1, 1]`` -> ``(F, S, S, 3)`` uint8 per clip."""
    # b c f h w -> b f h w c
    out = ((frames + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1)
    return list(out.numpy())


def load_vae_only(spec: str) -> tuple[str, Any]:
    """``--vae NAME=FOLDER``: the autoencoder of a model or run folder (a stage-0 run's export
    holds nothing else), and its detail refiner when it has one, as ``(name, object with .vae
    and .detail_refiner)`` for :func:`vae_round_trip`."""
    from types import SimpleNamespace

    from reenactment.engine.loading import DETAIL_REFINER
    from reenactment.engine.training import load_model_folder_weights
    from reenactment.engine.training.components import (
        ModelConfig,
        build_detail_refiner,
        build_vae,
    )
    from reenactment.engine.training.export import resolve_model_folder

    name, sep, folder = spec.partition("=")
    try:
        if not sep:
            raise FileNotFoundError("expected NAME=FOLDER")
        resolved = resolve_model_folder(folder)
        info = json.loads((resolved / "training.json").read_text(encoding="utf-8"))
        holder = SimpleNamespace(vae=build_vae(info["model_config"]["vae"]), detail_refiner=None)
        networks = ["vae"]
        if (resolved / DETAIL_REFINER).is_dir():
            holder.detail_refiner = build_detail_refiner(ModelConfig(**info["model_config"]))
            networks.append(DETAIL_REFINER)
        load_model_folder_weights(resolved, holder, networks)  # type: ignore[arg-type]
    except (FileNotFoundError, KeyError, TypeError, ValueError) as exc:
        raise SystemExit(f"--vae {spec!r}: {exc}") from None
    holder.vae.eval()
    if holder.detail_refiner is not None:
        holder.detail_refiner.eval()
    return name, holder


def vae_round_trip(
    components: Any, cases: list[Case], batch: int, *, refine: bool = False
) -> list[np.ndarray]:
    """The targets encoded and decoded by the model's VAE: the best any sampler could do (with
    ``refine``, then through its detail refiner with each case's portrait, as generation does)."""
    from reenactment.engine.training.components import vae_decode, vae_encode

    outputs = []
    with torch.no_grad():
        for i in range(0, len(cases), batch):
            chunk = cases[i : i + batch]
            frames = chunk[0].target.shape[0]
            # (b f) h w c -> (b f) c h w
            flat = torch.cat([_to_unit(c.target) for c in chunk]) * 2 - 1
            decoded = vae_decode(
                components.vae, vae_encode(components.vae, flat), num_frames=frames
            ).clamp(-1, 1)
            if refine:
                # b h w c -> (b f) c h w: each frame with its case's portrait
                portraits = torch.cat([_to_unit(c.reference[None]) for c in chunk]) * 2 - 1
                portraits = portraits.repeat_interleave(frames, dim=0)
                decoded = components.detail_refiner(decoded, portraits).clamp(-1, 1)
            # (b f) c h w -> b c f h w
            clips = decoded.reshape(len(chunk), frames, *decoded.shape[1:]).transpose(1, 2)
            outputs += _to_uint8(clips)
    return outputs


def descriptor_shares(components: Any, size: int, count: int = 8) -> dict[str, float]:
    """How much of the motion descriptor's variance follows motion, and how much identity.

    ``count`` identities x ``count`` motions are rendered (every identity in every motion); the
    descriptors (tokens, or the baseline's maps), centred, are split into the part that the
    motion explains (mean over identities) and the part the identity explains (mean over
    motions). An identity-agnostic descriptor has a motion share near 1 and an identity share
    near 0.
    """
    rng = np.random.default_rng([TEST_SEED, 99])
    identities = [IdentityParams.sample(rng) for _ in range(count)]
    motions = [MotionParams.sample(rng) for _ in range(count)]
    # (I M) h w c
    images = np.stack([render_frame(i, m, size) for i in identities for m in motions])
    with torch.no_grad():
        descriptors = motion_condition(components, _to_unit(images) * 2 - 1)
    # (I M) ... -> I M D
    d = descriptors.reshape(count, count, -1).double()
    d = d - d.mean((0, 1))
    total = d.pow(2).mean()
    return {
        "motion_share": float(d.mean(0).pow(2).mean() / total),
        "identity_share": float(d.mean(1).pow(2).mean() / total),
    }


def run_model(
    components: Any, cases: list[Case], settings: dict[str, Any], batch: int, label: str
) -> tuple[list[np.ndarray], float]:
    """Outputs ``(F, S, S, 3)`` uint8 per case, and seconds per case."""
    outputs = []
    started = time.perf_counter()
    for i in range(0, len(cases), batch):
        chunk = cases[i : i + batch]
        ref = torch.stack([_to_unit(c.reference[None])[0] for c in chunk]) * 2 - 1
        # f h w c -> c f h w
        drv = torch.stack([_to_unit(c.driving).transpose(0, 1) for c in chunk]) * 2 - 1
        outputs += _to_uint8(reenact(components, ref, drv, seed=i, **settings))
        print(f"  {label}: {min(i + batch, len(cases))}/{len(cases)} cases", flush=True)
    return outputs, (time.perf_counter() - started) / len(cases)


# --------------------------------------------------------------------------- faces (dlib)


class FaceJudge:
    """dlib's view of 64-px frames, upscaled so its detector can see them: the largest face's
    embedding per frame (None: no face). The cases' own frames (references, driving frames) are
    embedded once and reused for every row."""

    def __init__(self, side: int) -> None:
        from reenactment.engine import faces

        self.backend = faces.get_face_backend("dlib")
        self.side = side
        self._cache: dict[tuple[int, int], np.ndarray | None] = {}

    def vector(self, image: np.ndarray) -> np.ndarray | None:
        from PIL import Image

        from reenactment.engine.identity import largest_face_vector

        big = np.asarray(Image.fromarray(image).resize((self.side, self.side), Image.LANCZOS))
        return largest_face_vector(big, self.backend)[0]

    def cached(self, key: tuple[int, int], image: np.ndarray) -> np.ndarray | None:
        if key not in self._cache:
            self._cache[key] = self.vector(image)
        return self._cache[key]

    def scores(self, outputs: list[np.ndarray], cases: list[Case]) -> dict[str, float]:
        found, portrait, driver, closer = [], [], [], []
        for k, (out, case) in enumerate(zip(outputs, cases, strict=True)):
            reference = self.cached((k, -1), case.reference)
            for f in range(out.shape[0]):
                vector = self.vector(out[f])
                found.append(vector is not None)
                performer = self.cached((k, f), case.driving[f])
                if vector is None or reference is None or performer is None:
                    continue
                to_portrait = self.backend.similarity(reference, vector)
                to_driver = self.backend.similarity(performer, vector)
                portrait.append(to_portrait)
                driver.append(to_driver)
                closer.append(to_portrait > to_driver)

        def mean(values: list[Any]) -> float:
            return float(np.mean(values)) if values else math.nan

        return {
            "face_found": mean(found),
            "dlib_portrait": mean(portrait),
            "dlib_driver": mean(driver),
            "dlib_closer_to_portrait": mean(closer),
        }


# --------------------------------------------------------------------------- scores


def score(outputs: list[np.ndarray], cases: list[Case], regressor: ParameterRegressor) -> dict:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    l1, psnr, ssim = [], [], []
    pose_err, expr_err, motion_err = [], [], []
    d_src, d_drv, leak, closer = [], [], [], []
    for out, case in zip(outputs, cases, strict=True):
        for f in range(out.shape[0]):
            a = out[f].astype(np.float64) / 255.0
            b = case.target[f].astype(np.float64) / 255.0
            l1.append(np.abs(a - b).mean())
            # Identical frames (the ground-truth row) have infinite PSNR; report 100 dB.
            psnr.append(
                100.0 if np.array_equal(a, b) else peak_signal_noise_ratio(b, a, data_range=1.0)
            )
            ssim.append(structural_similarity(b, a, channel_axis=-1, data_range=1.0))
        with torch.no_grad():
            pred_m, pred_i = regressor(_to_unit(out))
        pred_m, pred_i = pred_m.numpy(), pred_i.numpy()
        err = np.abs(pred_m - case.motion)
        motion_err.append(err.mean())
        pose_err.append(err[:, POSE].mean())
        expr_err.append(err[:, EXPRESSION].mean())
        ds = np.linalg.norm(pred_i - case.identity_a, axis=1)
        dd = np.linalg.norm(pred_i - case.identity_b, axis=1)
        d_src += list(ds)
        d_drv += list(dd)
        leak += list(ds / (ds + dd + 1e-9))
        closer += list(dd < ds)
    return {
        "L1": float(np.mean(l1)),
        "PSNR": float(np.mean(psnr)),
        "SSIM": float(np.mean(ssim)),
        "motion_mae": float(np.mean(motion_err)),
        "pose_mae": float(np.mean(pose_err)),
        "expression_mae": float(np.mean(expr_err)),
        "id_dist_source": float(np.mean(d_src)),
        "id_dist_driver": float(np.mean(d_drv)),
        "leak": float(np.mean(leak)),
        "closer_to_driver": float(np.mean(closer)),
    }


COLUMNS = (
    ("L1", "L1 (lower)", "{:.4f}"),
    ("PSNR", "PSNR dB", "{:.2f}"),
    ("SSIM", "SSIM", "{:.3f}"),
    ("motion_mae", "motion MAE", "{:.3f}"),
    ("pose_mae", "pose MAE", "{:.3f}"),
    ("expression_mae", "expr MAE", "{:.3f}"),
    ("id_dist_source", "id d(src)", "{:.3f}"),
    ("id_dist_driver", "id d(drv)", "{:.3f}"),
    ("leak", "leak (lower)", "{:.3f}"),
    ("closer_to_driver", "% closer to drv", "{:.0%}"),
)
FACE_COLUMNS = (
    ("face_found", "dlib face found", "{:.0%}"),
    ("dlib_portrait", "dlib sim(portrait)", "{:.3f}"),
    ("dlib_driver", "dlib sim(driver)", "{:.3f}"),
    ("dlib_closer_to_portrait", "% dlib closer to portrait", "{:.0%}"),
)


def markdown_table(rows: dict[str, dict]) -> str:
    columns = COLUMNS + tuple(c for c in FACE_COLUMNS if all(c[0] in r for r in rows.values()))
    header = "| row | " + " | ".join(title for _, title, _ in columns) + " |"
    lines = [header, "|" + " --- |" * (len(columns) + 1)]
    for name, metrics in rows.items():
        # NaN: nothing to average (no frame with a face), shown as a dash.
        cells = [
            "-" if math.isnan(metrics[key]) else fmt.format(metrics[key]) for key, _, fmt in columns
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def contact_sheet(path: Path, cases: list[Case], outputs: dict[str, list[np.ndarray]]) -> None:
    """Rows: reference | driving frames | each model's frames | target frames (per case)."""
    from PIL import Image

    size = cases[0].reference.shape[0]
    frames = cases[0].driving.shape[0]
    blocks = []
    for k, case in enumerate(cases):
        rows = [np.concatenate(list(case.driving), axis=1)]
        rows += [np.concatenate(list(out[k]), axis=1) for out in outputs.values()]
        rows.append(np.concatenate(list(case.target), axis=1))
        ref_col = np.zeros((size * len(rows), size, 3), np.uint8)
        ref_col[:size] = case.reference
        blocks.append(np.concatenate([ref_col, np.concatenate(rows, axis=0)], axis=1))
        blocks.append(np.full((4, size * (frames + 1), 3), 255, np.uint8))
    Image.fromarray(np.concatenate(blocks, axis=0)).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="NAME=MODEL_OR_RUN_FOLDER[,steps=N][,guidance=G][,strength=S][,init=reference]"
        "[,color=reference][,defaults] (defaults: the folder's recommended settings)",
    )
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument(
        "--case-seed",
        type=int,
        default=TEST_SEED,
        help=f"seed of the cases (default {TEST_SEED}, the test set; choose settings on "
        "another seed, a validation set)",
    )
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--guidance", type=float, default=2.5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--regressor-steps",
        type=int,
        default=2500,
        help="training steps of the motion/identity regressor (cached per value)",
    )
    parser.add_argument(
        "--vae-floor",
        action="store_true",
        help="also score each model's VAE round trip of the targets (its pixel-error floor)",
    )
    parser.add_argument(
        "--vae",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="score an autoencoder alone: its round trip of the targets (a model folder, or a "
        "stage-0 run whose export holds only the VAE)",
    )
    parser.add_argument(
        "--no-faces",
        dest="faces",
        action="store_false",
        help="skip the dlib face columns (found share, similarity to portrait and driver)",
    )
    parser.add_argument(
        "--face-side", type=int, default=256, help="frames are upscaled to this for dlib"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--sheet", type=Path, help="contact sheet PNG (first cases)")
    parser.add_argument("--sheet-cases", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Every --model is checked before the (long) regressor training.
    specs = [parse_model_spec(spec, args.steps, args.guidance) for spec in args.model]
    autoencoders = [load_vae_only(spec) for spec in args.vae]

    print("regressors ...", flush=True)
    regressor = train_regressor(args.size, steps=args.regressor_steps)
    cases = make_cases(args.cases, args.frames, args.size, seed=args.case_seed)
    judge = FaceJudge(args.face_side) if args.faces else None

    def scored(clips: list[np.ndarray]) -> dict[str, Any]:
        metrics = score(clips, cases, regressor)
        return metrics | (judge.scores(clips, cases) if judge is not None else {})

    rows: dict[str, dict[str, Any]] = {
        "target (ground truth; regressor floor)": scored([c.target for c in cases]),
        "copy reference (no motion)": scored(
            [np.repeat(c.reference[None], args.frames, 0) for c in cases]
        ),
        "driving clip (full leakage)": scored([c.driving for c in cases]),
    }
    outputs: dict[str, list[np.ndarray]] = {}
    timing = {}
    sampler: dict[str, dict[str, Any]] = {}
    descriptors: dict[str, dict[str, float]] = {}
    for name, folder, sampler[name] in specs:
        print(f"model {name} {sampler[name]} ...", flush=True)
        components = load_model_folder(folder)
        outputs[name], timing[name] = run_model(components, cases, sampler[name], args.batch, name)
        rows[name] = scored(outputs[name])
        rows[name]["seconds_per_case"] = timing[name]
        descriptors[name] = descriptor_shares(components, args.size)
        if args.vae_floor:
            autoencoders.append((name, components))
    for name, holder in autoencoders:
        print(f"autoencoder {name} ...", flush=True)
        round_trip = vae_round_trip(holder, cases, args.batch)
        rows[f"{name}: VAE round trip of the target"] = scored(round_trip)
        if holder.detail_refiner is not None:
            refined = vae_round_trip(holder, cases, args.batch, refine=True)
            rows[f"{name}: VAE round trip + detail refiner"] = scored(refined)
    table = markdown_table(rows)
    print()
    print(
        f"SynthFace cross-reenactment, {args.cases} held-out cases (seed {args.case_seed}) x "
        f"{args.frames} frames at "
        f"{args.size}px, DDIM {args.steps} steps, guidance {args.guidance}"
    )
    print(table)
    for name, settings in sampler.items():
        print(f"  {name}: {settings}")
    print()
    print("motion descriptor: share of its variance explained by motion / by identity")
    for name, shares in descriptors.items():
        motion, identity = shares["motion_share"], shares["identity_share"]
        print(f"  {name}: motion {motion:.3f}, identity {identity:.3f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "settings": vars(args) | {"json": str(args.json)},
                    "samplers": sampler,
                    "rows": rows,
                    "descriptors": descriptors,
                },
                indent=1,
                default=str,
            )
        )
    if args.sheet and outputs:
        contact_sheet(
            args.sheet,
            cases[: args.sheet_cases],
            {k: v[: args.sheet_cases] for k, v in outputs.items()},
        )
    return 0 if all(math.isfinite(r["L1"]) for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
