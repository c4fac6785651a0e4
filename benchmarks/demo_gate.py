"""The embedded demo's job through the identity-leakage gate, for several models and seeds.

`make run`'s demo job animates a SynthFace character (portrait) with another character's clip
(performer). Whether its output reaches the requester depends on the gate: dlib must find the
portrait's face in at least 75 % of the sampled frames, and the faces must resemble the portrait
more than the performer. With a small model the verdict varies with the job's random seed, so
one demo run says little; this script runs the same job - the demo's inputs, the model's
recommended settings, the worker's pipeline call, the gate's sampling, measurement and rules with
the thresholds the platform seeds for dlib - for each model and seed, and prints one row each and
the share of seeds per verdict.

Usage::

    .venv/bin/python benchmarks/demo_gate.py --model v4=reenactment/engine/preview_model \\
        --model v5=var/training/xnemo_s2v5 --seeds 1 2 3 4 [--threads 2] [--json out.json] \\
        [--keep var/demo-gate]

Needs no database or broker (Django is set up only for the settings and the verdict rules).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")


def _dlib_policy() -> Any:
    """The dlib thresholds exactly as the platform's migration seeds them (unsaved)."""
    from governance.models import FaceThresholdPolicy

    seeded = importlib.import_module("governance.migrations.0007_identity_checks")
    (values,) = [p for p in seeded.POLICIES if p["backend"] == "dlib"]
    fields = {f.name for f in FaceThresholdPolicy._meta.get_fields() if not f.is_relation}
    return FaceThresholdPolicy(
        **{k: v for k, v in {**seeded.LEAKAGE_DEFAULTS, **values}.items() if k in fields}
    )


def _demo_inputs(folder: Path) -> tuple[Path, Path]:
    """The demo's portrait and driving clip, written as `demo_jobs_seed` writes them."""
    from PIL import Image

    from reenactment.engine import demo_media
    from reenactment.engine.video_io import make_test_clip

    portrait = folder / "portrait.png"
    Image.fromarray(demo_media.synthface_demo_portrait()).save(portrait)
    driving = folder / "driving.mp4"
    make_test_clip(driving, demo_media.synthface_demo_driving_frames(), 24, audio_tone_hz=440.0)
    return portrait, driving


def _settings_arg(text: str) -> dict[str, Any]:
    """``--settings``: a JSON object of settings a model may recommend, checked as the registry
    checks a folder's, so a typo fails here and not after a model has generated."""
    from reenactment.engine.configs import GenerationDefaultsError, check_generation_defaults

    try:
        return check_generation_defaults(json.loads(text))
    except (json.JSONDecodeError, GenerationDefaultsError) as exc:
        message = str(exc).replace("_generation_defaults", "--settings")
        raise argparse.ArgumentTypeError(message) from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", action="append", required=True, metavar="NAME=FOLDER", help="repeatable"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--settings",
        type=_settings_arg,
        default={},
        metavar="JSON",
        help="settings over the recommended ones, as a job's parameters: '{\"strength\": 0.5}'",
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="also save each output as DIR/NAME-SEED.mp4"
    )
    args = parser.parse_args(argv)

    import django

    django.setup()
    import torch
    from django.conf import settings

    from governance.services.identity import leakage_verdict
    from reenactment.engine import faces, video_io
    from reenactment.engine.identity import leakage_measure, sample_video_frames
    from reenactment.engine.loading import read_generation_defaults
    from reenactment.engine.pipeline_reenactment import ReenactmentPipeline

    torch.set_num_threads(args.threads)
    models = []
    for spec in args.model:
        name, sep, folder = spec.partition("=")
        if not sep or not Path(folder).is_dir():
            parser.error(f"--model {spec}: expected NAME=FOLDER (an existing folder)")
        models.append((name, Path(folder)))
    policy = _dlib_policy()
    backend = faces.get_face_backend("dlib")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="demo-gate-") as tmp:
        work = Path(tmp)
        portrait_path, driving_path = _demo_inputs(work)
        portrait, _ = video_io.load_image(portrait_path, max_side=settings.RENDER_MAX_PORTRAIT_SIDE)
        performer = sample_video_frames(
            driving_path,
            count=settings.LEAKAGE_PERFORMER_SAMPLES,
            total=video_io.probe_video(driving_path).frame_count,
        )
        print(
            f"{'model':<12} {'seed':>4} {'verdict':<7} {'faceless':>8} {'portrait':>8} "
            f"{'p10':>6} {'performer':>9} {'baseline':>8} {'gen s':>6}  reasons"
        )
        for name, folder in models:
            model_dir = (
                (folder / "model") if (folder / "model" / "model_index.json").is_file() else folder
            )
            pipeline = ReenactmentPipeline.from_model_folder(model_dir, device="cpu")
            recommended = {**read_generation_defaults(model_dir), **args.settings}
            for seed in args.seeds:
                out = work / f"{name}-{seed}.mp4"
                started = time.perf_counter()
                pipeline(
                    portrait_path, driving_path, output_path=out, **{**recommended, "seed": seed}
                )
                seconds = time.perf_counter() - started
                info = video_io.probe_video(out)
                measurement = leakage_measure(
                    video_io.iter_frames(out),
                    portrait=portrait,
                    performer=performer,
                    backend=backend,
                    total_frames=info.frame_count,
                    fps=float(info.fps),
                    max_samples=settings.LEAKAGE_MAX_SAMPLES,
                    max_side=settings.LEAKAGE_MAX_SIDE,
                )
                stats = measurement.to_dict()
                verdict, reasons = leakage_verdict(
                    portrait=stats["portrait"],
                    performer=stats["performer"],
                    baseline=measurement.baseline_similarity,
                    total_frames=info.frame_count,
                    sampled_frames=measurement.sampled_frames,
                    faceless_frames=measurement.faceless_frames,
                    policy=policy,
                )
                row = {
                    "model": name,
                    "seed": seed,
                    "verdict": verdict,
                    "faceless": measurement.faceless_frames,
                    "sampled": measurement.sampled_frames,
                    "portrait_mean": (stats["portrait"] or {}).get("mean"),
                    "portrait_p10": (stats["portrait"] or {}).get("p10"),
                    "performer_mean": (stats["performer"] or {}).get("mean"),
                    "baseline": stats["baseline_similarity"],
                    "generation_s": round(seconds, 1),
                    "reasons": [r["code"] for r in reasons],
                }
                rows.append(row)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(out, args.keep / out.name)

                def fmt(value: Any) -> str:
                    return "-" if value is None else f"{value:.3f}"

                print(
                    f"{name:<12} {seed:>4} {verdict:<7} "
                    f"{row['faceless']:>3}/{row['sampled']:<4} {fmt(row['portrait_mean']):>8} "
                    f"{fmt(row['portrait_p10']):>6} {fmt(row['performer_mean']):>9} "
                    f"{fmt(row['baseline']):>8} {seconds:>6.1f}  {','.join(row['reasons'])}",
                    flush=True,
                )
    print()
    for name, _ in models:
        mine = [r for r in rows if r["model"] == name]
        counts = Counter(r["verdict"] for r in mine)
        faceless = sum(r["faceless"] for r in mine) / sum(r["sampled"] for r in mine)
        shares = ", ".join(f"{v} {counts[v]}/{len(mine)}" for v in ("pass", "review", "fail"))
        print(f"{name}: {shares}; faceless frames {faceless:.0%} of those sampled")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
