"""Licensors and licences: recording them, and withdrawing a licence with its cascade.

Withdrawing a licence (``license_withdraw``) flags every frozen snapshot holding a clip under it
and blocks every model whose lineage depends on it (the weights' own licence, a snapshot it was
trained on, or a parent model), all in one transaction with one audit event per change.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from rest_framework import status

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.models import (
    WORLDWIDE,
    Dataset,
    License,
    LicenseStatus,
    LicenseTerritory,
    LicenseUse,
    Licensor,
    Purpose,
    RiskLevel,
    Territory,
    User,
)
from governance.selectors.registry import snapshots_using_license
from governance.services.audit import audit_event_record
from governance.services.datasets import dataset_create, dataset_snapshot_withdraw
from governance.services.registry import model_versions_block_dependents

LICENSE_TERMS_SUFFIXES = (".pdf", ".txt", ".md", ".html")
LICENSE_TERMS_MAX_BYTES = 20 * 1024 * 1024
LICENSE_NOT_ACTIVE = "Licence {name} is already withdrawn."


@dataclass
class LicenseWithdrawal:
    """What withdrawing a licence changed."""

    license: License
    snapshot_ids: list[int] = field(default_factory=list)
    model_version_ids: list[int] = field(default_factory=list)


@transaction.atomic  # composable: the admin calls it inside its own transaction
def licensor_create(
    *, name: str, contact: str = "", url: str = "", notes: str = "", acting_user: User | None
) -> Licensor:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the licensor's name."})
    if Licensor.objects.filter(name__iexact=name).exists():
        raise ValidationError({"name": f"A licensor named {name} exists."})
    licensor = Licensor(
        name=name,
        contact=contact.strip(),
        url=url.strip(),
        notes=notes.strip(),
        created_at=timezone.now(),
        created_by=acting_user,
    )
    licensor.full_clean()
    licensor.save()
    audit_event_record(
        actor=acting_user,
        action=AuditAction.LICENSOR_CREATE,
        target_type="governance.licensor",
        target_id=licensor.pk,
        payload={"name": licensor.name, "contact": licensor.contact, "url": licensor.url},
    )
    return licensor


def _territories(codes: Sequence[str], errors: dict[str, list[str]]) -> list[Territory]:
    wanted = list(dict.fromkeys(code.strip().upper() for code in codes if code.strip()))
    if not wanted:
        errors.setdefault("territories", []).append(
            f"Give at least one territory ({WORLDWIDE} for worldwide)."
        )
        return []
    if WORLDWIDE in wanted and len(wanted) > 1:
        errors.setdefault("territories", []).append(
            f"{WORLDWIDE} (worldwide) already covers every territory."
        )
    found = {t.pk: t for t in Territory.objects.filter(pk__in=wanted)}
    unknown = [code for code in wanted if code not in found]
    if unknown:
        errors.setdefault("territories", []).append(f"Unknown territories: {', '.join(unknown)}.")
    return [found[code] for code in wanted if code in found]


def _terms_store(terms_file: File) -> tuple[str, str]:
    """Store the terms under a random name; returns (storage name, SHA-256)."""
    suffix = PurePath(terms_file.name or "").suffix.lower()
    if suffix not in LICENSE_TERMS_SUFFIXES:
        raise ValidationError(
            {"terms_file": f"Attach the terms as {', '.join(LICENSE_TERMS_SUFFIXES)}."}
        )
    if terms_file.size is not None and terms_file.size > LICENSE_TERMS_MAX_BYTES:
        raise ValidationError({"terms_file": "The terms file is too large."})
    digest = hashlib.sha256()
    for chunk in terms_file.chunks():
        digest.update(chunk)
    terms_file.seek(0)
    name = default_storage.save(f"licences/{uuid.uuid4().hex}{suffix}", terms_file)
    return name, digest.hexdigest()


def license_create(
    *,
    licensor: Licensor,
    name: str,
    allowed_uses: Sequence[str],
    territories: Sequence[str],
    valid_from: datetime | None = None,
    expires_at: datetime | None = None,
    terms_text: str = "",
    terms_file: File | None = None,
    attribution_text: str = "",
    spdx_id: str = "",
    acting_user: User | None,
) -> License:
    """Record a licence: the uses it allows (``training``, ``evaluation``, ``research_output``,
    ``commercial_output``), where and until when; its terms as text and/or a file."""
    errors: dict[str, list[str]] = {}
    name = name.strip()
    if not name:
        errors["name"] = ["Give the licence's name."]
    elif License.objects.filter(name__iexact=name).exists():
        errors["name"] = [f"A licence named {name} exists."]
    uses = list(dict.fromkeys(allowed_uses))
    unknown = [use for use in uses if use not in LicenseUse.values]
    if unknown:
        errors["allowed_uses"] = [
            f"Unknown uses {', '.join(unknown)}; use {', '.join(LicenseUse.values)}."
        ]
    territory_rows = _territories(territories, errors)
    valid_from = valid_from or timezone.now()
    for label, value in (("valid_from", valid_from), ("expires_at", expires_at)):
        if value is not None and timezone.is_naive(value):
            errors.setdefault(label, []).append("Give a time zone.")
    if expires_at is not None and "expires_at" not in errors and expires_at <= valid_from:
        errors.setdefault("expires_at", []).append("The licence expires before it starts.")
    if not terms_text.strip() and terms_file is None:
        errors["terms_text"] = ["Give the terms as text or attach them as a file."]
    if errors:
        raise ValidationError(errors)
    stored_name, terms_sha256 = _terms_store(terms_file) if terms_file is not None else ("", "")
    try:
        with transaction.atomic():  # composable: the admin calls it in its transaction
            licence = License.objects.create(
                licensor=licensor,
                name=name,
                spdx_id=spdx_id.strip(),
                terms_text=terms_text.strip(),
                terms_file=stored_name,
                terms_sha256=terms_sha256,
                allows_training=LicenseUse.TRAINING in uses,
                allows_evaluation=LicenseUse.EVALUATION in uses,
                allows_research_output=LicenseUse.RESEARCH_OUTPUT in uses,
                allows_commercial_output=LicenseUse.COMMERCIAL_OUTPUT in uses,
                attribution_text=attribution_text.strip(),
                valid_from=valid_from,
                expires_at=expires_at,
                created_at=timezone.now(),
                created_by=acting_user,
            )
            LicenseTerritory.objects.bulk_create(
                LicenseTerritory(license=licence, territory=t) for t in territory_rows
            )
            audit_event_record(
                actor=acting_user,
                action=AuditAction.LICENSE_CREATE,
                target_type="governance.license",
                target_id=licence.pk,
                payload={
                    "licensor_id": licensor.pk,
                    "name": licence.name,
                    "allowed_uses": licence.allowed_uses(),
                    "territories": sorted(t.pk for t in territory_rows),
                    "valid_from": valid_from,
                    "expires_at": expires_at,
                    "terms_sha256": terms_sha256,
                },
            )
    except BaseException:
        if stored_name:
            default_storage.delete(stored_name)
        raise
    return licence


@transaction.atomic  # composable: the admin calls it inside its own transaction
def license_withdraw(
    *,
    license: License,  # noqa: A002 - the name the callers use
    reason: str,
    acting_user: User | None,
) -> LicenseWithdrawal:
    """Withdraw a licence (the licensor ended it, or it was recorded in error). Every frozen
    snapshot holding a clip under it is flagged (withdrawn) and every model depending on it is
    blocked, each audited; the jobs side is told through the model-blocked hook."""
    if not reason.strip():
        raise ValidationError({"reason": "Give the reason for the withdrawal."})
    locked = License.objects.select_for_update().get(pk=license.pk)
    if locked.status != LicenseStatus.ACTIVE:
        raise ApplicationError(
            LICENSE_NOT_ACTIVE.format(name=locked.name),
            code="license_not_active",
            extra={"license_id": locked.pk},
            status_code=status.HTTP_409_CONFLICT,
        )
    locked.status = LicenseStatus.WITHDRAWN
    locked.withdrawn_at = timezone.now()
    locked.withdrawn_by = acting_user
    locked.withdraw_reason = reason.strip()
    locked.save(update_fields=["status", "withdrawn_at", "withdrawn_by", "withdraw_reason"])
    snapshots = list(snapshots_using_license(license=locked))
    audit_event_record(
        actor=acting_user,
        action=AuditAction.LICENSE_WITHDRAW,
        target_type="governance.license",
        target_id=locked.pk,
        payload={
            "name": locked.name,
            "reason": locked.withdraw_reason,
            "snapshots_flagged": [s.pk for s in snapshots],
        },
    )
    result = LicenseWithdrawal(license=locked)
    cause_reason = f"Licence {locked.name} was withdrawn: {locked.withdraw_reason}"
    for snapshot in snapshots:
        withdrawal = dataset_snapshot_withdraw(
            snapshot=snapshot,
            reason=cause_reason,
            cause={"license_id": locked.pk},
            acting_user=acting_user,
        )
        if withdrawal.changed:
            result.snapshot_ids.append(snapshot.pk)
        result.model_version_ids += withdrawal.model_version_ids
    result.model_version_ids += model_versions_block_dependents(
        license=locked,
        reason=cause_reason,
        cause={"license_id": locked.pk},
        acting_user=acting_user,
    )
    license.refresh_from_db()
    return result


# The rows migration 0006 seeds; ``registry_defaults_ensure`` re-creates them (audited) where a
# database lost them (a test database flushed by a transactional test, a hand-made database).
PROJECT_LICENSOR = "Portrait platform project"
XNEMO_LICENSOR = "ByteDance (X-NeMo authors)"
SYNTHFACE_LICENCE = "CC0 1.0 (SynthFace, project-owned)"
XNEMO_LICENCE = "CC BY-NC 4.0 (ByteDance X-NeMo weights)"
SYNTHFACE_DATASET = "SynthFace"
TRAINING_PURPOSE = "model_training"


@dataclass(frozen=True)
class RegistryDefaults:
    synthface_licence: License
    xnemo_licence: License
    synthface_dataset: Dataset


@transaction.atomic
def registry_defaults_ensure(*, acting_user: User | None = None) -> RegistryDefaults:
    """The project's CC0 SynthFace licence and dataset, the official X-NeMo weights' licence
    (CC BY-NC 4.0: evaluation and research output only) and the ``model_training`` purpose;
    whatever is missing is created through the services. Idempotent."""
    Purpose.objects.get_or_create(
        code=TRAINING_PURPOSE,
        defaults={
            "label": "Training the platform's models",
            "description": "Use of a person's likeness and motion as training data.",
            "is_commercial": False,
            "risk_level": RiskLevel.LOW,
        },
    )
    Territory.objects.get_or_create(code=WORLDWIDE, defaults={"label": "Worldwide"})

    def licensor(name: str, notes: str) -> Licensor:
        found = Licensor.objects.filter(name=name).first()
        return found or licensor_create(name=name, notes=notes, acting_user=acting_user)

    synth = License.objects.filter(name=SYNTHFACE_LICENCE).first() or license_create(
        licensor=licensor(PROJECT_LICENSOR, "The platform's own data (procedural SynthFace)."),
        name=SYNTHFACE_LICENCE,
        spdx_id="CC0-1.0",
        allowed_uses=list(LicenseUse.values),
        territories=[WORLDWIDE],
        terms_text=(
            "The project dedicates the procedurally generated SynthFace data to the public "
            "domain (CC0 1.0 Universal): any use, including training, evaluation and "
            "commercial output, without attribution."
        ),
        acting_user=acting_user,
    )
    xnemo = License.objects.filter(name=XNEMO_LICENCE).first() or license_create(
        licensor=licensor(XNEMO_LICENSOR, "Authors of the official X-NeMo release."),
        name=XNEMO_LICENCE,
        spdx_id="CC-BY-NC-4.0",
        allowed_uses=[LicenseUse.EVALUATION, LicenseUse.RESEARCH_OUTPUT],
        territories=[WORLDWIDE],
        terms_text=(
            "Creative Commons Attribution-NonCommercial 4.0 International. The official "
            "X-NeMo weights may be used for research and evaluation; no commercial use."
        ),
        attribution_text="X-NeMo (ByteDance), licensed under CC BY-NC 4.0.",
        acting_user=acting_user,
    )
    dataset = Dataset.objects.filter(name=SYNTHFACE_DATASET).first() or dataset_create(
        name=SYNTHFACE_DATASET,
        description=(
            "Procedural talking faces with separate identity and motion parameters; no real "
            "person appears in them."
        ),
        acting_user=acting_user,
    )
    return RegistryDefaults(synth, xnemo, dataset)
