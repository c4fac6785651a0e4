"""Cost and stability of the identity-leakage gate (dlib face backend, CPU).

Run: ``.venv/bin/python benchmarks/leakage.py [--frames 64] [--threads 2] [--no-generation]``

1. **Seconds per checked frame**: ``leakage_measure`` on frames with a face (the astronaut under
   small affine motion) and without (a textured faceless picture, which costs more: dlib's CNN
   then scans the whole frame), at 256 and 512 px, and the one-off cost of embedding the
   portrait and the performer references.
2. **The gate against generation**: a tiny-model X-NeMo generation (``build_tiny_model``, 64 px,
   2 denoising steps, pasted back into the 512 px portrait) of the same number of frames,
   timed, then the gate on its output with the default sample count; the gate's cost as a
   share of generation time. Skipped (absolute costs only) when the pipeline is not importable.
3. **Samples for a stable verdict**: per-frame scores of every frame of three synthetic outputs
   (faithful, borderline: the performer's face blended in at 20-40 %, leaky: the performer's
   frames), then the verdict and statistics of evenly spaced and stratified-random subsets of
   k frames against the all-frames values, with governance's rules and default thresholds.

Photos: scikit-image's astronaut (portrait) and cameraman (performer: the crop around rows
60:252, cols 124:316 scaled to 256 px, where dlib finds his face).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from skimage import data as skdata

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from reenactment.engine import faces  # noqa: E402 - after the path set-up
from reenactment.engine.faces import FaceBackend, FaceEmbedding  # noqa: E402
from reenactment.engine.identity import (  # noqa: E402
    DEFAULT_LEAKAGE_SAMPLES,
    LeakageMeasurement,
    leakage_measure,
    sample_frame_indices,
    series_stats,
)

SAMPLE_COUNTS = (2, 4, 6, 8, 12, 16, 24, 32)
SEEDS = 200


# ---------------------------------------------------------------------------- frames


def resize(image: np.ndarray, side: int) -> np.ndarray:
    interpolation = cv2.INTER_AREA if image.shape[0] > side else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(image, (side, side), interpolation=interpolation))


def moved(image: np.ndarray, k: int, n: int, amplitude: float = 1.0) -> np.ndarray:
    """Frame ``k`` of ``n`` of a periodic head motion: +-3 deg, +-6/4 px, +-3 % at amplitude 1."""
    height, width = image.shape[:2]
    phase = 2 * math.pi * k / n
    matrix = cv2.getRotationMatrix2D(
        (width / 2, height / 2),
        3 * amplitude * math.sin(phase),
        1 + 0.03 * amplitude * math.sin(2 * phase),
    )
    matrix[0, 2] += 6 * amplitude * math.cos(phase)
    matrix[1, 2] += 4 * amplitude * math.sin(3 * phase)
    return np.ascontiguousarray(
        cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
    )


def blended(portrait: np.ndarray, performer_aligned: np.ndarray, alpha: float) -> np.ndarray:
    mix = (1 - alpha) * portrait.astype(np.float32) + alpha * performer_aligned.astype(np.float32)
    return np.clip(mix, 0, 255).astype(np.uint8)


def align_onto(source: np.ndarray, target: np.ndarray, backend: FaceBackend) -> np.ndarray:
    """``source`` warped so its face's five landmarks land on ``target``'s."""
    src = faces.find_single_face(source, backend).landmarks_array()
    dst = faces.find_single_face(target, backend).landmarks_array()
    assert src is not None and dst is not None
    matrix, _ = cv2.estimateAffinePartial2D(src, dst)
    height, width = target.shape[:2]
    return cv2.warpAffine(source, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# ---------------------------------------------------------------------------- 1. cost per frame


def cost_per_frame(
    backend: FaceBackend,
    astronaut: np.ndarray,
    performer_face: np.ndarray,
    refs: list[FaceEmbedding],
    portrait_embedding: FaceEmbedding,
) -> dict[str, float]:
    print("1. Seconds per checked frame (dlib, CPU)")
    results: dict[str, float] = {}
    faceless_src = skdata.coffee()[:, 100:500]
    for side in (256, 512):
        portrait = resize(astronaut, side)
        for label, source in (("face", portrait), ("no face", resize(faceless_src, side))):
            frames = [moved(source, k, 6) for k in range(6)]
            start = time.perf_counter()
            leakage_measure(
                frames,
                portrait=portrait_embedding,
                performer=refs,
                backend=backend,
                max_samples=None,
            )
            elapsed = time.perf_counter() - start
            results[f"{side}px {label}"] = elapsed / len(frames)
            print(f"   {side:4d} px, {label:8s}: {elapsed / len(frames):6.3f} s/frame")
    one_off, _ = timed(
        lambda: (
            faces.embed_face(astronaut, backend),
            [faces.embed_face(moved(performer_face, k, 8), backend) for k in (0, 3)],
        )
    )
    results["references"] = one_off
    print(f"   references (512 px portrait + 2 performer frames): {one_off:.3f} s once per output")
    return results


# ---------------------------------------------------------------------------- 2. vs generation


def generation_share(
    backend: FaceBackend,
    astronaut: np.ndarray,
    cameraman: np.ndarray,
    frames: int,
    per_frame: dict[str, float],
) -> None:
    print(f"\n2. The gate against tiny-model generation ({frames} frames)")
    gate_estimate = DEFAULT_LEAKAGE_SAMPLES * per_frame["512px face"] + per_frame["references"]
    print(
        f"   gate, {DEFAULT_LEAKAGE_SAMPLES} sampled 512 px frames with a face: "
        f"~{gate_estimate:.1f} s per output (any length)"
    )
    try:
        from reenactment.engine.demo_model import build_tiny_model
        from reenactment.engine.pipeline_reenactment import ReenactmentPipeline
        from reenactment.engine.preprocessing import preprocess_reference, track_driving_faces
    except ImportError as error:
        print(f"   generation time unavailable: the pipeline is not importable ({error})")
        return

    head = resize(cameraman[60:252, 124:316], 256)
    driving = [moved(head, k, frames) for k in range(frames)]
    with tempfile.TemporaryDirectory() as folder:
        model_dir = build_tiny_model(Path(folder) / "tiny", seed=0)
        pipe = ReenactmentPipeline.from_model_folder(model_dir)
        pipe.set_progress_bar_config(disable=True)  # type: ignore[attr-defined]  # diffusers
        reference = preprocess_reference(astronaut, backend, generation_size=64)
        tracking, tracked = timed(
            lambda: list(
                track_driving_faces(
                    iter(driving), backend=backend, reference=reference, fps=25.0, detect_every=4
                )
            )
        )

        def generate() -> Any:
            return pipe(
                reference,
                tracked,
                num_inference_steps=2,
                resolution=64,
                seed=0,
                fps=25,
                paste_back=True,
                motion_batch_size=4,
                return_frames=True,
            )

        generate()  # warm-up: kernels and caches
        generation, result = timed(generate)
    refs = [faces.embed_face(driving[k], backend) for k in (0, frames // 3)]
    gate, measurement = timed(
        lambda: leakage_measure(
            result.frames,
            portrait=astronaut,
            performer=refs,
            backend=backend,
            total_frames=result.num_frames,
            fps=25.0,
        )
    )
    print(
        f"   tiny generation: {generation:.2f} s ({generation / frames:.3f} s/frame, 64 px, "
        f"2 steps, pasted back to 512 px); driving-face tracking before it: {tracking:.2f} s"
    )
    print(
        f"   gate on that output ({measurement.sampled_frames} sampled frames, "
        f"{measurement.faceless_frames} without a face: the tiny model's random weights paint "
        f"noise): {gate:.2f} s = {gate / generation:.0%} of generation, "
        f"{gate / (generation + tracking):.0%} of tracking + generation"
    )
    bounded, _ = timed(
        lambda: leakage_measure(
            result.frames,
            portrait=astronaut,
            performer=refs,
            backend=backend,
            total_frames=result.num_frames,
            max_side=256,
        )
    )
    print(
        f"   the same with max_side=256 (face search on downscaled frames): {bounded:.2f} s = "
        f"{bounded / generation:.0%} of generation"
    )
    print(
        f"   gate on a faithful 512 px output of the same length (estimate): "
        f"{gate_estimate / generation:.0%} of tiny generation"
    )


# ---------------------------------------------------------------------------- 3. stability


def _verdict_fn() -> Callable[[LeakageMeasurement], tuple[str, list[str]]]:
    """governance's rules with its default thresholds for dlib (no database needed)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    import django

    django.setup()
    from governance.models import FaceThresholdPolicy
    from governance.services import identity as rules

    policy = FaceThresholdPolicy(
        backend="dlib",
        match_threshold=faces.DLIB_THRESHOLDS.match,
        review_threshold=faces.DLIB_THRESHOLDS.review,
        leakage_margin=rules.DEFAULT_LEAKAGE_MARGIN,
        leakage_review_margin=rules.DEFAULT_LEAKAGE_REVIEW_MARGIN,
        max_faceless_share=rules.DEFAULT_MAX_FACELESS_SHARE,
        min_sampled_frames=1,  # judge the statistics themselves, not the sample-size rule
    )

    def verdict(m: LeakageMeasurement) -> tuple[str, list[str]]:
        data = m.to_dict()
        result, reasons = rules.leakage_verdict(
            portrait=data["portrait"],
            performer=data["performer"],
            baseline=data["baseline_similarity"],
            total_frames=data["total_frames"],
            sampled_frames=data["sampled_frames"],
            faceless_frames=data["faceless_frames"],
            policy=policy,
        )
        return str(result), [reason["code"] for reason in reasons]

    return verdict


