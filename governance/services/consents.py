"""Recording, superseding and revoking consents. A consent record is never edited.

``consent_assert_valid`` (the check every use of a person's likeness goes through) is a read and
lives in ``governance.selectors.consents``; it is re-exported here for callers that think of it
as part of the consent API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import transaction
from django.utils import timezone
from rest_framework import status

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.hooks import ConsentRevocation, consent_revocation_handlers
from governance.models import (
    WORLDWIDE,
    Channel,
    ConsentRecord,
    ConsentRole,
    ConsentStatus,
    EvidenceFile,
    EvidenceKind,
    Person,
    Purpose,
    Territory,
    User,
)
from governance.selectors.consents import ConsentInvalidError, consent_assert_valid
from governance.services.audit import audit_event_record
from governance.services.evidence import (
    CheckedUpload,
    StoredFiles,
    evidence_check,
    evidence_files_cleanup_on_error,
    evidence_payload,
    evidence_store,
)

__all__ = [
    "ConsentInvalidError",
    "ConsentScope",
    "consent_assert_valid",
    "consent_evidence_download_record",
    "consent_record_create",
    "consent_revoke",
    "consent_supersede",
]

V = TypeVar("V", Purpose, Channel, Territory)

CONSENT_NOT_ACTIVE = "Consent #{id} is {status}; only an active consent can be {verb}."
CONSENT_REASON_REQUIRED = "Give the reason for the {what}."


@dataclass(frozen=True)
class ConsentScope:
    """A validated scope: codes are de-duplicated and exist as active vocabulary entries."""

    role: ConsentRole
    purposes: tuple[Purpose, ...]
    channels: tuple[Channel, ...]
    territories: tuple[Territory, ...]
    commercial_use: bool
    valid_from: datetime
    valid_until: datetime | None

    def audit_payload(self) -> dict[str, object]:
        return {
            "role": self.role.value,
            "purposes": sorted(p.code for p in self.purposes),
            "channels": sorted(c.code for c in self.channels),
            "territories": sorted(t.code for t in self.territories),
            "commercial_use": self.commercial_use,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
        }


def _unique(codes: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(code.strip() for code in codes if code.strip()))


def _vocabulary(
    model: type[V], codes: list[str], field: str, errors: dict[str, list[str]]
) -> tuple[V, ...]:
    label = field.replace("_", " ")
    if not codes:
        errors[field].append(f"At least one of the {label} is required.")
        return ()
    found = {entry.pk: entry for entry in model.objects.filter(pk__in=codes)}
    unknown = [code for code in codes if code not in found]
    retired = [code for code in codes if code in found and not found[code].is_active]
    if unknown:
        errors[field].append(f"Unknown {label}: {', '.join(unknown)}.")
    if retired:
        errors[field].append(f"Retired {label} cannot be consented to: {', '.join(retired)}.")
    return tuple(found[code] for code in codes if code in found)


def consent_scope_validate(
    *,
    role: str,
    purposes: Sequence[str],
    channels: Sequence[str],
    territories: Sequence[str],
    commercial_use: bool,
    valid_from: datetime,
    valid_until: datetime | None,
) -> ConsentScope:
    """Check a scope for missing and contradictory parts; ``ValidationError`` names them all."""
    errors: dict[str, list[str]] = {
        name: []
        for name in ("role", "purposes", "channels", "territories", "valid_from", "valid_until")
    }
    if role not in ConsentRole.values:
        errors["role"].append(f"Role must be one of {', '.join(ConsentRole.values)}.")
    purpose_rows = _vocabulary(Purpose, _unique(purposes), "purposes", errors)
    channel_rows = _vocabulary(Channel, _unique(channels), "channels", errors)
    territory_codes = [code.upper() for code in _unique(territories)]
    territory_rows = _vocabulary(Territory, territory_codes, "territories", errors)
    commercial = [p.code for p in purpose_rows if p.is_commercial]
    if commercial and not commercial_use:
        errors["purposes"].append(
            f"Purposes {', '.join(commercial)} are commercial, but the consent does not allow "
            "commercial use."
        )
    if WORLDWIDE in territory_codes and len(territory_codes) > 1:
        errors["territories"].append(
            f"{WORLDWIDE} (worldwide) already covers every territory: list either {WORLDWIDE} "
            "or specific territories, not both."
        )
    if timezone.is_naive(valid_from):
        errors["valid_from"].append("Give a time zone.")
    if valid_until is not None:
        if timezone.is_naive(valid_until):
            errors["valid_until"].append("Give a time zone.")
        elif not timezone.is_naive(valid_from) and valid_until <= valid_from:
            errors["valid_until"].append("The validity ends before it starts.")
    problems = {field: messages for field, messages in errors.items() if messages}
    if problems:
        raise ValidationError(problems)
    return ConsentScope(
        role=ConsentRole(role),
        purposes=purpose_rows,
        channels=channel_rows,
        territories=territory_rows,
        commercial_use=commercial_use,
        valid_from=valid_from,
        valid_until=valid_until,
    )


def _evidence_check(
    signed_form: File | None, statement_video: File | None
) -> tuple[CheckedUpload | None, CheckedUpload | None]:
    if signed_form is None and statement_video is None:
        raise ValidationError(
            {"evidence": "Attach the signed consent form, the recorded consent statement, or both."}
        )
    errors: dict[str, list[str]] = {}
    checked: list[CheckedUpload | None] = []
    for upload, kind, field in (
        (signed_form, EvidenceKind.SIGNED_FORM, "signed_form"),
        (statement_video, EvidenceKind.STATEMENT_VIDEO, "statement_video"),
    ):
        if upload is None:
            checked.append(None)
            continue
        try:
            checked.append(evidence_check(upload=upload, kind=kind, field=field))
        except ValidationError as exc:
            errors.update(exc.message_dict)
            checked.append(None)
    if errors:
        raise ValidationError(errors)
    return checked[0], checked[1]


def _consent_insert(
    *,
    person: Person,
    scope: ConsentScope,
    signed_form: CheckedUpload | None,
    statement_video: CheckedUpload | None,
    notes: str,
    supersedes: ConsentRecord | None,
    acting_user: User,
    stored: StoredFiles,
) -> ConsentRecord:
    form = (
        evidence_store(checked=signed_form, acting_user=acting_user, stored=stored)
        if signed_form
        else None
    )
    video = (
        evidence_store(checked=statement_video, acting_user=acting_user, stored=stored)
        if statement_video
        else None
    )
    consent = ConsentRecord.objects.create(
        person=person,
        role=scope.role,
        commercial_use=scope.commercial_use,
        valid_from=scope.valid_from,
        valid_until=scope.valid_until,
        signed_form=form,
        statement_video=video,
        notes=notes.strip(),
        recorded_by=acting_user,
        recorded_at=timezone.now(),
        supersedes=supersedes,
    )
    consent.purposes.set(scope.purposes)
    consent.channels.set(scope.channels)
    consent.territories.set(scope.territories)
    evidence = [evidence_payload(e) for e in (form, video) if e is not None]
    audit_event_record(
        actor=acting_user,
        action=AuditAction.CONSENT_RECORD,
        target_type="governance.consentrecord",
        target_id=consent.pk,
        payload={
            "person_id": person.pk,
            **scope.audit_payload(),
            "evidence": evidence,
            "supersedes": supersedes.pk if supersedes else None,
        },
    )
    return consent


def consent_record_create(
    *,
    person: Person,
    role: str,
    purposes: Sequence[str],
    channels: Sequence[str],
    territories: Sequence[str],
    commercial_use: bool,
    valid_from: datetime,
    valid_until: datetime | None = None,
    signed_form: File | None = None,
    statement_video: File | None = None,
    notes: str = "",
    acting_user: User,
) -> ConsentRecord:
    """Record a person's consent from its evidence (a signed PDF form and/or a statement video).

    Everything is validated before anything is written: a refused consent leaves no row, no
    file and no audit event.
    """
    scope = consent_scope_validate(
        role=role,
        purposes=purposes,
        channels=channels,
        territories=territories,
        commercial_use=commercial_use,
        valid_from=valid_from,
        valid_until=valid_until,
    )
    form, video = _evidence_check(signed_form, statement_video)
    with evidence_files_cleanup_on_error() as stored, transaction.atomic(durable=True):
        return _consent_insert(
            person=person,
            scope=scope,
            signed_form=form,
            statement_video=video,
            notes=notes,
            supersedes=None,
            acting_user=acting_user,
            stored=stored,
        )


def _lock_active(consent: ConsentRecord, verb: str) -> ConsentRecord:
    locked = ConsentRecord.objects.select_for_update().get(pk=consent.pk)
    if locked.status != ConsentStatus.ACTIVE:
        extra: dict[str, object] = {"consent_id": locked.pk, "status": locked.status}
        if locked.status == ConsentStatus.SUPERSEDED:
            extra["superseded_by"] = locked.superseded_by.pk
        raise ApplicationError(
            CONSENT_NOT_ACTIVE.format(id=locked.pk, status=locked.status, verb=verb),
            code="consent_not_active",
            extra=extra,
            status_code=status.HTTP_409_CONFLICT,
        )
    return locked


def _dispatch_revocation(
    consent: ConsentRecord, acting_user: User, superseded_by: ConsentRecord | None
) -> None:
    assert consent.ended_at is not None
    consent_revocation_handlers.dispatch(
        ConsentRevocation(
            consent_id=consent.pk,
            person_id=consent.person_id,
            acting_user_id=acting_user.pk,
            reason=consent.end_reason,
            revoked_at=consent.ended_at,
            superseded_by_id=superseded_by.pk if superseded_by else None,
        )
    )


def consent_supersede(
    *,
    consent: ConsentRecord,
    reason: str,
    role: str,
    purposes: Sequence[str],
    channels: Sequence[str],
    territories: Sequence[str],
    commercial_use: bool,
    valid_from: datetime,
    valid_until: datetime | None = None,
    signed_form: File | None = None,
    statement_video: File | None = None,
    notes: str = "",
    acting_user: User,
) -> ConsentRecord:
    """Replace an active consent with a new record for the same person (new evidence, new
    scope). The old one ends as *superseded*; revocation handlers are told, with the
    replacement's id, so uses outside the new scope stop."""
    if not reason.strip():
        raise ValidationError({"reason": CONSENT_REASON_REQUIRED.format(what="supersession")})
    scope = consent_scope_validate(
        role=role,
        purposes=purposes,
        channels=channels,
        territories=territories,
        commercial_use=commercial_use,
        valid_from=valid_from,
        valid_until=valid_until,
    )
    form, video = _evidence_check(signed_form, statement_video)
    with evidence_files_cleanup_on_error() as stored, transaction.atomic(durable=True):
        old = _lock_active(consent, "superseded")
        new = _consent_insert(
            person=old.person,
            scope=scope,
            signed_form=form,
            statement_video=video,
            notes=notes,
            supersedes=old,
            acting_user=acting_user,
            stored=stored,
        )
        old.status = ConsentStatus.SUPERSEDED
        old.ended_at = new.recorded_at
        old.ended_by = acting_user
        old.end_reason = reason.strip()
        old.save(update_fields=["status", "ended_at", "ended_by", "end_reason"])
        audit_event_record(
            actor=acting_user,
            action=AuditAction.CONSENT_SUPERSEDE,
            target_type="governance.consentrecord",
            target_id=old.pk,
            payload={"person_id": old.person_id, "superseded_by": new.pk, "reason": old.end_reason},
        )
        _dispatch_revocation(old, acting_user, superseded_by=new)
    consent.refresh_from_db()
    return new


