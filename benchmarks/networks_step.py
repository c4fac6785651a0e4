"""Time one classifier-free-guided X-NeMo denoising step.

CPU (always): the tiny parity-fixture configuration (2 x 4 frames of 16x16 latents), once with
reference attention (banks from a reference-UNet write pass) and once without (plain
self-attention everywhere), reporting ms/step for both and their ratio.

CUDA (when available): the full-size networks on 512x512 video (64x64 latents, 24 frames, CFG
batch 2) in bfloat16 and float16 with random weights, reporting ms/step and peak memory.

Usage::

    .venv/bin/python benchmarks/networks_step.py [--repeats 10] [--warmup 2] [--threads 2]
        [--skip-cuda | --skip-cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from reenactment.engine.loading import build_networks  # noqa: E402
from reenactment.engine.networks import (  # noqa: E402
    ReferenceAttentionControl,
    UNet2DReferenceModel,
    UNet3DDenoisingModel,
    guided_noise_prediction,
)

GUIDANCE_SCALE = 2.5


def fixtures_dir() -> Path:
    """Same lookup as the tests: $XNEMO_FIXTURES_DIR, <repo>/shared/..., <repo>/../shared/..."""
    override = os.environ.get("XNEMO_FIXTURES_DIR")
    candidates = (
        [Path(override)]
        if override
        else [REPO_ROOT / "shared" / "fixtures", REPO_ROOT.parent / "shared" / "fixtures"]
    )
    for candidate in candidates:
        if (candidate / "xnemo_tiny" / "unet_config.json").is_file():
            return candidate
    sys.exit(f"X-NeMo fixtures not found in {', '.join(map(str, candidates))}")


def time_it(step: Callable[[], Any], repeats: int, warmup: int, cuda: bool) -> float:
    """Mean wall time of ``step`` in milliseconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    samples = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.fmean(samples)


def step_inputs(
    frames: int,
    size: int,
    clip_dim: int,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    return {
        "ref": randn(1, 4, size, size),
        "latents": randn(1, 4, frames, size, size),
        "clip": randn(1, 1, clip_dim),
        "tokens": randn(1, frames, 32, 16),
        "neg": randn(1, 32, 16),
    }


def benchmark_step(
    reference: UNet2DReferenceModel,
    denoising: UNet3DDenoisingModel,
    inputs: dict[str, torch.Tensor],
    repeats: int,
    warmup: int,
    cuda: bool,
) -> tuple[float, float]:
    """(ms with reference attention, ms without) for one CFG step."""

    def step() -> None:
        guided_noise_prediction(
            denoising,
            inputs["latents"],
            501,
            inputs["clip"],
            inputs["tokens"],
            inputs["neg"],
            GUIDANCE_SCALE,
        )

    with torch.inference_mode():
        with ReferenceAttentionControl(
            reference, denoising, do_classifier_free_guidance=True
        ) as control:
            control.write(inputs["ref"], inputs["clip"])
            with_reference = time_it(step, repeats, warmup, cuda)
        without_reference = time_it(step, repeats, warmup, cuda)
    return with_reference, without_reference


def cpu_tiny(repeats: int, warmup: int) -> None:
    tiny = fixtures_dir() / "xnemo_tiny"
    config = json.loads((tiny / "unet_config.json").read_text())
    extra = json.loads((tiny / "unet_additional_kwargs.json").read_text())
    torch.manual_seed(0)
    networks = build_networks(config, extra, device="cpu")
    reference = networks.reference_unet.eval()
    denoising = networks.denoising_unet.eval()
    inputs = step_inputs(4, 16, config["cross_attention_dim"], torch.device("cpu"), torch.float32)
    with_ref, without_ref = benchmark_step(reference, denoising, inputs, repeats, warmup, False)
    print(
        f"cpu tiny fp32 (threads={torch.get_num_threads()}, 2x4 frames 16x16, "
        f"mean of {repeats} after {warmup} warm-up):"
    )
    print(f"  CFG step with reference attention:    {with_ref:8.2f} ms/step")
    print(f"  CFG step without reference attention: {without_ref:8.2f} ms/step")
    print(f"  ratio with/without:                   {with_ref / without_ref:8.3f}")


def _randomise(module: torch.nn.Module) -> None:
    """Plausible random weights for timing: N(0, 0.02) matrices, unit norms, zero biases."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.02)
            elif name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.zero_()


def cuda_full_size(repeats: int, warmup: int) -> None:
    device = torch.device("cuda")
    for dtype in (torch.bfloat16, torch.float16):
        networks = build_networks(device="meta")
        reference = networks.reference_unet.to_empty(device=device)
        denoising = networks.denoising_unet.to_empty(device=device)
        for module in (reference, denoising):
            _randomise(module)
            torch.nn.Module.to(module, dtype=dtype)
            module.eval()
        denoising.reset_temporal_position_tables()
        inputs = step_inputs(24, 64, 768, device, dtype)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        with_ref, without_ref = benchmark_step(reference, denoising, inputs, repeats, warmup, True)
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"cuda full size {str(dtype).removeprefix('torch.')} (512x512, 24 frames, CFG):")
        print(f"  CFG step with reference attention:    {with_ref:8.1f} ms/step")
        print(f"  CFG step without reference attention: {without_ref:8.1f} ms/step")
        print(f"  ratio with/without:                   {with_ref / without_ref:8.3f}")
        print(f"  peak memory allocated:                {peak:8.2f} GiB")
        del networks, reference, denoising, inputs
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--skip-cuda", action="store_true", help="only run the CPU benchmark")
    parser.add_argument(
        "--skip-cpu",
        action="store_true",
        help="only run the CUDA benchmark (it needs no fixtures: a device without shared/ works)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_cpu:
        cpu_tiny(args.repeats, args.warmup)
    if torch.cuda.is_available() and not args.skip_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        cuda_full_size(args.repeats, args.warmup)
    elif not args.skip_cuda:
        print("cuda: not available, full-size benchmark skipped")


if __name__ == "__main__":
    main()
