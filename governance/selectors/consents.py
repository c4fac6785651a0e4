from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from django.core.exceptions import ValidationError
from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone
from rest_framework import status

from config.api import ApplicationError
from governance.models import (
    WORLDWIDE,
    Channel,
    ConsentRecord,
    ConsentRole,
    ConsentStatus,
    Person,
    Purpose,
    Territory,
)


class ConsentCondition(StrEnum):
    """Which condition of ``consent_assert_valid`` failed, in the order they are checked."""

    NO_CONSENT = "no_consent"
    REVOKED = "revoked"
    SUPERSEDED = "superseded"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    ROLE = "role"
    PURPOSE = "purpose"
    COMMERCIAL = "commercial"
    CHANNEL = "channel"
    TERRITORY = "territory"


class ConsentInvalidError(ApplicationError):
    """No consent of the person covers the use. ``condition`` says which check failed (for the
    consent that came closest), ``consent_id`` which consent that was (``None`` when the person
    has none); ``checked`` lists every consent looked at with its first failing condition."""

    def __init__(
        self,
        message: str,
        *,
        condition: ConsentCondition,
        person_id: int,
        consent_id: int | None,
        checked: Sequence[tuple[int, ConsentCondition]] = (),
    ) -> None:
        super().__init__(
            message,
            code="consent_invalid",
            status_code=status.HTTP_409_CONFLICT,
            extra={
                "condition": condition.value,
                "person_id": person_id,
                "consent_id": consent_id,
                "checked": [{"consent_id": c, "condition": cond.value} for c, cond in checked],
            },
        )
        self.condition = condition
        self.person_id = person_id
        self.consent_id = consent_id


@dataclass(frozen=True)
class _Failure:
    condition: ConsentCondition
    message: str


def _codes(rows: Sequence[Purpose | Channel | Territory]) -> str:
    return ", ".join(sorted(str(row.pk) for row in rows)) or "none"


def _first_failure(
    consent: ConsentRecord,
    *,
    role: str,
    purpose: Purpose,
    channel: str,
    territory: str,
    at: datetime,
) -> _Failure | None:
    name = f"Consent #{consent.pk} of person #{consent.person_id}"
    if consent.ended_at is not None and consent.ended_at <= at:
        if consent.status == ConsentStatus.REVOKED:
            return _Failure(
                ConsentCondition.REVOKED, f"{name} was revoked at {consent.ended_at.isoformat()}."
            )
        return _Failure(
            ConsentCondition.SUPERSEDED,
            f"{name} was superseded at {consent.ended_at.isoformat()} by a newer consent.",
        )
    if consent.valid_from > at:
        return _Failure(
            ConsentCondition.NOT_YET_VALID,
            f"{name} is valid only from {consent.valid_from.isoformat()}.",
        )
    if consent.valid_until is not None and consent.valid_until <= at:
        return _Failure(
            ConsentCondition.EXPIRED, f"{name} expired at {consent.valid_until.isoformat()}."
        )
    if not ConsentRole(consent.role).covers(role):
        return _Failure(
            ConsentCondition.ROLE, f"{name} covers the role {consent.role}, not {role}."
        )
    purposes = list(consent.purposes.all())
    if purpose.pk not in {p.pk for p in purposes}:
        return _Failure(
            ConsentCondition.PURPOSE,
            f"{name} does not cover the purpose {purpose.pk} (it covers: {_codes(purposes)}).",
        )
    if purpose.is_commercial and not consent.commercial_use:
        return _Failure(
            ConsentCondition.COMMERCIAL,
            f"The purpose {purpose.pk} is commercial and {name} does not allow commercial use.",
        )
    channels = list(consent.channels.all())
    if channel not in {c.pk for c in channels}:
        return _Failure(
            ConsentCondition.CHANNEL,
            f"{name} does not cover the channel {channel} (it covers: {_codes(channels)}).",
        )
    territories = list(consent.territories.all())
    covered = {t.pk for t in territories}
    if WORLDWIDE not in covered and territory not in covered:
        return _Failure(
            ConsentCondition.TERRITORY,
            f"{name} does not cover the territory {territory} (it covers: {_codes(territories)}).",
        )
    return None


