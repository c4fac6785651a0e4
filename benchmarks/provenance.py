"""C2PA signing and verification cost for 1, 10 and 100 MB videos.

Ours: ``sign_file`` (sign to a temporary file, read back, validate, atomic rename) and
``verify_file`` with trust anchors. Baseline, measured in the same run: one SHA-256 pass over the
same file (the least any content-binding signer must do). Also the share of a tiny-model
generation's time that signing + verification add (the same 24-frame job the tests run).

    .venv/bin/python benchmarks/provenance.py [--sizes 1 10 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from governance.integrations import c2pa_signing as cs  # noqa: E402
from governance.integrations.dev_ca import generate_dev_ca  # noqa: E402
from reenactment.engine.video_io import make_test_clip  # noqa: E402


def video_of_size(path: Path, megabytes: float) -> Path:
    """A real MP4 of about ``megabytes``: noise frames (incompressible) in MPEG-4 part 2."""
    rng = np.random.default_rng(0)
    frame_bytes = 15_000  # what PyAV's default MPEG-4 keeps of a 640x480 noise frame (measured)
    count = max(4, int(megabytes * 1e6 / frame_bytes))
    frames = (rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(count))
    return make_test_clip(path, frames, 25, codec="mpeg4")


def sha256(path: Path) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def tiny_generation_seconds(work: Path) -> float:
    from PIL import Image

    from reenactment.engine.demo_media import demo_driving_frames, demo_portrait
    from reenactment.engine.demo_model import build_tiny_model
    from reenactment.engine.pipeline_reenactment import ReenactmentPipeline

    model = build_tiny_model(work / "model")
    Image.fromarray(demo_portrait()).save(work / "portrait.png")
    make_test_clip(work / "driving.mp4", demo_driving_frames(24), 24, audio_tone_hz=440.0)
    pipe = ReenactmentPipeline.from_model_folder(model)
    started = time.perf_counter()
    pipe(
        work / "portrait.png",
        work / "driving.mp4",
        output_path=work / "out.mp4",
        num_inference_steps=8,
        resolution=64,
        seed=0,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 10, 100])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ca = generate_dev_ca(work / "ca")
        material = cs.load_signer_material(
            cs.SignerConfig(
                cert_chain_path=ca.chain, private_key_path=ca.key, trust_anchors_path=ca.root
            )
        )
        anchors = ca.root.read_bytes()
        manifest = cs.build_manifest_definition(
            title="benchmark.mp4",
            format="video/mp4",
            software_agent="benchmark",
            ingredients=[("portrait", "image/png", "0" * 64)],
            org_assertion={"job_id": 0},
        )
        generation = tiny_generation_seconds(work)
        print(f"tiny-model generation (24 frames, 64 px, 8 steps): {generation:.2f} s")
        print(
            f"{'size MB':>8} {'sign s':>8} {'verify s':>9} {'sha256 s':>9} "
            f"{'sign/sha':>9} {'verify/sha':>10} {'(sign+verify)/generation':>25}"
        )
        for size in args.sizes:
            source = video_of_size(work / f"source-{size}.mp4", size)
            actual = source.stat().st_size / 1e6
            signed = work / f"signed-{size}.mp4"
            sign_s = best_of(
                args.repeats,
                lambda source=source, signed=signed: cs.sign_file(
                    source=source,
                    dest=signed,
                    manifest=manifest,
                    signer_material=material,
                    overwrite=True,
                ),
            )
            result = cs.verify_file(signed, trust_anchors_pem=anchors)
            assert result.status is cs.VerificationStatus.TRUSTED, result
            verify_s = best_of(
                args.repeats,
                lambda signed=signed: cs.verify_file(signed, trust_anchors_pem=anchors),
            )
            hash_s = best_of(args.repeats, lambda source=source: sha256(source))
            share = (sign_s + verify_s) / generation
            print(
                f"{actual:8.1f} {sign_s:8.3f} {verify_s:9.3f} {hash_s:9.3f} "
                f"{sign_s / hash_s:9.1f} {verify_s / hash_s:10.1f} {share:25.1%}"
            )


if __name__ == "__main__":
    main()
