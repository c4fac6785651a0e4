"""Safe loading of the X-NeMo checkpoints, compatibility reports and our own model layout.

Official release (four PyTorch files, or the same content as ``.safetensors``):

* ``xnemo_reference_unet.pth`` -> :class:`UNet2DReferenceModel`, loaded strictly;
* ``xnemo_motion_encoder.pth`` -> :class:`MotionEncoder`, loaded strictly;
* ``xnemo_denoising_unet.pth`` + ``xnemo_temporal_module.pth`` -> :class:`UNet3DDenoisingModel`.
  The split rule: keys containing ``.temporal_modules.`` belong to the temporal file, everything
  else (including ``.motion_modules.``) to the denoising file. The official script loads both
  non-strictly; here the *union* is checked and every learned tensor must come from one of the
  files (only the deterministic ``pos_encoder.pe`` tables may be regenerated), which is reported
  as :class:`DenoisingCoverage`. When both files hold a key the temporal file wins, as in the
  official loading order.

Pickle files are only ever read with ``torch.load(..., weights_only=True)``; anything that is not
a plain mapping of names to tensors is refused. Base models (SD image-variations UNet, CLIP image
encoder, SVD-xt VAE) are read from local diffusers/transformers folders only, never downloaded.

Our own layout is a folder with ``reference_unet/``, ``denoising_unet/`` and ``motion_encoder/``
written by the networks' ``save_pretrained`` (safetensors + ``config.json``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers.models.modeling_utils import ModelMixin
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from .configs import sd_unet_config
from .networks.compact_motion_encoder import CompactMotionEncoder
from .networks.motion_encoder import MotionEncoder
from .networks.positional import interleaved_sincos
from .networks.unet_2d_reference import UNet2DReferenceModel
from .networks.unet_3d_denoising import UNet3DDenoisingModel, denoising_unet_kwargs

if TYPE_CHECKING:
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionModelWithProjection

PathLike = str | os.PathLike[str]

REFERENCE_UNET_FILE = "xnemo_reference_unet.pth"
DENOISING_UNET_FILE = "xnemo_denoising_unet.pth"
TEMPORAL_MODULE_FILE = "xnemo_temporal_module.pth"
MOTION_ENCODER_FILE = "xnemo_motion_encoder.pth"
OFFICIAL_FILES = (
    REFERENCE_UNET_FILE,
    DENOISING_UNET_FILE,
    TEMPORAL_MODULE_FILE,
    MOTION_ENCODER_FILE,
)
FILE_DESCRIPTIONS = {
    REFERENCE_UNET_FILE: "reference UNet",
    DENOISING_UNET_FILE: "denoising UNet (base + motion modules)",
    TEMPORAL_MODULE_FILE: "temporal modules of the denoising UNet",
    MOTION_ENCODER_FILE: "motion encoder",
}
SUBFOLDERS = {
    "reference_unet": UNet2DReferenceModel,
    "denoising_unet": UNet3DDenoisingModel,
    "motion_encoder": MotionEncoder,
}
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
TEMPORAL_KEY_MARKER = ".temporal_modules."
POSITION_TABLE_SUFFIX = ".pos_encoder.pe"
_PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
_SD_HEAD_KEYS = ("conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class CheckpointError(Exception):
    """Base class of all loading errors of this module."""


class UnreadableCheckpointError(CheckpointError):
    """The file does not exist, is corrupt, or is not a mapping of names to tensors."""


class UnsafeCheckpointError(UnreadableCheckpointError):
    """A pickle file holds something other than tensors and plain containers (refused)."""


class ChecksumMismatchError(CheckpointError):
    """A file's SHA-256 differs from (or is missing in) the pinned manifest."""


class ModelFolderNotFoundError(CheckpointError, FileNotFoundError):
    """A local model folder (SD UNet, CLIP, VAE, our layout) is missing or incomplete."""


class ModelIndexError(CheckpointError):
    """``model_index.json`` names a network class that does not exist or is not accepted."""


class CheckpointIncompatibleError(CheckpointError):
    """A state dict does not fit the network: names missing/unexpected/shape-mismatched keys.

    Args:
        label: What was being loaded (file name or description).
        report: The key-level differences.
    """

    def __init__(self, label: str, report: CompatibilityReport) -> None:
        self.label = label
        self.report = report
        details = "\n  ".join(report.describe())
        super().__init__(f"{label} is incompatible with the network:\n  {details}")


# --------------------------------------------------------------------------------------------
# Layouts and compatibility reports
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one state-dict entry."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


Layout = dict[str, TensorSpec]


def module_layout(module: nn.Module) -> Layout:
    """Names, shapes and dtypes of ``module.state_dict()`` (works on the meta device)."""
    return {
        key: TensorSpec(tuple(value.shape), value.dtype)
        for key, value in module.state_dict().items()
    }


