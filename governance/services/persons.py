from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from governance.audit_codes import AuditAction
from governance.models import EvidenceFile, EvidenceKind, Person, User
from governance.services.audit import audit_event_record
from governance.services.evidence import (
    evidence_check,
    evidence_files_cleanup_on_error,
    evidence_payload,
    evidence_store,
)


def person_create(
    *,
    full_name: str,
    reference_photo: File,
    identity_verification_note: str,
    external_reference: str = "",
    acting_user: User,
) -> Person:
    """Enrol a person with their verified identity reference photo.

    The audit payload carries ids and the photo's hash, not the name: the audit trail is
    append-only for ever and should hold as little personal data as it can.
    """
    errors: dict[str, str] = {}
    if not full_name.strip():
        errors["full_name"] = "A name is required."
    if not identity_verification_note.strip():
        errors["identity_verification_note"] = "Say how the identity was verified."
    if errors:
        raise ValidationError(errors)
    checked = evidence_check(
        upload=reference_photo, kind=EvidenceKind.REFERENCE_PHOTO, field="reference_photo"
    )
    with evidence_files_cleanup_on_error() as stored, transaction.atomic(durable=True):
        photo = evidence_store(checked=checked, acting_user=acting_user, stored=stored)
        person = Person.objects.create(
            full_name=full_name.strip(),
            external_reference=external_reference.strip(),
            reference_photo=photo,
            identity_verification_note=identity_verification_note.strip(),
            identity_verified_by=acting_user,
            created_at=timezone.now(),
        )
        audit_event_record(
            actor=acting_user,
            action=AuditAction.PERSON_CREATE,
            target_type="governance.person",
            target_id=person.pk,
            payload={"reference_photo": evidence_payload(photo)},
        )
    return person


@transaction.atomic(durable=True)
def person_reference_photo_download_record(*, person: Person, acting_user: User) -> EvidenceFile:
    """Record that ``acting_user`` downloads a person's reference photo; returns the file."""
    photo = person.reference_photo
    audit_event_record(
        actor=acting_user,
        action=AuditAction.PERSON_REFERENCE_PHOTO_DOWNLOAD,
        target_type="governance.person",
        target_id=person.pk,
        payload=evidence_payload(photo),
    )
    return photo