def consent_assert_valid(
    *,
    person: Person | int,
    role: str,
    purpose: Purpose | str,
    channel: Channel | str,
    territory: Territory | str,
    at: datetime | None = None,
) -> ConsentRecord:
    """The consent under which ``person`` may appear in ``role`` for ``purpose`` on ``channel``
    in ``territory`` at time ``at`` (default: now); ``ConsentInvalidError`` (409) otherwise,
    saying which condition failed.

    ``role`` is ``"portrait_subject"`` or ``"driving_performer"`` (a consent for ``"both"``
    covers either). A consent counts as it stood at ``at``: one revoked or superseded after
    ``at`` still covered ``at``. Territory ``"WW"`` asks for worldwide distribution, which only a
    worldwide consent covers. The validity window decides, not when the record was entered:
    a consent recorded today for a window that began yesterday covers yesterday.
    """
    at = at or timezone.now()
    person_id = person.pk if isinstance(person, Person) else int(person)
    channel_code = channel.pk if isinstance(channel, Channel) else channel
    territory_code = territory.pk if isinstance(territory, Territory) else territory.upper()
    if role not in (ConsentRole.PORTRAIT_SUBJECT, ConsentRole.DRIVING_PERFORMER):
        raise ValidationError({"role": "Ask for portrait_subject or driving_performer."})
    if isinstance(purpose, str):
        found = Purpose.objects.filter(pk=purpose).first()
        if found is None:
            raise ValidationError({"purpose": f"Unknown purpose {purpose}."})
        purpose = found
    consents = list(
        ConsentRecord.objects.filter(person_id=person_id)
        .prefetch_related("purposes", "channels", "territories")
        .order_by("-recorded_at", "-id")
    )
    if not consents:
        raise ConsentInvalidError(
            f"Person #{person_id} has no consent on record.",
            condition=ConsentCondition.NO_CONSENT,
            person_id=person_id,
            consent_id=None,
        )
    failures: list[tuple[ConsentRecord, _Failure]] = []
    for consent in consents:
        failure = _first_failure(
            consent,
            role=role,
            purpose=purpose,
            channel=channel_code,
            territory=territory_code,
            at=at,
        )
        if failure is None:
            return consent
        failures.append((consent, failure))
    # Report the consent that came closest: the newest one that had not ended at ``at``.
    standing = [
        (c, f)
        for c, f in failures
        if f.condition not in (ConsentCondition.REVOKED, ConsentCondition.SUPERSEDED)
    ]
    consent, failure = (standing or failures)[0]
    raise ConsentInvalidError(
        failure.message,
        condition=failure.condition,
        person_id=person_id,
        consent_id=consent.pk,
        checked=[(c.pk, f.condition) for c, f in failures],
    )


def consent_is_valid_at(consent: ConsentRecord, at: datetime | None = None) -> bool:
    """Whether the record itself stands at ``at`` (not ended, inside its window)."""
    at = at or timezone.now()
    if consent.ended_at is not None and consent.ended_at <= at:
        return False
    return consent.valid_from <= at and (consent.valid_until is None or at < consent.valid_until)


def consent_queryset() -> QuerySet[ConsentRecord]:
    return ConsentRecord.objects.select_related(
        "person", "signed_form", "statement_video", "recorded_by", "ended_by", "superseded_by"
    ).prefetch_related(
        Prefetch("purposes", queryset=Purpose.objects.order_by("code")),
        Prefetch("channels", queryset=Channel.objects.order_by("code")),
        Prefetch("territories", queryset=Territory.objects.order_by("code")),
    )


def consent_list(
    *,
    person_id: int | None = None,
    role: str | None = None,
    purpose: str | None = None,
    channel: str | None = None,
    territory: str | None = None,
    status: str | None = None,
    valid_at: datetime | None = None,
) -> QuerySet[ConsentRecord]:
    """Consents, newest first, filtered. ``role`` matches consents for that role or for both;
    ``territory`` matches consents listing it or worldwide; ``valid_at`` keeps those standing
    at that time."""
    qs = consent_queryset()
    if person_id is not None:
        qs = qs.filter(person_id=person_id)
    if role == ConsentRole.BOTH:
        qs = qs.filter(role=role)
    elif role:
        qs = qs.filter(role__in=[role, ConsentRole.BOTH])
    if purpose:
        qs = qs.filter(purposes__code=purpose)
    if channel:
        qs = qs.filter(channels__code=channel)
    if territory:
        qs = qs.filter(territories__code__in=[territory.upper(), WORLDWIDE])
    if status:
        qs = qs.filter(status=status)
    if valid_at is not None:
        qs = qs.filter(
            Q(ended_at__isnull=True) | Q(ended_at__gt=valid_at),
            Q(valid_until__isnull=True) | Q(valid_until__gt=valid_at),
            valid_from__lte=valid_at,
        )
    return qs.distinct()


def consent_get(*, consent_id: int) -> ConsentRecord | None:
    return consent_queryset().filter(pk=consent_id).first()