def tensor_layout(state_dict: Mapping[str, torch.Tensor]) -> Layout:
    """The layout of a loaded state dict."""
    return {key: TensorSpec(tuple(value.shape), value.dtype) for key, value in state_dict.items()}


@dataclass(frozen=True)
class CompatibilityReport:
    """Key-level differences between a state dict and what a network expects.

    Args:
        missing: Required keys absent from the file.
        unexpected: Keys the network does not have.
        mismatched: ``(key, file shape/dtype, expected shape/dtype)`` for keys whose shape (or
            floating/integer kind) differs.
        optional_missing: Keys that may be absent (regenerated deterministic tables).
    """

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, TensorSpec, TensorSpec], ...] = ()
    optional_missing: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int | None = 20) -> list[str]:
        """Human-readable lines naming the offending keys (at most ``limit`` per group)."""

        def cut(items: list[str]) -> list[str]:
            if limit is None or len(items) <= limit:
                return items
            return items[:limit] + [f"  ... and {len(items) - limit} more"]

        lines: list[str] = []
        if self.missing:
            lines.append(f"missing keys ({len(self.missing)}):")
            lines += [f"  - {key}" for key in cut(list(self.missing))]
        if self.unexpected:
            lines.append(f"unexpected keys ({len(self.unexpected)}):")
            lines += [f"  + {key}" for key in cut(list(self.unexpected))]
        if self.mismatched:
            lines.append(f"shape/dtype mismatches ({len(self.mismatched)}):")
            lines += cut(
                [
                    f"  ! {key}: file {list(got.shape)} {_dtype_name(got.dtype)}, expected "
                    f"{list(want.shape)} {_dtype_name(want.dtype)}"
                    for key, got, want in self.mismatched
                ]
            )
        if not lines:
            lines.append("all keys and shapes match")
        return lines


def compare_layouts(
    actual: Mapping[str, TensorSpec],
    required: Mapping[str, TensorSpec],
    optional: Mapping[str, TensorSpec] | None = None,
) -> CompatibilityReport:
    """Compare a file's layout with the required (and optionally present) keys.

    Shapes must match exactly; dtypes only need the same kind (floating vs integer), since
    checkpoints are commonly stored in half precision.
    """
    optional = optional or {}
    known = {**optional, **required}
    missing = tuple(sorted(k for k in required if k not in actual))
    unexpected = tuple(sorted(k for k in actual if k not in known))
    mismatched = tuple(
        (k, actual[k], known[k])
        for k in sorted(actual)
        if k in known
        and (
            actual[k].shape != known[k].shape
            or actual[k].dtype.is_floating_point != known[k].dtype.is_floating_point
        )
    )
    optional_missing = tuple(sorted(k for k in optional if k not in actual))
    return CompatibilityReport(missing, unexpected, mismatched, optional_missing)


def is_temporal_key(key: str) -> bool:
    """The split rule: ``.temporal_modules.`` keys belong to the temporal-module file."""
    return TEMPORAL_KEY_MARKER in f".{key}"


def is_position_table(key: str) -> bool:
    """A temporal ``pos_encoder.pe`` buffer (deterministic; may be regenerated)."""
    return key.endswith(POSITION_TABLE_SUFFIX)


