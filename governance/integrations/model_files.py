"""Model weight folders: hashing, tamper checks and compatibility with the X-NeMo networks.

The one exception to "governance never imports reenactment" (ARCHITECTURE.md §2): this adapter
imports the pure ``reenactment.engine`` library (no Django, no governance), lazily and nowhere
else in governance, because only the engine's loader knows what a compatible checkpoint is.

Two folder layouts are understood:

* ``xnemo_safetensors`` (ours, written by ``reenactment.engine.loading.save_xnemo_model`` and by
  ``reenactment.engine.demo_model.build_tiny_model``): ``reference_unet/``,
  ``denoising_unet/``, ``motion_encoder/`` (each ``config.json`` + safetensors), and optionally
  ``image_encoder/``, ``vae/``, ``scheduler/``, ``model_index.json``, ``README.md``. Each of the
  three X-NeMo networks is built from its own ``config.json`` on the meta device and the file's
  tensor names and shapes must match it exactly; so is a ``detail_refiner/`` that the index
  names.
* ``official_pth``: the four files of the official release (``xnemo_reference_unet``,
  ``xnemo_denoising_unet``, ``xnemo_temporal_module``, ``xnemo_motion_encoder``; ``.pth`` or
  the same content as ``.safetensors``), checked against the official network configuration,
  or against ``unet_config.json``/``unet_additional_kwargs.json``/``motion_encoder_config.json``
  when the folder holds them. Pickles are only ever read with ``weights_only=True``.

Every regular file below the folder (hidden files aside) is hashed with SHA-256; the model's
fingerprint is the SHA-256 of the sorted lines ``<relative path>  <sha256>\\n``, so adding,
removing, renaming or changing any file changes it.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAFETENSORS_NETWORKS = ("reference_unet", "denoising_unet", "motion_encoder")
SAFETENSORS_OPTIONAL = ("image_encoder", "vae", "scheduler")
MODEL_INDEX = "model_index.json"
DEMO_MARKER = "_demo_model"
OFFICIAL_STEMS = (
    "xnemo_reference_unet",
    "xnemo_denoising_unet",
    "xnemo_temporal_module",
    "xnemo_motion_encoder",
)
UNET_CONFIG_FILE = "unet_config.json"
UNET_KWARGS_FILE = "unet_additional_kwargs.json"
MOTION_ENCODER_CONFIG_FILE = "motion_encoder_config.json"


class ModelFilesError(Exception):
    """The folder cannot be registered or used; ``reason`` is a stable code, the message says
    why in words."""

    reason = "invalid"


class ModelFolderInvalidError(ModelFilesError):
    reason = "invalid_folder"


class ModelFilesTamperedError(ModelFilesError):
    """A file's SHA-256 differs from the pinned one, or a pinned file is missing / extra."""

    reason = "hash_mismatch"


class ModelFilesIncompatibleError(ModelFilesError):
    """A checkpoint's tensors do not fit the networks (missing, unexpected, reshaped keys)."""

    reason = "incompatible"


@dataclass(frozen=True)
class WeightFile:
    relative_path: str
    sha256: str
    size_bytes: int


@dataclass
class ModelFolderReport:
    """What a checked folder holds: its layout, its files with hashes, the combined
    fingerprint, the architecture (the networks' configurations) and whether it is the
    engine's demonstration model (random weights)."""

    folder: Path
    layout: str
    files: list[WeightFile]
    fingerprint: str
    architecture: dict[str, Any]
    is_demonstration: bool
    notes: list[str] = field(default_factory=list)


def files_fingerprint(files: list[WeightFile] | Mapping[str, str]) -> str:
    """SHA-256 over the sorted ``<relative path>  <sha256>`` lines."""
    pairs = (
        sorted(files.items())
        if isinstance(files, Mapping)
        else sorted((f.relative_path, f.sha256) for f in files)
    )
    digest = hashlib.sha256()
    for path, sha in pairs:
        digest.update(f"{path}  {sha}\n".encode())
    return digest.hexdigest()


