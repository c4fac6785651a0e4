"""Writing trained models: the official four-file layout and our model-folder layout.

* :func:`export_official_checkpoints` - ``xnemo_reference_unet``, ``xnemo_denoising_unet``
  (base + motion modules), ``xnemo_temporal_module`` (the ``.temporal_modules.`` sub-tree, split by
  :func:`~reenactment.engine.loading.split_denoising_state_dict`) and ``xnemo_motion_encoder``, as
  ``.safetensors`` and/or ``.pth`` (plain tensor dicts, loadable with ``weights_only=True``).
  They load strictly through :mod:`reenactment.engine.loading` when the motion encoder is the
  official one; a :class:`CompactMotionEncoder` file keeps its own (smaller) layout.
* :func:`save_model_folder` - ``reference_unet/``, ``denoising_unet/``, ``motion_encoder/``,
  ``image_encoder/``, ``vae/``, ``scheduler/`` and ``model_index.json`` (diffusers' layout, each
  entry naming the library and class to instantiate), plus ``training.json``.

Files are written to a temporary sibling and renamed into place, so a crash never leaves a
half-written model that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import diffusers
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..demo_model import GENERATION_DEFAULTS_KEY
from ..loading import (
    DENOISING_UNET_FILE,
    DETAIL_REFINER,
    MOTION_ENCODER_FILE,
    REFERENCE_UNET_FILE,
    TEMPORAL_MODULE_FILE,
    incomplete_model_reason,
    split_denoising_state_dict,
)
from .components import Components
from .latent_expansion import widen_latent_state

PIPELINE_CLASS = "ReenactmentPipeline"
MODEL_SUBFOLDERS = ("reference_unet", "denoising_unet", "motion_encoder", "vae", "image_encoder")
#: Networks a model may have besides :data:`MODEL_SUBFOLDERS` (written and loaded when present).
OPTIONAL_SUBFOLDERS = (DETAIL_REFINER,)


def present_networks(components: Components) -> tuple[str, ...]:
    """:data:`MODEL_SUBFOLDERS` plus the optional networks ``components`` has."""
    return MODEL_SUBFOLDERS + tuple(
        name for name in OPTIONAL_SUBFOLDERS if getattr(components, name) is not None
    )


def _plain(state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, Any]:
    out = {}
    for key, value in state_dict.items():
        tensor = value.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        out[key] = tensor.contiguous().clone()
    return out


def _denoiser_state(module: nn.Module) -> dict[str, torch.Tensor]:
    unet = getattr(module, "unet", module)  # the spatial baseline wraps the UNet
    return unet.state_dict()


def export_official_checkpoints(
    folder: str | os.PathLike[str],
    components: Components,
    *,
    formats: Iterable[str] = ("safetensors", "pth"),
    dtype: torch.dtype | None = None,
    networks: Collection[str] = MODEL_SUBFOLDERS,
) -> list[Path]:
    """Write the release files of the X-NeMo networks among ``networks`` (all four files by
    default; none, and no folder, when it names none of them); returns their paths."""
    parts: dict[str, Mapping[str, torch.Tensor]] = {}
    if "reference_unet" in networks:
        parts[REFERENCE_UNET_FILE] = components.reference_unet.state_dict()
    if "denoising_unet" in networks:
        denoising, temporal = split_denoising_state_dict(_denoiser_state(components.denoising_unet))
        parts[DENOISING_UNET_FILE] = denoising
        parts[TEMPORAL_MODULE_FILE] = temporal
    if "motion_encoder" in networks:
        parts[MOTION_ENCODER_FILE] = components.motion_encoder.state_dict()
    if not parts:
        return []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, state in parts.items():
        tensors = _plain(state, dtype)
        stem = Path(name).stem
        for fmt in formats:
            path = folder / f"{stem}.{fmt}"
            tmp = path.with_name(path.name + ".tmp")
            if fmt == "safetensors":
                save_file(tensors, str(tmp))
            elif fmt == "pth":
                torch.save(tensors, tmp)
            else:
                raise ValueError(f"unknown checkpoint format {fmt!r}")
            os.replace(tmp, path)
            written.append(path)
    return written


def _library_of(module: object) -> str:
    name = type(module).__module__
    if name.startswith("diffusers"):
        return "diffusers"
    if name.startswith("transformers"):
        return "transformers"
    return name


def save_model_folder(
    folder: str | os.PathLike[str],
    components: Components,
    *,
    dtype: torch.dtype | None = None,
    training_info: Mapping[str, Any] | None = None,
    generation_defaults: Mapping[str, Any] | None = None,
    networks: Collection[str] | None = None,
) -> Path:
    """Write the model folder atomically (replacing an existing one).

    Args:
        folder: Destination.
        components: The trained networks.
        networks: The sub-folders to write (default: every network ``components`` has, a
            complete model with its optional networks). A folder without
            the denoising UNet (e.g. a stage-0 export: only ``vae/``) has no ``scheduler/``
            either, and its ``model_index.json`` names only what it holds: it can start a
            training run but the pipeline and the model registry refuse it.
        dtype: Cast floating tensors for storage (e.g. ``torch.float16`` to halve the size;
            diffusers networks load them back in float32 unless told otherwise). The CLIP image
            encoder is always stored in float32 (transformers keeps the stored dtype).
        training_info: Written to ``training.json``.
        generation_defaults: Written to ``model_index.json`` as ``_generation_defaults``.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a model folder is not secret
    try:
        networks = present_networks(components) if networks is None else networks
        unknown = sorted(set(networks) - set(MODEL_SUBFOLDERS) - set(OPTIONAL_SUBFOLDERS))
        if unknown:
            raise ValueError(f"unknown model components: {', '.join(unknown)}")
        optional = [name for name in networks if name in OPTIONAL_SUBFOLDERS]
        absent = [name for name in optional if getattr(components, name) is None]
        if absent:
            raise ValueError(f"the model has no {', '.join(absent)} to write")
        modules: dict[str, Any] = {
            name: getattr(components, name)
            for name in (
                "reference_unet",
                "denoising_unet",
                "motion_encoder",
                "vae",
                *OPTIONAL_SUBFOLDERS,
            )
            if name in networks
        }
        for name, module in modules.items():
            original = {k: v.clone() for k, v in module.state_dict().items()}
            if dtype is not None:
                # Plain nn.Module.to: ModelMixin.to warns about fp32-kept modules on every cast.
                nn.Module.to(module, dtype)
            try:
                module.save_pretrained(tmp / name, safe_serialization=True)
            finally:
                if dtype is not None:
                    nn.Module.to(module, torch.float32)
                    module.load_state_dict(original)
        if "image_encoder" in networks:
            components.image_encoder.save_pretrained(tmp / "image_encoder")
            modules["image_encoder"] = components.image_encoder
        if "denoising_unet" in networks:
            # The sampler belongs to the denoiser (its noise schedule is the training one).
            modules["scheduler"] = components.inference_scheduler()
            modules["scheduler"].save_pretrained(tmp / "scheduler")
        index: dict[str, Any] = {
            "_class_name": PIPELINE_CLASS,
            "_diffusers_version": diffusers.__version__,
        }
        if generation_defaults:
            index[GENERATION_DEFAULTS_KEY] = dict(generation_defaults)
        for name, module in modules.items():
            index[name] = [_library_of(module), type(module).__name__]
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        if training_info is not None:
            (tmp / "training.json").write_text(
                json.dumps(training_info, indent=2, sort_keys=True, default=str) + "\n"
            )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def folder_safetensors_bytes(folder: str | os.PathLike[str]) -> int:
    """Total size of the ``.safetensors`` files below ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*.safetensors"))


_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors")


def resolve_model_folder(path: str | os.PathLike[str]) -> Path:
    """A model folder, or a run folder's ``model/`` sub-folder."""
    path = Path(path)
    if (path / "model" / "model_index.json").is_file():
        return path / "model"
    if (path / "model_index.json").is_file():
        return path
    raise FileNotFoundError(f"{path} is neither a model folder nor a run folder with model/")


