"""What a GPU worker process holds: its device and the model versions it has loaded.

Models load lazily, on the first job that needs them (never in ``worker_process_init``, whose
start-up budget is a few seconds), and stay cached for the life of the process. The device is
pinned per process: ``start-gpu-worker.sh`` gives each process one GPU through
``CUDA_VISIBLE_DEVICES``, so ``cuda`` always means that GPU.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch
from django.conf import settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceChoice:
    device: str
    dtype: torch.dtype

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def device_choice() -> DeviceChoice:
    """``RENDER_DEVICE`` (auto: CUDA when present) and ``RENDER_DTYPE`` (auto: bf16 on GPU)."""
    wanted = settings.RENDER_DEVICE
    device = ("cuda" if torch.cuda.is_available() else "cpu") if wanted == "auto" else wanted
    dtype_name = settings.RENDER_DTYPE
    if dtype_name == "auto":
        dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
    return DeviceChoice(device=device, dtype=_DTYPES[dtype_name])


def device_description() -> dict[str, Any]:
    """For the worker heartbeat: GPU name and memory, or the CPU."""
    choice = device_choice()
    if choice.device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return {
            "kind": "gpu",
            "name": props.name,
            "memory_total_mb": props.total_memory // (1 << 20),
            "memory_allocated_mb": torch.cuda.memory_allocated() // (1 << 20),
            "dtype": choice.dtype_name,
        }
    # os.cpu_count(), not torch.get_num_threads(): this runs in the worker's main process,
    # and starting OpenMP's thread pool there makes the forked pool processes hang in torch.
    return {
        "kind": "cpu",
        "name": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "dtype": choice.dtype_name,
    }


_lock = threading.Lock()
_pipelines: dict[int, Any] = {}
_loaded_at: dict[int, float] = {}


def pipeline_for(model_version: Any) -> Any:
    """The loaded pipeline of ``model_version`` in this process (loaded once, hash-checked)."""
    with _lock:
        pipeline = _pipelines.get(model_version.pk)
        if pipeline is None:
            from governance.services.registry import (
                model_version_folder_path,
                model_version_verify_files,
            )
            from reenactment.engine.pipeline_reenactment import ReenactmentPipeline

            folder = model_version_folder_path(model_version)
            # Hash-pinned: the files must be the ones registered, checked once per process.
            model_version_verify_files(model_version=model_version)
            choice = device_choice()
            started = time.monotonic()
            pipeline = ReenactmentPipeline.from_model_folder(
                folder, device=choice.device, dtype=choice.dtype
            )
            _pipelines[model_version.pk] = pipeline
            _loaded_at[model_version.pk] = time.time()
            logger.info(
                "loaded model version %s from %s on %s in %.1fs",
                model_version.pk,
                folder,
                choice.device,
                time.monotonic() - started,
            )
        return pipeline


def generation_defaults(model_version: Any) -> dict[str, Any]:
    """The settings the model's folder recommends (``_generation_defaults`` of model_index.json)."""
    from governance.services.registry import model_version_folder_path
    from reenactment.engine.loading import read_generation_defaults

    return read_generation_defaults(model_version_folder_path(model_version))


def generation_refiner_size(model_version: Any) -> int | None:
    """The generation size the model's detail refiner needs (None: the model has none)."""
    from governance.services.registry import model_version_folder_path
    from reenactment.engine.loading import read_detail_refiner_size

    return read_detail_refiner_size(model_version_folder_path(model_version))


def generation_tile(model_version: Any) -> int | None:
    """The pixel multiple the model's generation size must be (None: unknown, see
    ``read_vae_scale_factor``)."""
    from governance.services.registry import model_version_folder_path
    from reenactment.engine.loading import read_vae_scale_factor

    return read_vae_scale_factor(model_version_folder_path(model_version))


def loaded_model_versions() -> list[int]:
    with _lock:
        return sorted(_pipelines)


def unload_all() -> None:
    with _lock:
        _pipelines.clear()
        _loaded_at.clear()


def hostname() -> str:
    return socket.gethostname()
