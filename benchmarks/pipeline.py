"""End-to-end speed and peak memory of the reenactment pipeline.

CPU (always): the seeded demonstration model (``build_tiny_model``) at 64x64 on the astronaut
portrait, driven by 16, 64 and 256 synthesized driving frames (the cameraman's head under a small
affine motion; prepared crops, so face detection is not part of the timing), pasted back into the
512x512 portrait and written as H.264. Each length runs in a fresh process, so the peak-memory
column (the process's peak resident set, ``ru_maxrss``) is comparable across rows: it must stay
flat, because driving frames are streamed in, frames are streamed out, and long videos are
denoised in bounded segments. Two fixed-size buffers fill during the first frames and then stay:
the H.264 encoder's look-ahead (about 64 MB at 512x512, full after ~64 frames) and the VAE's
25-frame decode chunk, so a 16-frame run peaks lower; from 64 frames on the column is flat
within the allocator's noise (a few tens of MB). Python/numpy and torch allocations are asserted
flat more precisely by ``tests/engine/test_pipeline.py``.

CUDA (``--device cuda``, when a GPU is present): the full-size networks with random weights at
512x512 with the release's settings (35 DDIM steps, guidance 2.5, 24-frame windows overlapping by
4, float16 VAE decoding in chunks of 25), in float16 (the release's precision) and bfloat16 side by
side: frames/s and peak GPU memory; then the peak GPU memory of a long video (few steps, since
memory does not depend on the step count). Without a GPU this part prints that it was skipped.

Usage::

    .venv/bin/python benchmarks/pipeline.py [--frames 16 64 256] [--steps 4] [--threads 1]
    .venv/bin/python benchmarks/pipeline.py --device cuda [--gpu-frames 48] [--long-frames 600]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def driving_frames(count: int, crop: Any) -> Iterator[Any]:
    """Prepared driving frames from the cameraman's head under a small affine motion."""
    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    from reenactment.engine.preprocessing import DrivingFrame

    camera = np.stack([skdata.camera()] * 3, axis=-1)
    head = Image.fromarray(camera[60:252, 124:316]).resize((224, 224), Image.Resampling.LANCZOS)
    for index in range(count):
        angle = 3.0 * math.sin(index / 3.0)
        shift = (6.0 * math.sin(index / 4.0), 4.0 * math.cos(index / 3.5))
        moved = head.rotate(angle, resample=Image.Resampling.BILINEAR, translate=shift)
        yield DrivingFrame(
            index=index,
            time_s=index / 25.0,
            motion_crop=np.asarray(moved),
            bbox_param=np.array([0.0, 0.0, 1.0], np.float32),
            crop=crop,
            detected=True,
        )


def peak_rss_mb() -> float:
    # Linux reports kilobytes, macOS bytes.
    scale = 1024 if sys.platform.startswith("linux") else 1
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# --------------------------------------------------------------------------------------------
# Workers (one measurement per process)
# --------------------------------------------------------------------------------------------