def split_denoising_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a full denoising-UNet state dict into (denoising file, temporal file) parts."""
    denoising = {k: v for k, v in state_dict.items() if not is_temporal_key(k)}
    temporal = {k: v for k, v in state_dict.items() if is_temporal_key(k)}
    return denoising, temporal


# --------------------------------------------------------------------------------------------
# Building the networks
# --------------------------------------------------------------------------------------------


@dataclass
class XNemoNetworks:
    """The three trainable X-NeMo networks."""

    reference_unet: UNet2DReferenceModel
    denoising_unet: UNet3DDenoisingModel
    motion_encoder: MotionEncoder | CompactMotionEncoder


def build_networks(
    unet_config: Mapping[str, Any] | None = None,
    unet_additional_kwargs: Mapping[str, Any] | None = None,
    *,
    device: str | torch.device = "meta",
) -> XNemoNetworks:
    """Build the three networks from the official configs (full size by default).

    On the ``meta`` device (the default) this takes about a second and allocates nothing; such
    modules are meant for layout checks or for :func:`torch.nn.Module.load_state_dict` with
    ``assign=True`` (the loaders below do that).

    Args:
        unet_config: SD UNet config; the official sd-image-variations one when ``None``.
        unet_additional_kwargs: X-NeMo additional kwargs; the official ones when ``None``.
        device: Where to allocate the parameters.
    """
    config = dict(unet_config) if unet_config is not None else sd_unet_config()
    extra = dict(unet_additional_kwargs) if unet_additional_kwargs is not None else None
    with torch.device(device):
        return XNemoNetworks(
            reference_unet=UNet2DReferenceModel.from_sd_config(config),
            denoising_unet=UNet3DDenoisingModel(**denoising_unet_kwargs(config, extra)),
            motion_encoder=MotionEncoder(),
        )


def official_file_layouts(
    unet_config: Mapping[str, Any] | None = None,
    unet_additional_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, tuple[Layout, Layout]]:
    """``(required, optional)`` layouts of the four official files, from meta-device modules.

    * reference UNet and motion encoder: every key required;
    * denoising file: every non-temporal key required; temporal keys tolerated (the official
      denoising file may also hold them; the temporal file overrides them);
    * temporal file: every temporal key required except the ``pos_encoder.pe`` tables.
    """
    networks = build_networks(unet_config, unet_additional_kwargs)
    denoising = module_layout(networks.denoising_unet)
    temporal = {k: v for k, v in denoising.items() if is_temporal_key(k)}
    base = {k: v for k, v in denoising.items() if not is_temporal_key(k)}
    return {
        REFERENCE_UNET_FILE: (module_layout(networks.reference_unet), {}),
        DENOISING_UNET_FILE: (base, temporal),
        TEMPORAL_MODULE_FILE: (
            {k: v for k, v in temporal.items() if not is_position_table(k)},
            {k: v for k, v in temporal.items() if is_position_table(k)},
        ),
        MOTION_ENCODER_FILE: (module_layout(networks.motion_encoder), {}),
    }


def _cast(module: nn.Module, device: str | torch.device, dtype: torch.dtype) -> None:
    # Plain nn.Module.to: diffusers' ModelMixin.to logs a spurious "keep in float32" warning on
    # every dtype cast even when the model has no such modules.
    nn.Module.to(module, device=device, dtype=dtype)


def _finish(module: nn.Module, device: str | torch.device, dtype: torch.dtype) -> None:
    """Rebuild the non-persistent tables of a meta-built, assign-loaded module, then move it."""
    if isinstance(module, MotionEncoder):
        # The patch tables are not in the checkpoint and are still on the meta device.
        module.reset_tables()
    _cast(module, device, dtype)
    module.eval()


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise UnreadableCheckpointError(
            f"{path}: expected a mapping of names to tensors, found {type(obj).__name__}"
        )
    for wrapper in ("state_dict", "module"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            obj = inner
            break
    state_dict: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise UnreadableCheckpointError(f"{path}: non-string key {key!r}")
        if not isinstance(value, torch.Tensor):
            raise UnreadableCheckpointError(
                f"{path}: entry {key!r} holds a {type(value).__name__}, not a tensor"
            )
        name = key.removeprefix("module.")
        if name in state_dict:
            raise UnreadableCheckpointError(f"{path}: key {name!r} occurs twice after stripping")
        state_dict[name] = value
    return state_dict


def _is_zip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def read_state_dict(path: PathLike, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely into a flat ``{name: tensor}`` dict on the CPU.

    ``.safetensors`` files are read with safetensors; ``.pth``/``.pt``/``.ckpt``/``.bin`` with
    ``torch.load(map_location="cpu", weights_only=True)``. A top-level ``"state_dict"`` or
    ``"module"`` mapping is unwrapped and a ``module.`` key prefix stripped.

    Args:
        path: The file.
        mmap: Memory-map pickle-zip files instead of reading them (for inspection).

    Raises:
        UnreadableCheckpointError: Missing, corrupt or not a tensor mapping.
        UnsafeCheckpointError: A pickle that holds arbitrary objects (refused, never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableCheckpointError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises its own error types
            raise UnreadableCheckpointError(f"{path}: invalid safetensors file ({exc})") from exc
    if suffix not in _PICKLE_SUFFIXES:
        raise UnreadableCheckpointError(
            f"{path}: unsupported file type {suffix!r} (expected one of {CHECKPOINT_SUFFIXES})"
        )
    try:
        # Memory-mapping only works for the zip format; legacy files are read normally.
        use_mmap = mmap and _is_zip(path)
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as exc:
        reason = next(
            (
                line.strip().split(" was not an allowed global")[0]
                for line in str(exc).splitlines()
                if "Unsupported global" in line
            ),
            None,
        )
        if reason is not None:
            raise UnsafeCheckpointError(
                f"{path}: refused to load, the pickle holds non-tensor objects ({reason})"
            ) from exc
        raise UnreadableCheckpointError(f"{path}: not a readable PyTorch checkpoint") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise UnreadableCheckpointError(f"{path}: unreadable PyTorch checkpoint ({exc})") from exc
    return _unwrap_state_dict(obj, path)


def read_layout(path: PathLike) -> Layout:
    """The layout of a checkpoint without materialising its data when possible.

    safetensors headers are parsed directly; pickle-zip files are memory-mapped.
    """
    path = Path(path)
    if path.suffix.lower() == ".safetensors" and path.is_file():
        try:
            layout: Layout = {}
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    view = handle.get_slice(key)
                    layout[key.removeprefix("module.")] = TensorSpec(
                        tuple(view.get_shape()), _safetensors_dtype(view.get_dtype())
                    )
            return layout
        except Exception as exc:  # safetensors raises its own error types
            raise UnreadableCheckpointError(f"{path}: invalid safetensors file ({exc})") from exc
    return tensor_layout(read_state_dict(path, mmap=True))


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _safetensors_dtype(name: str) -> torch.dtype:
    try:
        return _SAFETENSORS_DTYPES[name]
    except KeyError:
        return getattr(torch, name.lower(), torch.float32)


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, streamed in ``chunk_size`` pieces."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def load_checksum_manifest(manifest: PathLike | Mapping[str, Any]) -> dict[str, str]:
    """Read a pinned manifest: ``{file name: sha256}``.

    Also accepts ``{file name: {"sha256": ...}}`` and the fixture style
    ``{"files": {file name: {"sha256": ...}}}``.
    """
    entries: Any
    if isinstance(manifest, Mapping):
        entries = manifest
    else:
        path = Path(manifest)
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ChecksumMismatchError(f"cannot read checksum manifest {path}: {exc}") from exc
        if not isinstance(entries, Mapping):
            raise ChecksumMismatchError(f"checksum manifest {path} is not a JSON object")
    if isinstance(entries.get("files"), Mapping):
        entries = entries["files"]
    pinned: dict[str, str] = {}
    for name, entry in entries.items():
        digest = entry.get("sha256") if isinstance(entry, Mapping) else entry
        if not isinstance(digest, str) or len(digest) != 64:
            raise ChecksumMismatchError(f"manifest entry for {name!r} is not a SHA-256 hex digest")
        pinned[str(name)] = digest.lower()
    return pinned


def verify_checksums(paths: Iterable[PathLike], manifest: PathLike | Mapping[str, Any]) -> None:
    """Check each file's SHA-256 against the manifest entry of the same file name.

    Raises:
        ChecksumMismatchError: Naming the file, when it is not pinned or its digest differs.
    """
    pinned = load_checksum_manifest(manifest)
    for path in map(Path, paths):
        expected = pinned.get(path.name)
        if expected is None:
            raise ChecksumMismatchError(f"{path.name} is not pinned in the checksum manifest")
        actual = sha256_file(path)
        if actual != expected:
            raise ChecksumMismatchError(
                f"{path.name}: SHA-256 mismatch (expected {expected}, got {actual})"
            )


# --------------------------------------------------------------------------------------------
# Loading the official checkpoints
# --------------------------------------------------------------------------------------------


def _load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], label: str) -> None:
    report = compare_layouts(tensor_layout(state_dict), module_layout(module))
    if not report.ok:
        raise CheckpointIncompatibleError(label, report)
    module.load_state_dict(state_dict, strict=True, assign=True)


def load_reference_unet(
    path: PathLike,
    unet_config: Mapping[str, Any] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    manifest: PathLike | Mapping[str, Any] | None = None,
) -> UNet2DReferenceModel:
    """Load ``xnemo_reference_unet.pth`` (or ``.safetensors``) strictly.

    Raises:
        CheckpointIncompatibleError: Naming missing, unexpected and shape-mismatched keys.
    """
    if manifest is not None:
        verify_checksums([path], manifest)
    config = unet_config if unet_config is not None else sd_unet_config()
    with torch.device("meta"):
        model = UNet2DReferenceModel.from_sd_config(config)
    _load_strict(model, read_state_dict(path), Path(path).name)
    _finish(model, device, dtype)
    return model


def load_motion_encoder(
    path: PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    manifest: PathLike | Mapping[str, Any] | None = None,
) -> MotionEncoder:
    """Load ``xnemo_motion_encoder.pth`` (or ``.safetensors``) strictly; returns it in eval mode."""
    if manifest is not None:
        verify_checksums([path], manifest)
    with torch.device("meta"):
        model = MotionEncoder()
    _load_strict(model, read_state_dict(path), Path(path).name)
    _finish(model, device, dtype)
    return model


@dataclass(frozen=True)
class DenoisingCoverage:
    """Where each tensor of the denoising UNet came from.

    Args:
        from_denoising_file: Tensors taken from the denoising file.
        from_temporal_file: Tensors taken from the temporal file.
        overridden: Keys present in both files (the temporal file wins, as in the release).
        regenerated: ``pos_encoder.pe`` tables absent from both files, rebuilt from the formula.
        outside_split_rule: Keys found in the file the split rule does not assign them to.
    """

    from_denoising_file: int
    from_temporal_file: int
    overridden: tuple[str, ...] = ()
    regenerated: tuple[str, ...] = ()
    outside_split_rule: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        parts = [
            f"{self.from_denoising_file} tensors from the denoising file",
            f"{self.from_temporal_file} from the temporal file",
        ]
        if self.overridden:
            parts.append(f"{len(self.overridden)} overridden by the temporal file")
        if self.regenerated:
            parts.append(f"{len(self.regenerated)} position tables regenerated")
        if self.outside_split_rule:
            parts.append(f"{len(self.outside_split_rule)} keys outside the split rule")
        return ", ".join(parts)


def merge_denoising_state_dicts(
    denoising: Mapping[str, torch.Tensor],
    temporal: Mapping[str, torch.Tensor],
    expected: Mapping[str, TensorSpec],
) -> tuple[dict[str, torch.Tensor], DenoisingCoverage, CompatibilityReport]:
    """Union of the two denoising files (temporal wins) with coverage and a strict report.

    Missing ``pos_encoder.pe`` tables are filled from the formula and reported; every other
    expected tensor must come from one of the files.
    """
    merged = {**denoising, **temporal}
    regenerated = []
    for key, spec in expected.items():
        if key not in merged and is_position_table(key) and len(spec.shape) == 3:
            merged[key] = interleaved_sincos(spec.shape[1], spec.shape[2])
            regenerated.append(key)
    report = compare_layouts(tensor_layout(merged), expected)
    coverage = DenoisingCoverage(
        from_denoising_file=sum(1 for k in denoising if k not in temporal),
        from_temporal_file=len(temporal),
        overridden=tuple(sorted(k for k in denoising if k in temporal)),
        regenerated=tuple(sorted(regenerated)),
        outside_split_rule=tuple(
            sorted(
                [k for k in denoising if is_temporal_key(k) and k not in temporal]
                + [k for k in temporal if not is_temporal_key(k)]
            )
        ),
    )
    return merged, coverage, report


def load_denoising_unet(
    denoising_path: PathLike,
    temporal_path: PathLike,
    unet_config: Mapping[str, Any] | None = None,
    unet_additional_kwargs: Mapping[str, Any] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    manifest: PathLike | Mapping[str, Any] | None = None,
) -> tuple[UNet3DDenoisingModel, DenoisingCoverage]:
    """Load the denoising UNet from the denoising file and the temporal-module file.

    Raises:
        CheckpointIncompatibleError: When a learned tensor is covered by neither file, or a key
            is unknown or has the wrong shape.
    """
    if manifest is not None:
        verify_checksums([denoising_path, temporal_path], manifest)
    config = dict(unet_config) if unet_config is not None else sd_unet_config()
    with torch.device("meta"):
        model = UNet3DDenoisingModel(**denoising_unet_kwargs(config, unet_additional_kwargs))
    merged, coverage, report = merge_denoising_state_dicts(
        read_state_dict(denoising_path), read_state_dict(temporal_path), module_layout(model)
    )
    if not report.ok:
        raise CheckpointIncompatibleError(
            f"{Path(denoising_path).name} + {Path(temporal_path).name}", report
        )
    model.load_state_dict(merged, strict=True, assign=True)
    _finish(model, device, dtype)
    return model, coverage


def load_official_checkpoints(
    folder: PathLike,
    unet_config: Mapping[str, Any] | None = None,
    unet_additional_kwargs: Mapping[str, Any] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    manifest: PathLike | Mapping[str, Any] | None = None,
) -> tuple[XNemoNetworks, DenoisingCoverage]:
    """Load the four released files from one folder (``.pth`` preferred, else ``.safetensors``)."""
    folder = Path(folder)
    paths = {name: _find_checkpoint(folder, name) for name in OFFICIAL_FILES}
    if manifest is not None:
        verify_checksums(paths.values(), manifest)
    denoising_unet, coverage = load_denoising_unet(
        paths[DENOISING_UNET_FILE],
        paths[TEMPORAL_MODULE_FILE],
        unet_config,
        unet_additional_kwargs,
        dtype=dtype,
        device=device,
    )
    networks = XNemoNetworks(
        reference_unet=load_reference_unet(
            paths[REFERENCE_UNET_FILE], unet_config, dtype=dtype, device=device
        ),
        denoising_unet=denoising_unet,
        motion_encoder=load_motion_encoder(paths[MOTION_ENCODER_FILE], dtype=dtype, device=device),
    )
    return networks, coverage


def _find_checkpoint(folder: Path, name: str) -> Path:
    stem = Path(name).stem
    for suffix in (".pth", ".safetensors"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise ModelFolderNotFoundError(f"{folder}: neither {stem}.pth nor {stem}.safetensors found")


# --------------------------------------------------------------------------------------------
# Base models from local folders (never downloaded)
# --------------------------------------------------------------------------------------------


def _model_folder(path: PathLike, subfolder: str | None, what: str) -> Path:
    folder = Path(path)
    if subfolder and (folder / subfolder / "config.json").is_file():
        folder = folder / subfolder
    if not (folder / "config.json").is_file():
        raise ModelFolderNotFoundError(
            f"{what}: no local model folder at {folder} (expected a config.json there"
            + (f" or in {folder / subfolder}" if subfolder else "")
            + "); base models are never downloaded, place them locally first"
        )
    return folder


def _sd_unet_weights(folder: Path) -> dict[str, torch.Tensor]:
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (folder / name).is_file():
            return read_state_dict(folder / name)
    raise ModelFolderNotFoundError(f"{folder}: no diffusion_pytorch_model weights found")


def load_sd_reference_unet(
    sd_path: PathLike, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> UNet2DReferenceModel:
    """Initialise the reference UNet from the local SD image-variations UNet.

    Args:
        sd_path: The ``sd-image-variations-diffusers`` folder or its ``unet`` subfolder.

    The SD output head (``conv_norm_out`` / ``conv_out``) is dropped; any other difference raises.
    """
    folder = _model_folder(sd_path, "unet", "SD image-variations UNet")
    config = json.loads((folder / "config.json").read_text())
    with torch.device("meta"):
        model = UNet2DReferenceModel.from_sd_config(config)
    state_dict = {k: v for k, v in _sd_unet_weights(folder).items() if k not in _SD_HEAD_KEYS}
    _load_strict(model, state_dict, f"{folder} (SD UNet)")
    _finish(model, device, dtype)
    return model


def init_denoising_unet_from_sd(
    sd_path: PathLike,
    unet_additional_kwargs: Mapping[str, Any] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> UNet3DDenoisingModel:
    """Build the denoising UNet with SD image-variations weights in its 2-D layers.

    Motion and temporal modules keep their fresh initialisation (zero ``proj_out``, i.e. they
    start as identities). Every non-module key must come from the SD file.
    """
    folder = _model_folder(sd_path, "unet", "SD image-variations UNet")
    config = json.loads((folder / "config.json").read_text())
    model = UNet3DDenoisingModel.from_2d_config(config, unet_additional_kwargs)
    expected = module_layout(model)
    required = {
        k: v
        for k, v in expected.items()
        if ".motion_modules." not in f".{k}" and not is_temporal_key(k)
    }
    state_dict = _sd_unet_weights(folder)
    report = compare_layouts(tensor_layout(state_dict), required)
    if not report.ok:
        raise CheckpointIncompatibleError(f"{folder} (SD UNet)", report)
    model.load_state_dict(state_dict, strict=False)
    _cast(model, device, dtype)
    return model


def load_clip_image_encoder(
    path: PathLike,
    *,
    subfolder: str | None = "image_encoder",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> CLIPVisionModelWithProjection:
    """The CLIP ViT-L/14 image encoder from a local transformers folder (never downloaded)."""
    from transformers import CLIPVisionModelWithProjection

    folder = _model_folder(path, subfolder, "CLIP image encoder")
    model = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True)
    model.to(device=device, dtype=dtype)  # type: ignore[call-arg]  # transformers wraps `to`
    return model.eval()


def load_svd_vae(
    path: PathLike,
    *,
    subfolder: str | None = "vae",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> AutoencoderKLTemporalDecoder:
    """The SVD-xt temporal-decoder VAE from a local diffusers folder (never downloaded)."""
    from diffusers import AutoencoderKLTemporalDecoder

    folder = _model_folder(path, subfolder, "SVD-xt VAE")
    model = AutoencoderKLTemporalDecoder.from_pretrained(
        str(folder), local_files_only=True, torch_dtype=dtype
    )
    return model.to(device).eval()


# --------------------------------------------------------------------------------------------
# Our own layout
# --------------------------------------------------------------------------------------------


def save_xnemo_model(folder: PathLike, networks: XNemoNetworks) -> None:
    """Write ``reference_unet/``, ``denoising_unet/`` and ``motion_encoder/`` (safetensors)."""
    folder = Path(folder)
    for name in SUBFOLDERS:
        getattr(networks, name).save_pretrained(folder / name, safe_serialization=True)


#: Packages whose classes a ``model_index.json`` may name for the three X-NeMo networks. The
#: index is data from a model folder: importing whatever module it names would let a folder run
#: code, so only our own engine's networks are accepted.
NETWORK_MODULE_PREFIX = "reenactment.engine."


def read_generation_defaults(folder: PathLike) -> dict[str, Any]:
    """The settings a model folder recommends (``_generation_defaults`` of its model_index.json).

    Empty when the folder has no index, the index is unreadable or names none: the pipeline's
    own (release) defaults apply then.
    """
    from .demo_model import GENERATION_DEFAULTS_KEY

    try:
        index = json.loads((Path(folder) / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}
    values = index.get(GENERATION_DEFAULTS_KEY, {}) if isinstance(index, dict) else {}
    return dict(values) if isinstance(values, dict) else {}


#: Sub-folders of a complete model folder in our layout (``model_index.json`` beside them).
MODEL_COMPONENTS = (*SUBFOLDERS, "image_encoder", "vae", "scheduler")

#: The optional network of our layout, loaded only when ``model_index.json`` names it (see
#: :class:`~reenactment.engine.networks.ReferenceDetailRefiner`).
DETAIL_REFINER = "detail_refiner"


def incomplete_model_reason(folder: PathLike, components: Sequence[str] = MODEL_COMPONENTS) -> str:
    """Why ``folder`` is not a complete model in our layout ("" when it is): the components it
    lacks. A training run's stage-0 export, for one, holds only its autoencoder."""
    missing = [name for name in components if not (Path(folder) / name).is_dir()]
    if not missing:
        return ""
    return (
        f"{folder} is not a complete model: it has no {', '.join(missing)} (a training run's "
        "stage-0 export holds only its autoencoder; use it as init_from/init_overrides)"
    )