def load_model_folder_weights(
    source: str | os.PathLike[str],
    components: Components,
    names: Iterable[str] | None = None,
    *,
    widen_latent: bool = False,
) -> list[str]:
    """Load the weights of a model folder into existing networks (strictly); returns the names.

    Args:
        source: Model folder or run folder.
        components: Networks to fill (float32 parameters receive float16 files unchanged in
            value).
        names: Sub-folders to load (default: every one present of the networks ``components``
            has).
        widen_latent: The folder's networks may have fewer latent channels (its
            ``vae/config.json``) than ``components``: widen them so they compute what they did
            (:mod:`.latent_expansion`). Without it a different count fails the strict load.
    """
    folder = resolve_model_folder(source)
    wanted = list(names) if names is not None else list(present_networks(components))
    # (folder's latent channels, the networks') when widening
    widen = (
        (_folder_latent_channels(folder), int(components.vae.config.latent_channels))
        if widen_latent
        else None
    )
    loaded = []
    for name in wanted:
        if name not in MODEL_SUBFOLDERS + OPTIONAL_SUBFOLDERS:
            raise ValueError(f"unknown model component {name!r}")
        network = getattr(components, name)
        if network is None:
            raise ValueError(f"the model has no {name} to load weights into")
        sub = folder / name
        files = [sub / f for f in _WEIGHT_FILES if (sub / f).is_file()]
        if not files:
            if names is not None:
                raise FileNotFoundError(f"{sub}: no weights")
            continue
        state = load_file(str(files[0]))
        # The refiner works on pixels: a wider latent space does not change it.
        if widen is not None and widen[0] != widen[1] and name not in OPTIONAL_SUBFOLDERS:
            state = widen_latent_state(name, state, network.state_dict(), *widen)
        network.load_state_dict(state, strict=True)
        loaded.append(name)
    return loaded


def _folder_latent_channels(folder: Path) -> int:
    """Latent channels of a model folder's networks (its VAE's config)."""
    path = folder / "vae" / "config.json"
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["latent_channels"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: cannot read the latent channels to widen from ({exc})") from exc


def load_model_folder(source: str | os.PathLike[str]) -> Components:
    """Rebuild :class:`Components` from a folder written by :func:`save_model_folder`.

    The architecture comes from ``training.json`` (``model_config``); all networks are returned
    in float32, eval mode, on the CPU.
    """
    from .components import ModelConfig, build_components

    folder = resolve_model_folder(source)
    incomplete = incomplete_model_reason(folder, MODEL_SUBFOLDERS)
    if incomplete:
        raise FileNotFoundError(incomplete)
    info = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    components = build_components(ModelConfig(**info["model_config"]))
    networks = present_networks(components)
    load_model_folder_weights(folder, components, networks)
    for name in networks:
        getattr(components, name).eval()
    return components


__all__ = [
    "PIPELINE_CLASS",
    "export_official_checkpoints",
    "MODEL_SUBFOLDERS",
    "OPTIONAL_SUBFOLDERS",
    "folder_safetensors_bytes",
    "load_model_folder",
    "load_model_folder_weights",
    "present_networks",
    "resolve_model_folder",
    "save_model_folder",
]