@transaction.atomic(durable=True)
def consent_revoke(*, consent: ConsentRecord, reason: str, acting_user: User) -> ConsentRecord:
    """Revoke an active consent (the person withdrew it, or it was recorded in error).

    In the same transaction the registered revocation handlers run (``governance.hooks``): the
    jobs side blocks pending requests, cancels running jobs and withdraws published outputs. If
    any of them fails, nothing is revoked.
    """
    if not reason.strip():
        raise ValidationError({"reason": CONSENT_REASON_REQUIRED.format(what="revocation")})
    locked = _lock_active(consent, "revoked")
    locked.status = ConsentStatus.REVOKED
    locked.ended_at = timezone.now()
    locked.ended_by = acting_user
    locked.end_reason = reason.strip()
    locked.save(update_fields=["status", "ended_at", "ended_by", "end_reason"])
    audit_event_record(
        actor=acting_user,
        action=AuditAction.CONSENT_REVOKE,
        target_type="governance.consentrecord",
        target_id=locked.pk,
        payload={"person_id": locked.person_id, "reason": locked.end_reason},
    )
    _dispatch_revocation(locked, acting_user, superseded_by=None)
    return locked


@transaction.atomic(durable=True)
def consent_evidence_download_record(
    *, consent: ConsentRecord, kind: str, acting_user: User
) -> EvidenceFile | None:
    """Record that ``acting_user`` downloads one evidence file of a consent; ``None`` when the
    consent has no evidence of that kind (nothing is recorded then)."""
    evidence = {
        EvidenceKind.SIGNED_FORM: consent.signed_form,
        EvidenceKind.STATEMENT_VIDEO: consent.statement_video,
    }.get(EvidenceKind(kind))
    if evidence is None:
        return None
    audit_event_record(
        actor=acting_user,
        action=AuditAction.CONSENT_EVIDENCE_DOWNLOAD,
        target_type="governance.consentrecord",
        target_id=consent.pk,
        payload=evidence_payload(evidence),
    )
    return evidence