def vae_scale_factor(vae_config: Mapping[str, Any]) -> int:
    """Pixels per latent cell of an autoencoder (each down block but the last halves the size):
    a generation size must be a multiple of it."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def read_vae_scale_factor(folder: PathLike) -> int | None:
    """:func:`vae_scale_factor` of a model folder's ``vae/config.json``; None when the file is
    missing or unreadable (the pipeline refuses a bad size when it runs, then)."""
    try:
        config = json.loads((Path(folder) / "vae" / "config.json").read_text())
        return vae_scale_factor(config)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def read_detail_refiner_size(folder: PathLike) -> int | None:
    """The generation size a model folder's detail refiner works at; None when the folder has
    none (or its config is unreadable: loading the model reports that)."""
    try:
        index = json.loads((Path(folder) / "model_index.json").read_text())
        if not isinstance(index, dict) or DETAIL_REFINER not in index:
            return None
        config = json.loads((Path(folder) / DETAIL_REFINER / "config.json").read_text())
        return int(config["sample_size"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def network_class(folder: PathLike, name: str) -> type[ModelMixin]:
    """The class ``model_index.json`` names for network ``name`` (the official one by default).

    Folders without an index, or whose index does not name the network, get the official class
    (:data:`SUBFOLDERS`). A named class must live under :data:`NETWORK_MODULE_PREFIX` and be a
    diffusers ``ModelMixin``; anything else is refused with :class:`ModelIndexError`
    naming the entry.
    """
    return _indexed_network_class(folder, name) or SUBFOLDERS[name]


def _indexed_network_class(folder: PathLike, name: str) -> type[ModelMixin] | None:
    """The class the folder's ``model_index.json`` names for ``name`` (None: no index or entry)."""
    index_path = Path(folder) / "model_index.json"
    if not index_path.is_file():
        return None
    entry = _read_json_object(index_path, "model index").get(name)
    if entry is None:
        return None
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)):
        raise ModelIndexError(
            f"{index_path}: entry {name!r} must be [module, class], got {entry!r}"
        )
    module_name, class_name = entry
    if not module_name.startswith(NETWORK_MODULE_PREFIX):
        raise ModelIndexError(
            f"{index_path}: {name} names {module_name}.{class_name}; only classes under "
            f"{NETWORK_MODULE_PREFIX}* are loaded"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ModelIndexError(
            f"{index_path}: {name} names {module_name}.{class_name}, which does not exist"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, ModelMixin)):
        raise ModelIndexError(
            f"{index_path}: {name} names {module_name}.{class_name}, which is not a network"
        )
    return cls


