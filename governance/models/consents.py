from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from governance.models.evidence import EvidenceFile
from governance.models.persons import Person
from governance.models.vocabulary import Channel, Purpose, Territory


class ConsentRole(models.TextChoices):
    """The part a person plays in a reenactment."""

    PORTRAIT_SUBJECT = "portrait_subject", "Portrait subject (their face is animated)"
    DRIVING_PERFORMER = "driving_performer", "Driving performer (their motion drives it)"
    BOTH = "both", "Both portrait subject and driving performer"

    def covers(self, role: str) -> bool:
        return self == ConsentRole.BOTH or self == role


class ConsentStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUPERSEDED = "superseded", "Superseded"
    REVOKED = "revoked", "Revoked"


class ConsentRecord(models.Model):
    """What a person agreed to, as recorded from the evidence.

    A record is never edited. Its scope (``role``, ``purposes``, ``channels``, ``territories``,
    ``commercial_use``, the validity window ``[valid_from, valid_until)``; an empty
    ``valid_until`` means "until revoked") is fixed when it is recorded. It ends in one of two
    ways, once: *superseded* by a newer record for the same person (``superseded_by``), or
    *revoked*. ``ended_at``/``ended_by``/``end_reason`` say when, who and why; they are empty
    exactly while the record is active. ``recorded_by`` is the platform user who recorded the
    consent; the evidence (a signed form and/or a recorded statement video) is what the person
    agreed to.
    """

    person = models.ForeignKey(Person, on_delete=models.PROTECT, related_name="consents")
    role = models.CharField(max_length=32, choices=ConsentRole.choices)
    purposes = models.ManyToManyField(Purpose, through="ConsentPurpose", related_name="+")
    channels = models.ManyToManyField(Channel, through="ConsentChannel", related_name="+")
    territories = models.ManyToManyField(Territory, through="ConsentTerritory", related_name="+")
    commercial_use = models.BooleanField()
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField(null=True, blank=True)
    signed_form = models.OneToOneField(
        EvidenceFile, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    statement_video = models.OneToOneField(
        EvidenceFile, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    notes = models.TextField(blank=True)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    recorded_at = models.DateTimeField()
    supersedes = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="superseded_by"
    )
    status = models.CharField(
        max_length=16, choices=ConsentStatus.choices, default=ConsentStatus.ACTIVE
    )
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    end_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-recorded_at", "-id"]
        permissions = [
            ("supersede_consentrecord", "Can supersede a consent record"),
            ("revoke_consentrecord", "Can revoke a consent record"),
            ("download_consent_evidence", "Can download a consent's evidence files"),
        ]
        indexes = [models.Index(fields=["person", "status"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(valid_until__isnull=True) | Q(valid_until__gt=F("valid_from")),
                name="consent_validity_ends_after_start",
            ),
            models.CheckConstraint(
                condition=Q(signed_form__isnull=False) | Q(statement_video__isnull=False),
                name="consent_has_evidence",
            ),
            models.CheckConstraint(
                condition=(
                    Q(status=ConsentStatus.ACTIVE, ended_at__isnull=True, ended_by__isnull=True)
                    | (~Q(status=ConsentStatus.ACTIVE) & Q(ended_at__isnull=False))
                ),
                name="consent_ended_iff_not_active",
            ),
        ]

    def __str__(self) -> str:
        return f"Consent #{self.pk} of person #{self.person_id} ({self.status})"


class ConsentPurpose(models.Model):
    consent = models.ForeignKey(ConsentRecord, on_delete=models.CASCADE)
    purpose = models.ForeignKey(Purpose, on_delete=models.PROTECT)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["consent", "purpose"], name="consent_purpose_once")
        ]

    def __str__(self) -> str:
        return f"{self.purpose_id} in consent #{self.consent_id}"


class ConsentChannel(models.Model):
    consent = models.ForeignKey(ConsentRecord, on_delete=models.CASCADE)
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["consent", "channel"], name="consent_channel_once")
        ]

    def __str__(self) -> str:
        return f"{self.channel_id} in consent #{self.consent_id}"


class ConsentTerritory(models.Model):
    consent = models.ForeignKey(ConsentRecord, on_delete=models.CASCADE)
    territory = models.ForeignKey(Territory, on_delete=models.PROTECT)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["consent", "territory"], name="consent_territory_once")
        ]
        verbose_name_plural = "consent territories"

    def __str__(self) -> str:
        return f"{self.territory_id} in consent #{self.consent_id}"