def cpu_worker(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from skimage import data as skdata

    from reenactment.engine.faces import get_face_backend
    from reenactment.engine.pipeline_reenactment import ReenactmentPipeline
    from reenactment.engine.preprocessing import preprocess_reference

    torch.set_num_threads(job["threads"])
    pipe = ReenactmentPipeline.from_model_folder(job["model"])
    pipe.set_progress_bar_config(disable=True)
    reference = preprocess_reference(
        skdata.astronaut(), get_face_backend("dlib"), generation_size=job["resolution"]
    )
    options = {
        "num_inference_steps": job["steps"],
        "resolution": job["resolution"],
        "paste_back": True,
        "seed": 0,
        "fps": 25,
        "segment_frames": job["segment_frames"],
    }
    with tempfile.TemporaryDirectory() as folder:
        # Warm-up: first-call kernel set-up is not a per-frame cost.
        pipe(reference, list(driving_frames(4, reference.crop)), **options)
        start = time.perf_counter()
        result = pipe(
            reference,
            driving_frames(job["frames"], reference.crop),
            output_path=Path(folder) / "out.mp4",
            **options,
        )
        seconds = time.perf_counter() - start
    return {
        "frames": result.num_frames,
        "seconds": seconds,
        "fps": result.num_frames / seconds,
        "segments": result.num_segments,
        "peak_rss_mb": peak_rss_mb(),
        "timings": result.timings,
    }


def full_size_pipeline(dtype_name: str) -> Any:
    """The release-size networks on the GPU with their random initialisation (nothing is
    downloaded): SD image-variations UNets with the X-NeMo modules, the real motion encoder,
    CLIP ViT-L/14 and the SVD-xt temporal-decoder VAE."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, DDIMScheduler
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from reenactment.engine.configs import scheduler_config
    from reenactment.engine.loading import build_networks
    from reenactment.engine.pipeline_reenactment import ReenactmentPipeline

    device = torch.device("cuda")
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype_name]
    torch.manual_seed(0)
    networks = build_networks(device=device)  # initialised directly on the GPU
    with torch.device(device):
        clip = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=1024,
                intermediate_size=4096,
                num_hidden_layers=24,
                num_attention_heads=16,
                image_size=224,
                patch_size=14,
                projection_dim=768,
                hidden_act="quick_gelu",
            )
        )
        vae = AutoencoderKLTemporalDecoder(
            down_block_types=("DownEncoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            sample_size=768,
        )
    modules = {
        "reference_unet": networks.reference_unet,
        "denoising_unet": networks.denoising_unet,
        "motion_encoder": networks.motion_encoder,
        "image_encoder": clip,
    }
    for module in modules.values():
        torch.nn.Module.to(module, dtype=dtype)
        module.eval()
    vae.to(dtype=torch.float16).eval()  # the release decodes in float16
    pipe = ReenactmentPipeline(vae=vae, scheduler=DDIMScheduler(**scheduler_config()), **modules)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def cuda_worker(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from skimage import data as skdata

    from reenactment.engine.faces import get_face_backend
    from reenactment.engine.preprocessing import preprocess_reference

    torch.backends.cuda.matmul.allow_tf32 = True
    pipe = full_size_pipeline(job["dtype"])
    reference = preprocess_reference(skdata.astronaut(), get_face_backend("dlib"))
    options = {"num_inference_steps": job["steps"], "seed": 0, "fps": 25}
    with tempfile.TemporaryDirectory() as folder:
        pipe(reference, list(driving_frames(4, reference.crop)), num_inference_steps=1, fps=25)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = pipe(
            reference,
            driving_frames(job["frames"], reference.crop),
            output_path=Path(folder) / "out.mp4",
            **options,
        )
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return {
        "frames": result.num_frames,
        "steps": job["steps"],
        "seconds": seconds,
        "fps": result.num_frames / seconds,
        "segments": result.num_segments,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter (clean peak-memory numbers)."""
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"worker failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def cpu_benchmark(args: argparse.Namespace) -> None:
    from reenactment.engine.demo_model import build_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        model = build_tiny_model(Path(folder) / "tiny", seed=0)
        print(
            f"CPU, demo model (random weights), {args.threads} thread(s), "
            f"{args.resolution}x{args.resolution} generation, {args.steps} steps, guidance 2.5, "
            f"24/4 windows, segments of {args.segment_frames}, paste-back into 512x512, H.264"
        )
        print(f"{'frames':>8} {'seconds':>9} {'frames/s':>9} {'segments':>9} {'peak RSS MB':>12}")
        for frames in args.frames:
            row = run_worker(
                {
                    "kind": "cpu",
                    "model": str(model),
                    "frames": frames,
                    "steps": args.steps,
                    "resolution": args.resolution,
                    "threads": args.threads,
                    "segment_frames": args.segment_frames,
                }
            )
            print(
                f"{row['frames']:>8} {row['seconds']:>9.2f} {row['fps']:>9.2f} "
                f"{row['segments']:>9} {row['peak_rss_mb']:>12.1f}"
            )


def cuda_benchmark(args: argparse.Namespace) -> None:
    print(
        "CUDA, full-size networks (random weights), 512x512, release settings: 35 DDIM steps, "
        "guidance 2.5, 24/4 windows, float16 VAE decode in chunks of 25"
    )
    print(
        f"{'dtype':>9} {'frames':>7} {'steps':>6} {'seconds':>9} {'frames/s':>9} "
        f"{'segments':>9} {'peak GPU GiB':>13}"
    )
    jobs = [(dtype, args.gpu_frames, 35) for dtype in ("float16", "bfloat16")]
    jobs.append(("float16", args.long_frames, args.long_steps))
    for dtype, frames, steps in jobs:
        row = run_worker({"kind": "cuda", "dtype": dtype, "frames": frames, "steps": steps})
        print(
            f"{dtype:>9} {row['frames']:>7} {row['steps']:>6} {row['seconds']:>9.1f} "
            f"{row['fps']:>9.3f} {row['segments']:>9} {row['peak_gpu_gib']:>13.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--steps", type=int, default=4, help="CPU denoising steps (4)")
    parser.add_argument("--resolution", type=int, default=64, help="CPU generation size (64)")
    parser.add_argument("--segment-frames", type=int, default=500, help="segment length (500)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--gpu-frames", type=int, default=48, help="frames of the GPU speed runs")
    parser.add_argument("--long-frames", type=int, default=600, help="frames of the long GPU run")
    parser.add_argument("--long-steps", type=int, default=2, help="steps of the long GPU run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        result = cpu_worker(job) if job["kind"] == "cpu" else cuda_worker(job)
        print(json.dumps(result))
        return
    cpu_benchmark(args)
    print()
    if args.device != "cuda":
        print("CUDA: skipped (run with --device cuda on a machine with a GPU)")
        return
    import torch

    if not torch.cuda.is_available():
        print("CUDA: skipped (--device cuda given, but no CUDA device is available here)")
        return
    cuda_benchmark(args)


if __name__ == "__main__":
    main()