def load_detail_refiner(
    folder: PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> ModelMixin | None:
    """The model folder's reference-guided detail refiner, or None when its index names none
    (the official release and most models have none; see
    :class:`~reenactment.engine.networks.ReferenceDetailRefiner`)."""
    cls = _indexed_network_class(folder, DETAIL_REFINER)
    if cls is None:
        return None
    sub = _model_folder(Path(folder) / DETAIL_REFINER, None, "detail refiner")
    model = cls.from_pretrained(sub, local_files_only=True)  # type: ignore[call-arg]
    _cast(model, device, dtype)
    return model.eval()


def load_xnemo_model(
    folder: PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> XNemoNetworks:
    """Load a folder written by :func:`save_xnemo_model` (local files only).

    Each network is built from the class ``model_index.json`` names (see :func:`network_class`;
    the SynthFace preview model uses the compact motion encoder), else the official one.
    """
    folder = Path(folder)
    loaded: dict[str, Any] = {}
    for name in SUBFOLDERS:
        _model_folder(folder / name, None, f"X-NeMo {name}")
        cls = network_class(folder, name)
        model = cls.from_pretrained(folder / name, local_files_only=True)  # type: ignore[call-arg]
        _cast(model, device, dtype)
        loaded[name] = model.eval()
    return XNemoNetworks(**loaded)


# --------------------------------------------------------------------------------------------
# Inspection (used by `python -m reenactment.engine inspect-checkpoint`)
# --------------------------------------------------------------------------------------------


@dataclass
class InspectionReport:
    """What a checkpoint file holds and whether it fits the networks.

    Args:
        path: The file.
        kind: The official file it looks like (``None`` if unrecognised).
        layout: Its tensors.
        file_bytes: Size on disk.
        report: Differences to the expected layout of ``kind``.
        notes: Extra remarks (optional tables absent, extra temporal keys, ...).
    """

    path: Path
    kind: str | None
    layout: Layout
    file_bytes: int
    report: CompatibilityReport | None
    notes: list[str] = field(default_factory=list)

    @property
    def compatible(self) -> bool:
        return self.report is not None and self.report.ok

    @property
    def num_elements(self) -> int:
        return sum(spec.numel for spec in self.layout.values())

    @property
    def dtypes(self) -> dict[str, int]:
        return dict(Counter(_dtype_name(spec.dtype) for spec in self.layout.values()))


def identify_checkpoint(
    layout: Mapping[str, TensorSpec], expected: Mapping[str, tuple[Layout, Layout]]
) -> str | None:
    """The official file whose key set overlaps ``layout`` most (Jaccard), or ``None``."""
    best, best_score = None, 0.0
    keys = set(layout)
    for name, (required, optional) in expected.items():
        known = set(required) | set(optional)
        union = keys | set(required)
        score = len(keys & known) / len(union) if union else 0.0
        if score > best_score:
            best, best_score = name, score
    return best


def inspect_checkpoint(
    path: PathLike, expected: Mapping[str, tuple[Layout, Layout]]
) -> InspectionReport:
    """Identify a checkpoint file and compare it with the expected layouts.

    Raises:
        UnreadableCheckpointError: When the file cannot be read safely.
    """
    path = Path(path)
    layout = read_layout(path)
    kind = identify_checkpoint(layout, expected)
    if kind is None:
        return InspectionReport(path, None, layout, path.stat().st_size, None)
    required, optional = expected[kind]
    report = compare_layouts(layout, required, optional)
    notes = []
    present_optional = [k for k in optional if k in layout]
    if kind == DENOISING_UNET_FILE and present_optional:
        notes.append(
            f"also holds {len(present_optional)} temporal-module tensors "
            "(the temporal file overrides them)"
        )
    if report.optional_missing:
        if kind == TEMPORAL_MODULE_FILE:
            notes.append(
                f"{len(report.optional_missing)} pos_encoder.pe tables absent "
                "(regenerated from the formula when loading)"
            )
    return InspectionReport(path, kind, layout, path.stat().st_size, report, notes)


def find_checkpoint_files(path: PathLike) -> list[Path]:
    """A file itself, or every checkpoint file below a folder (sorted)."""
    path = Path(path)
    if path.is_dir():
        return sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES
        )
    return [path]


def load_unet_config_file(path: PathLike) -> dict[str, Any]:
    """Read an SD UNet ``config.json`` (JSON object)."""
    return _read_json_object(path, "UNet config")


def load_unet_additional_kwargs_file(path: PathLike) -> dict[str, Any]:
    """Read ``unet_additional_kwargs`` from JSON, or from an official inference YAML."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise CheckpointError("reading YAML needs PyYAML; pass a JSON file instead") from exc
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from exc
        if isinstance(data, Mapping) and isinstance(data.get("unet_additional_kwargs"), Mapping):
            return dict(data["unet_additional_kwargs"])
        if isinstance(data, Mapping):
            return dict(data)
        raise CheckpointError(f"{path} does not hold a mapping")
    data = _read_json_object(path, "unet_additional_kwargs")
    nested = data.get("unet_additional_kwargs")
    return dict(nested) if isinstance(nested, Mapping) else data


def _read_json_object(path: PathLike, what: str) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} {path} is not a JSON object")
    return data


__all__ = [
    "DETAIL_REFINER",
    "MODEL_COMPONENTS",
    "incomplete_model_reason",
    "CHECKPOINT_SUFFIXES",
    "DENOISING_UNET_FILE",
    "FILE_DESCRIPTIONS",
    "MOTION_ENCODER_FILE",
    "OFFICIAL_FILES",
    "REFERENCE_UNET_FILE",
    "TEMPORAL_MODULE_FILE",
    "CheckpointError",
    "CheckpointIncompatibleError",
    "ChecksumMismatchError",
    "ModelIndexError",
    "CompatibilityReport",
    "DenoisingCoverage",
    "InspectionReport",
    "ModelFolderNotFoundError",
    "TensorSpec",
    "UnreadableCheckpointError",
    "UnsafeCheckpointError",
    "XNemoNetworks",
    "build_networks",
    "compare_layouts",
    "find_checkpoint_files",
    "identify_checkpoint",
    "init_denoising_unet_from_sd",
    "inspect_checkpoint",
    "is_position_table",
    "is_temporal_key",
    "load_checksum_manifest",
    "load_clip_image_encoder",
    "load_detail_refiner",
    "load_denoising_unet",
    "load_motion_encoder",
    "load_official_checkpoints",
    "load_reference_unet",
    "load_sd_reference_unet",
    "load_svd_vae",
    "load_unet_additional_kwargs_file",
    "load_unet_config_file",
    "load_xnemo_model",
    "merge_denoising_state_dicts",
    "module_layout",
    "official_file_layouts",
    "read_layout",
    "read_state_dict",
    "save_xnemo_model",
    "sha256_file",
    "split_denoising_state_dict",
    "tensor_layout",
    "verify_checksums",
]