def subset(m: LeakageMeasurement, indices: Sequence[int]) -> LeakageMeasurement:
    samples = tuple(m.samples[i] for i in indices)
    return LeakageMeasurement(
        samples=samples,
        total_frames=m.total_frames,
        baseline_similarity=m.baseline_similarity,
        portrait=series_stats(s.portrait_similarity for s in samples),
        performer=series_stats(s.performer_similarity for s in samples),
        backend=m.backend,
        fingerprint=m.fingerprint,
        sampling="subset",
    )


def stability(
    backend: FaceBackend,
    astronaut: np.ndarray,
    performer_face: np.ndarray,
    refs: list[FaceEmbedding],
    frames: int,
) -> None:
    print(f"\n3. Sampled frames needed for a stable verdict ({frames}-frame outputs, 256 px)")
    verdict = _verdict_fn()
    portrait = resize(astronaut, 256)
    portrait_embedding = faces.embed_face(portrait, backend)
    aligned = align_onto(performer_face, portrait, backend)

    def clip(make: Callable[[int], np.ndarray]) -> Iterator[np.ndarray]:
        return (make(k) for k in range(frames))

    outputs = {
        "faithful": clip(lambda k: moved(portrait, k, frames, amplitude=2.0)),
        "borderline": clip(
            lambda k: moved(
                blended(portrait, aligned, 0.3 + 0.1 * math.sin(2 * math.pi * 3 * k / frames)),
                k,
                frames,
            )
        ),
        "leaky": clip(lambda k: moved(performer_face, k, frames, amplitude=2.0)),
    }
    print(
        "   k = sampled frames; agreement = share of 200 stratified-random samples whose verdict "
        "equals the all-frames verdict; |dmean| = largest deviation of the portrait / performer "
        "mean from the all-frames mean (evenly spaced | worst random)"
    )
    for name, stream in outputs.items():
        start = time.perf_counter()
        full = leakage_measure(
            stream,
            portrait=portrait_embedding,
            performer=refs,
            backend=backend,
            total_frames=frames,
            max_samples=None,
        )
        elapsed = time.perf_counter() - start
        truth, codes = verdict(full)
        p, q = full.portrait, full.performer
        assert p is not None and q is not None
        print(
            f"   {name}: all {frames} frames -> {truth} {codes or ''} (portrait mean {p.mean:.3f} "
            f"p10 {p.p10:.3f}; performer mean {q.mean:.3f} p90 {q.p90:.3f}, baseline "
            f"{full.baseline_similarity:.3f}, rise {q.mean - full.baseline_similarity:+.3f}; "
            f"{elapsed / frames:.2f} s/frame)"
        )
        for k in SAMPLE_COUNTS:
            even = subset(full, sample_frame_indices(frames, count=k))
            agree = 0
            worst_p = worst_q = 0.0
            for seed in range(SEEDS):
                drawn = subset(full, sample_frame_indices(frames, count=k, seed=seed))
                agree += verdict(drawn)[0] == truth
                assert drawn.portrait is not None and drawn.performer is not None
                worst_p = max(worst_p, abs(drawn.portrait.mean - p.mean))
                worst_q = max(worst_q, abs(drawn.performer.mean - q.mean))
            assert even.portrait is not None and even.performer is not None
            print(
                f"      k={k:3d}: evenly spaced -> {verdict(even)[0]:6s}  random agreement "
                f"{agree / SEEDS:6.1%}  |dmean| portrait {abs(even.portrait.mean - p.mean):.3f} "
                f"| {worst_p:.3f}, performer {abs(even.performer.mean - q.mean):.3f} | "
                f"{worst_q:.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64, help="frames per synthetic output")
    parser.add_argument("--generation-frames", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for generation")
    parser.add_argument("--no-generation", action="store_true")
    parser.add_argument("--no-stability", action="store_true")
    args = parser.parse_args()

    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    load, backend = timed(lambda: faces.get_face_backend("dlib"))
    print(f"dlib backend loaded in {load:.2f} s; fingerprint {backend.info.fingerprint[:16]}...")
    print(f"CPU threads available: {os.cpu_count()}; torch threads: {args.threads}\n")

    astronaut = skdata.astronaut()
    cameraman = np.stack([skdata.camera()] * 3, axis=-1)
    performer_face = resize(cameraman[60:252, 124:316], 256)
    refs = [faces.embed_face(moved(performer_face, k, 8), backend) for k in (0, 3)]
    portrait_embedding = faces.embed_face(resize(astronaut, 256), backend)

    per_frame = cost_per_frame(backend, astronaut, performer_face, refs, portrait_embedding)
    if not args.no_generation:
        generation_share(backend, astronaut, cameraman, args.generation_frames, per_frame)
    if not args.no_stability:
        stability(backend, astronaut, performer_face, refs, args.frames)


if __name__ == "__main__":
    main()