def folder_files(folder: Path) -> list[Path]:
    """Every regular, non-hidden file below ``folder`` (sorted, symlinks refused)."""
    if not folder.is_dir():
        raise ModelFolderInvalidError(f"{folder} is not a folder.")
    found: list[Path] = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_symlink():
            raise ModelFolderInvalidError(
                f"{rel} is a symbolic link; copy the file into the model folder."
            )
        if path.is_file():
            found.append(path)
    if not found:
        raise ModelFolderInvalidError(f"{folder} holds no files.")
    return found


def folder_hash(folder: Path) -> list[WeightFile]:
    """The SHA-256 of each file (the engine's streamed ``sha256_file``)."""
    from reenactment.engine.loading import sha256_file

    return [
        WeightFile(path.relative_to(folder).as_posix(), sha256_file(path), path.stat().st_size)
        for path in folder_files(folder)
    ]


def checksums_read(source: Path | Mapping[str, Any]) -> dict[str, str]:
    """A pinned checksum manifest through the engine's reader: ``{relative path: sha256}``
    (also ``{name: {"sha256": ...}}`` and ``{"files": {...}}``)."""
    from reenactment.engine.loading import ChecksumMismatchError, load_checksum_manifest

    try:
        return load_checksum_manifest(source)
    except ChecksumMismatchError as exc:
        raise ModelFilesTamperedError(str(exc)) from exc


def files_compare(files: list[WeightFile], pinned: Mapping[str, str]) -> None:
    """Every file must be pinned with its exact hash and every pinned file present. A manifest
    keyed by bare file names (the official release's style) is matched on names when the
    folder has no sub-folders."""
    actual = {f.relative_path: f.sha256 for f in files}
    flat = all("/" not in path for path in actual)
    problems: list[str] = []
    for path, sha in sorted(actual.items()):
        expected = pinned.get(path)
        if expected is None and flat:
            expected = pinned.get(Path(path).name)
        if expected is None:
            problems.append(f"{path} is not pinned in the checksum manifest")
        elif expected != sha:
            problems.append(f"{path}: SHA-256 mismatch (expected {expected}, got {sha})")
    for path in sorted(set(pinned) - set(actual)):
        if not (flat and any(Path(p).name == path for p in actual)):
            problems.append(f"{path} is pinned but missing from the folder")
    if problems:
        raise ModelFilesTamperedError("; ".join(problems))


