"""The model registry: registering weights (hash-pinned, compatibility-checked, licence and
lineage recorded), deprecating and blocking model versions.

Blocking tells the jobs side through ``governance.hooks.register_model_blocked_handler``
(queued and running jobs on the model are stopped and reported to compliance there); the block's
audit event names the model, the reason, what caused it and which handlers were told.

The use gate (``model_version_assert_usable``, ``model_version_assert_active``) is a read and
lives in ``governance.selectors.registry``; it is re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from rest_framework import status

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.hooks import ModelBlocked, model_blocked_handlers
from governance.integrations.model_files import (
    ModelFilesError,
    ModelFolderReport,
    model_folder_check,
    model_folder_verify,
)
from governance.models import (
    DatasetSnapshot,
    License,
    LicenseStatus,
    ModelLayout,
    ModelVersion,
    ModelVersionStatus,
    ModelWeightFile,
    SnapshotStatus,
    User,
)
from governance.selectors.registry import (
    ModelUseClearance,
    ModelVersionUnusableError,
    model_version_assert_active,
    model_version_assert_usable,
    model_version_descendants,
)
from governance.services.audit import audit_event_record

__all__ = [
    "ModelFilesRejectedError",
    "ModelUseClearance",
    "ModelVersionUnusableError",
    "model_version_assert_active",
    "model_version_assert_usable",
    "model_version_block",
    "model_version_block_by_hand",
    "model_version_deprecate",
    "model_version_folder_path",
    "model_version_register",
    "model_version_verify_files",
    "model_versions_block_dependents",
]


class ModelFilesRejectedError(ApplicationError):
    """The weights folder was refused (400): ``reason`` is ``invalid_folder``,
    ``hash_mismatch`` or ``incompatible``, and the message says exactly what."""

    def __init__(self, error: ModelFilesError, folder: str) -> None:
        super().__init__(
            f"The model folder {folder} was refused ({error.reason}): {error}",
            code=f"model_files_{error.reason}",
            extra={"reason": error.reason, "folder": folder},
            status_code=status.HTTP_400_BAD_REQUEST,
        )
        self.reason = error.reason


def _folder_for_storage(folder: Path) -> str:
    """Relative to ``settings.MODELS_DIR`` when inside it, else absolute."""
    folder = folder.resolve()
    models_dir = Path(str(settings.MODELS_DIR)).resolve()
    try:
        return folder.relative_to(models_dir).as_posix()
    except ValueError:
        return str(folder)


def model_version_folder_path(model_version: ModelVersion) -> Path:
    path = Path(model_version.folder)
    return path if path.is_absolute() else Path(str(settings.MODELS_DIR)) / path


def _lineage_problems(
    licence: License, parent: ModelVersion | None, snapshots: Sequence[DatasetSnapshot]
) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if licence.status != LicenseStatus.ACTIVE:
        errors["license"] = [f"The licence {licence.name} is withdrawn."]
    for snapshot in snapshots:
        if snapshot.status != SnapshotStatus.FROZEN:
            errors.setdefault("lineage", []).append(
                f"Snapshot #{snapshot.pk} {snapshot} is withdrawn: {snapshot.withdraw_reason}"
            )
    if parent is not None and parent.status == ModelVersionStatus.BLOCKED:
        errors.setdefault("lineage", []).append(
            f"The parent model {parent} is blocked: {parent.status_reason}"
        )
    return errors


def model_version_register(
    *,
    name: str,
    version: str,
    folder: Path | str,
    licence: License,
    parent: ModelVersion | None = None,
    snapshots: Sequence[DatasetSnapshot] = (),
    checksums: Path | Mapping[str, Any] | None = None,
    is_demonstration: bool | None = None,
    description: str = "",
    acting_user: User | None,
) -> ModelVersion:
    """Register a weights folder (our safetensors layout or an official .pth set).

    Every file is hashed; with ``checksums`` (a pinned manifest) a changed, missing or extra
    file is refused; the weights must fit the X-NeMo networks (checked by the engine's loader).
    The licence and the lineage (``snapshots`` trained on, ``parent`` fine-tuned from) are
    recorded; a withdrawn licence or snapshot, or a blocked parent, is refused.
    ``is_demonstration`` defaults to what the folder says (the engine's demo marker).
    """
    name, version = name.strip(), version.strip()
    errors: dict[str, list[str]] = {}
    if not name:
        errors["name"] = ["Give the model's name."]
    if not version:
        errors["version"] = ["Give the model's version."]
    if name and version and ModelVersion.objects.filter(name=name, version=version).exists():
        errors["version"] = [f"{name} {version} is already registered."]
    errors.update(_lineage_problems(licence, parent, snapshots))
    if errors:
        raise ValidationError(errors)
    path = Path(folder)
    if not path.is_absolute() and not path.exists():
        path = Path(str(settings.MODELS_DIR)) / path
    try:
        # Outside any transaction: hashing gigabytes takes a while.
        report: ModelFolderReport = model_folder_check(path, checksums=checksums)
    except ModelFilesError as exc:
        raise ModelFilesRejectedError(exc, str(folder)) from exc
    demonstration = report.is_demonstration if is_demonstration is None else is_demonstration
    with transaction.atomic(durable=True):
        # Re-read the lineage under lock: a withdrawal may have happened while hashing.
        locked_licence = License.objects.select_for_update().get(pk=licence.pk)
        locked_snapshots = list(
            DatasetSnapshot.objects.select_for_update().filter(pk__in=[s.pk for s in snapshots])
        )
        locked_parent = (
            ModelVersion.objects.select_for_update().get(pk=parent.pk) if parent else None
        )
        errors = _lineage_problems(locked_licence, locked_parent, locked_snapshots)
        if errors:
            raise ValidationError(errors)
        model_version = ModelVersion.objects.create(
            name=name,
            version=version,
            licence=locked_licence,
            layout=ModelLayout(report.layout),
            architecture=report.architecture,
            weights_sha256=report.fingerprint,
            folder=_folder_for_storage(report.folder),
            is_demonstration=demonstration,
            parent=locked_parent,
            description=description.strip(),
            created_at=timezone.now(),
            created_by=acting_user,
        )
        model_version.snapshots.set(locked_snapshots)
        ModelWeightFile.objects.bulk_create(
            ModelWeightFile(
                model_version=model_version,
                relative_path=f.relative_path,
                sha256=f.sha256,
                size_bytes=f.size_bytes,
            )
            for f in report.files
        )
        audit_event_record(
            actor=acting_user,
            action=AuditAction.MODEL_VERSION_REGISTER,
            target_type="governance.modelversion",
            target_id=model_version.pk,
            payload={
                "name": name,
                "version": version,
                "layout": report.layout,
                "folder": model_version.folder,
                "weights_sha256": report.fingerprint,
                "files": {f.relative_path: f.sha256 for f in report.files},
                "license_id": locked_licence.pk,
                "parent_id": locked_parent.pk if locked_parent else None,
                "snapshot_ids": sorted(s.pk for s in locked_snapshots),
                "is_demonstration": demonstration,
                "checksums_verified": checksums is not None,
            },
        )
    return model_version


def model_version_verify_files(*, model_version: ModelVersion) -> str:
    """Re-hash the registered folder before it is loaded for a job; returns the fingerprint.
    ``ModelFilesRejectedError`` (code ``model_files_hash_mismatch``) names the files that
    changed."""
    pinned = dict(model_version.weight_files.values_list("relative_path", "sha256"))
    folder = model_version_folder_path(model_version)
    try:
        fingerprint = model_folder_verify(folder, pinned=pinned)
    except ModelFilesError as exc:
        raise ModelFilesRejectedError(exc, str(folder)) from exc
    if fingerprint != model_version.weights_sha256:
        raise ApplicationError(
            f"The files of {model_version} give fingerprint {fingerprint}, registered "
            f"{model_version.weights_sha256}.",
            code="model_files_hash_mismatch",
            status_code=status.HTTP_400_BAD_REQUEST,
        )
    return fingerprint


@transaction.atomic
def model_version_block(
    *,
    model_version: ModelVersion,
    reason: str,
    cause: Mapping[str, int] | None = None,
    acting_user: User | None,
) -> bool:
    """Block a model version from new jobs. Returns False (records nothing) if it already was.

    The jobs side is told through the model-blocked hook inside this transaction (it stops
    queued and running jobs and reports them to compliance); a failing handler rolls the block
    back. Composable: the withdrawal cascades call it inside their own transaction.
    """
    if not reason.strip():
        raise ValidationError({"reason": "Give the reason for blocking the model."})
    locked = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
    if locked.status == ModelVersionStatus.BLOCKED:
        return False
    previous = locked.status
    locked.status = ModelVersionStatus.BLOCKED
    locked.status_reason = reason.strip()
    locked.status_changed_at = timezone.now()
    locked.status_changed_by = acting_user
    locked.save(update_fields=["status", "status_reason", "status_changed_at", "status_changed_by"])
    handlers = [uid for uid, _ in model_blocked_handlers.handlers()]
    audit_event_record(
        actor=acting_user,
        action=AuditAction.MODEL_VERSION_BLOCK,
        target_type="governance.modelversion",
        target_id=locked.pk,
        payload={
            "name": locked.name,
            "version": locked.version,
            "previous_status": previous,
            "reason": locked.status_reason,
            "cause": dict(cause or {}),
            "reported_to": handlers,
        },
    )
    model_blocked_handlers.dispatch(
        ModelBlocked(
            model_version_id=locked.pk,
            name=locked.name,
            version=locked.version,
            reason=locked.status_reason,
            acting_user_id=acting_user.pk if acting_user else None,
            blocked_at=locked.status_changed_at,
            cause=dict(cause or {}),
        )
    )
    model_version.refresh_from_db()
    return True


@transaction.atomic
def model_versions_block_dependents(
    *,
    license: License | None = None,  # noqa: A002 - the domain's word
    snapshot: DatasetSnapshot | None = None,
    reason: str,
    cause: Mapping[str, int],
    acting_user: User | None,
) -> list[int]:
    """Block every model whose lineage includes ``license`` (as its weights' licence) or
    ``snapshot`` (trained on it), and every model fine-tuned from those, at any depth.
    Returns the ids of the models blocked now."""
    direct: set[int] = set()
    if license is not None:
        direct |= set(ModelVersion.objects.filter(licence=license).values_list("id", flat=True))
    if snapshot is not None:
        direct |= set(ModelVersion.objects.filter(snapshots=snapshot).values_list("id", flat=True))
    blocked: list[int] = []
    affected = model_version_descendants(model_version_ids=direct)
    for model in ModelVersion.objects.filter(pk__in=affected).order_by("id"):
        inherited = model.pk not in direct
        if model_version_block(
            model_version=model,
            reason=f"{reason} (through an ancestor model)" if inherited else reason,
            cause={**cause, "via_ancestor": int(inherited)},
            acting_user=acting_user,
        ):
            blocked.append(model.pk)
    return blocked


@transaction.atomic  # composable: the admin calls it inside its own transaction
def model_version_deprecate(
    *, model_version: ModelVersion, reason: str, acting_user: User | None
) -> ModelVersion:
    """Retire an active model from new jobs (kept for reproducing old ones)."""
    if not reason.strip():
        raise ValidationError({"reason": "Give the reason for deprecating the model."})
    locked = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
    if locked.status != ModelVersionStatus.ACTIVE:
        raise ApplicationError(
            f"Model {locked} is {locked.status}; only an active model can be deprecated.",
            code="model_version_not_active",
            extra={"model_version_id": locked.pk, "status": locked.status},
            status_code=status.HTTP_409_CONFLICT,
        )
    locked.status = ModelVersionStatus.DEPRECATED
    locked.status_reason = reason.strip()
    locked.status_changed_at = timezone.now()
    locked.status_changed_by = acting_user
    locked.save(update_fields=["status", "status_reason", "status_changed_at", "status_changed_by"])
    audit_event_record(
        actor=acting_user,
        action=AuditAction.MODEL_VERSION_DEPRECATE,
        target_type="governance.modelversion",
        target_id=locked.pk,
        payload={"name": locked.name, "version": locked.version, "reason": locked.status_reason},
    )
    return locked


@transaction.atomic  # composable: the admin calls it inside its own transaction
def model_version_block_by_hand(
    *, model_version: ModelVersion, reason: str, acting_user: User | None
) -> ModelVersion:
    """A steward's block (API, admin): ``model_version_block``, but 409 if the model is
    already blocked."""
    if not model_version_block(model_version=model_version, reason=reason, acting_user=acting_user):
        raise ApplicationError(
            f"Model {model_version} is already blocked.",
            code="model_version_blocked",
            extra={"model_version_id": model_version.pk},
            status_code=status.HTTP_409_CONFLICT,
        )
    model_version.refresh_from_db()
    return model_version
