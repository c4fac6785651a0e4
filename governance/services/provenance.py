"""Signing outputs with C2PA Content Credentials, and the records that prove it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from rest_framework import status

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.integrations.c2pa_signing import (
    IngredientRef,
    VerificationStatus,
    build_manifest_definition,
    sign_file,
)
from governance.models import ProvenanceRecord, User
from governance.models.provenance import ProvenanceStatus
from governance.services.audit import audit_event_record
from governance.signing import signer_material_get

DIGITAL_SOURCE_TYPE = "trainedAlgorithmicMedia"


class ProvenanceMissingError(ApplicationError):
    status_code = status.HTTP_409_CONFLICT


def provenance_sign(
    *,
    subject_type: str,
    subject_id: int | str,
    source: Path,
    dest: Path,
    title: str,
    ingredients: Sequence[IngredientRef | tuple[str, str, str]],
    org_assertion: Mapping[str, Any],
    acting_user: User | None,
) -> ProvenanceRecord:
    """Sign ``source`` into ``dest`` and record it (audited).

    The adapter signs to a temporary file, reads it back and validates it (trusted when trust
    anchors are configured, the organisation assertion unchanged), then renames it into place:
    nothing is left at ``dest`` on failure. The record is written only after that succeeded.
    """
    material = signer_material_get()
    manifest = build_manifest_definition(
        title=title,
        format="video/mp4",
        software_agent=settings.PRODUCT_NAME,
        software_agent_version=settings.PRODUCT_VERSION,
        claim_generator_version=settings.PRODUCT_VERSION,
        ingredients=ingredients,
        org_assertion=org_assertion,
    )
    source_sha256 = _sha256(source)
    result = sign_file(
        source=source, dest=dest, manifest=manifest, signer_material=material, overwrite=True
    )
    with transaction.atomic():
        record = ProvenanceRecord.objects.create(
            subject_type=subject_type,
            subject_id=str(subject_id),
            file_sha256=result.signed_file_sha256,
            source_sha256=source_sha256,
            status=ProvenanceStatus.of(result.status),
            validation_state=result.validation_state or "",
            active_manifest_label=result.active_manifest_label or "",
            signer_cert_sha256=result.signer_cert_sha256,
            manifest_json=result.manifest_store_json,
            org_assertion=dict(org_assertion),
            manifest_size=result.manifest_size,
        )
        audit_event_record(
            actor=acting_user,
            action=AuditAction.PROVENANCE_SIGN,
            target_type=subject_type,
            target_id=subject_id,
            payload={
                "provenance_record_id": record.pk,
                "file_sha256": record.file_sha256,
                "source_sha256": source_sha256,
                "status": record.status,
                "signer_cert_sha256": record.signer_cert_sha256,
            },
        )
    return record


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


ACCEPTED = {ProvenanceStatus.TRUSTED, ProvenanceStatus.VALID_UNTRUSTED}


def provenance_record_assert_valid(
    *, subject_type: str, subject_id: int | str, file_sha256: str
) -> ProvenanceRecord:
    """The record covering exactly this file, or ``ProvenanceMissingError``: no publication
    without valid Content Credentials."""
    record = (
        ProvenanceRecord.objects.filter(
            subject_type=subject_type, subject_id=str(subject_id), file_sha256=file_sha256
        )
        .order_by("-pk")
        .first()
    )
    if record is None:
        raise ProvenanceMissingError(
            f"No provenance record covers {subject_type} #{subject_id}'s file.",
            code="provenance_missing",
        )
    wanted = {ProvenanceStatus.TRUSTED} if settings.C2PA_TRUST_ANCHORS else ACCEPTED
    if record.status not in wanted:
        raise ProvenanceMissingError(
            f"The provenance of {subject_type} #{subject_id} is {record.status}.",
            code="provenance_invalid",
        )
    return record


def provenance_status_label(value: VerificationStatus) -> str:
    return ProvenanceStatus.of(value).label