def _json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFolderInvalidError(f"{path.name} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFolderInvalidError(f"{path.name} is not a JSON object.")
    return data


def folder_layout(folder: Path) -> str:
    """``xnemo_safetensors`` or ``official_pth`` (``ModelFolderInvalidError`` otherwise)."""
    if any((folder / name).is_dir() for name in SAFETENSORS_NETWORKS):
        return "xnemo_safetensors"
    from reenactment.engine.loading import find_checkpoint_files, incomplete_model_reason

    stems = {_official_stem(p) for p in find_checkpoint_files(folder) if p.is_file()}
    if stems & set(OFFICIAL_STEMS):
        return "official_pth"
    if (folder / MODEL_INDEX).is_file():
        # Our layout's index without its networks (e.g. a stage-0 training export).
        raise ModelFolderInvalidError(incomplete_model_reason(folder) + ".")
    raise ModelFolderInvalidError(
        f"{folder} is neither our layout ({', '.join(f'{n}/' for n in SAFETENSORS_NETWORKS)}) "
        f"nor an official set ({', '.join(OFFICIAL_STEMS)} as .pth or .safetensors)."
    )


def _official_stem(path: Path) -> str:
    return path.name.split(".", 1)[0]


def _check_safetensors(folder: Path) -> tuple[dict[str, Any], list[str]]:
    import torch

    from reenactment.engine.configs import GenerationDefaultsError, check_generation_defaults
    from reenactment.engine.demo_model import GENERATION_DEFAULTS_KEY
    from reenactment.engine.loading import (
        DETAIL_REFINER,
        CheckpointError,
        compare_layouts,
        module_layout,
        network_class,
        read_detail_refiner_size,
        read_layout,
        read_vae_scale_factor,
    )

    architecture: dict[str, Any] = {"layout": "xnemo_safetensors"}
    notes: list[str] = []
    index = _json_object(folder / MODEL_INDEX) if (folder / MODEL_INDEX).is_file() else None
    # The optional refiner is checked like the networks when the index names it (the pipeline
    # loads it then, and would fail on a missing or mismatched one after the approvals).
    refiner = [DETAIL_REFINER] if index is not None and DETAIL_REFINER in index else []
    for name in (*SAFETENSORS_NETWORKS, *refiner):
        sub = folder / name
        config_path = sub / "config.json"
        weights = sorted(sub.glob("*.safetensors")) if sub.is_dir() else []
        if not config_path.is_file() or len(weights) != 1:
            raise ModelFolderInvalidError(
                f"{name}/ must hold config.json and one .safetensors file (our layout)."
            )
        config = _json_object(config_path)
        try:
            # model_index.json may name another of our networks (the compact motion encoder).
            cls = network_class(folder, name)
        except CheckpointError as exc:
            raise ModelFilesIncompatibleError(str(exc)) from exc
        try:
            with torch.device("meta"):
                module = cls.from_config(config)
        except Exception as exc:  # a config the network class refuses, in any way
            raise ModelFilesIncompatibleError(
                f"{name}/config.json does not describe a {cls.__name__}: {exc}"
            ) from exc
        try:
            report = compare_layouts(read_layout(weights[0]), module_layout(module))
        except CheckpointError as exc:
            raise ModelFilesIncompatibleError(f"{name}: {exc}") from exc
        if not report.ok:
            details = "; ".join(line.strip() for line in report.describe(limit=5))
            raise ModelFilesIncompatibleError(
                f"{name}/{weights[0].name} is incompatible with its config: {details}"
            )
        architecture[name] = {k: v for k, v in config.items() if not k.startswith("_")}
    components = [n for n in SAFETENSORS_OPTIONAL if (folder / n).is_dir()]
    architecture["components"] = [*SAFETENSORS_NETWORKS, *components, *refiner]
    if index is not None:
        if GENERATION_DEFAULTS_KEY in index:
            # Every job on the model starts from these: a value the pipeline refuses would fail
            # each job after its approvals, so the folder is refused here instead.
            try:
                check_generation_defaults(
                    index[GENERATION_DEFAULTS_KEY], tile=read_vae_scale_factor(folder)
                )
            except GenerationDefaultsError as exc:
                raise ModelFolderInvalidError(
                    f"{MODEL_INDEX} recommends settings the pipeline refuses: {exc}."
                ) from exc
            defaults = index[GENERATION_DEFAULTS_KEY]
            refiner_size = read_detail_refiner_size(folder)
            if (
                refiner_size is not None
                and defaults.get("refine_details", True)
                and defaults.get("resolution", refiner_size) != refiner_size
            ):
                raise ModelFolderInvalidError(
                    f"{MODEL_INDEX} recommends resolution {defaults['resolution']}, but the "
                    f"model's detail refiner works at {refiner_size} px."
                )
        architecture["model_index"] = index
    else:
        notes.append(f"no {MODEL_INDEX}: the pipeline needs the base models from elsewhere")
    return architecture, notes


def _check_official(folder: Path) -> tuple[dict[str, Any], list[str]]:
    import torch

    from reenactment.engine.loading import (
        MOTION_ENCODER_FILE,
        CheckpointError,
        find_checkpoint_files,
        inspect_checkpoint,
        load_unet_additional_kwargs_file,
        load_unet_config_file,
        module_layout,
        official_file_layouts,
    )
    from reenactment.engine.networks import MotionEncoder

    by_stem: dict[str, list[Path]] = {}
    for path in find_checkpoint_files(folder):
        by_stem.setdefault(_official_stem(path), []).append(path)
    missing = [stem for stem in OFFICIAL_STEMS if stem not in by_stem]
    if missing:
        raise ModelFolderInvalidError(f"the official set lacks {', '.join(missing)}.")
    doubled = [stem for stem in OFFICIAL_STEMS if len(by_stem[stem]) > 1]
    if doubled:
        raise ModelFolderInvalidError(f"more than one file for {', '.join(doubled)}.")
    try:
        unet_config = (
            load_unet_config_file(folder / UNET_CONFIG_FILE)
            if (folder / UNET_CONFIG_FILE).is_file()
            else None
        )
        unet_kwargs = (
            load_unet_additional_kwargs_file(folder / UNET_KWARGS_FILE)
            if (folder / UNET_KWARGS_FILE).is_file()
            else None
        )
    except CheckpointError as exc:
        raise ModelFolderInvalidError(str(exc)) from exc
    motion_config: dict[str, Any] = {}
    if (folder / MOTION_ENCODER_CONFIG_FILE).is_file():
        raw = _json_object(folder / MOTION_ENCODER_CONFIG_FILE)
        accepted = set(inspect.signature(MotionEncoder.__init__).parameters) - {"self"}
        motion_config = {k: v for k, v in raw.items() if k in accepted}
    expected = official_file_layouts(unet_config, unet_kwargs)
    with torch.device("meta"):
        expected[MOTION_ENCODER_FILE] = (module_layout(MotionEncoder(**motion_config)), {})
    for stem in OFFICIAL_STEMS:
        path = by_stem[stem][0]
        try:
            inspection = inspect_checkpoint(path, {f"{stem}.pth": expected[f"{stem}.pth"]})
        except CheckpointError as exc:
            raise ModelFilesIncompatibleError(f"{path.name}: {exc}") from exc
        if not inspection.compatible:
            lines = inspection.report.describe(limit=5) if inspection.report else ["unrecognised"]
            details = "; ".join(line.strip() for line in lines)
            raise ModelFilesIncompatibleError(f"{path.name} is incompatible: {details}")
    architecture: dict[str, Any] = {
        "layout": "official_pth",
        "unet_config": unet_config or "official sd-image-variations",
        "unet_additional_kwargs": unet_kwargs or "official X-NeMo inference config",
        "motion_encoder": motion_config or "official",
        "files": {stem: by_stem[stem][0].name for stem in OFFICIAL_STEMS},
    }
    return architecture, []


def _is_demonstration(architecture: Mapping[str, Any]) -> bool:
    index = architecture.get("model_index")
    return isinstance(index, Mapping) and isinstance(index.get(DEMO_MARKER), Mapping)


_CHECKED_MAX = 32
_checked: dict[tuple[str, str], tuple[dict[str, Any], list[str]]] = {}

CHECKERS: dict[str, Callable[[Path], tuple[dict[str, Any], list[str]]]] = {
    "xnemo_safetensors": _check_safetensors,
    "official_pth": _check_official,
}


def model_folder_check(
    folder: Path | str, *, checksums: Path | Mapping[str, Any] | None = None
) -> ModelFolderReport:
    """Hash every file, compare with ``checksums`` when given (a tampered folder fails here),
    then check that the weights fit the networks (an incompatible folder fails here).

    Raises ``ModelFolderInvalidError``, ``ModelFilesTamperedError`` or
    ``ModelFilesIncompatibleError`` with the reason.
    """
    folder = Path(folder).resolve()
    layout = folder_layout(folder)
    files = folder_hash(folder)
    if checksums is not None:
        files_compare(files, checksums_read(checksums))
    fingerprint = files_fingerprint(files)
    # The check depends only on the files' bytes, which the fingerprint pins: a folder with
    # the same fingerprint was already checked in this process.
    cached = _checked.get((layout, fingerprint))
    if cached is None:
        cached = CHECKERS[layout](folder)
        if len(_checked) >= _CHECKED_MAX:
            _checked.pop(next(iter(_checked)))
        _checked[(layout, fingerprint)] = cached
    architecture, notes = copy.deepcopy(cached)
    return ModelFolderReport(
        folder=folder,
        layout=layout,
        files=files,
        fingerprint=fingerprint,
        architecture=architecture,
        is_demonstration=_is_demonstration(architecture),
        notes=notes,
    )


def model_folder_verify(folder: Path | str, *, pinned: Mapping[str, str]) -> str:
    """Re-hash a registered folder against its registered hashes (before loading it for a
    job); returns the fingerprint, raises ``ModelFilesTamperedError`` naming the files."""
    folder = Path(folder)
    files = folder_hash(folder)
    files_compare(files, pinned)
    return files_fingerprint(files)
