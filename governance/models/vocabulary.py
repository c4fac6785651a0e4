"""The configurable vocabularies a consent's scope is written in.

They are database rows (not settings) because compliance officers change them at run time in
the admin (audited through ``governance.services.vocabulary``), consents point at them with
protected foreign keys (an entry a consent mentions can be retired but never deleted, so a
recorded scope never silently shrinks), and a data migration seeds a default set. The primary
key is the stable code itself, so stored scopes and audit payloads read as codes.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

code_validator = RegexValidator(
    r"^[a-z][a-z0-9_]{1,63}$", "Use lower-case letters, digits and underscores."
)
territory_code_validator = RegexValidator(
    r"^[A-Z]{2}$", "Use an ISO 3166-1 alpha-2 code, or WW for worldwide."
)

WORLDWIDE = "WW"


class RiskLevel(models.TextChoices):
    LOW = "low", "Low"
    STANDARD = "standard", "Standard"
    HIGH = "high", "High"


class VocabularyEntry(models.Model):
    """Shared fields: a retired entry (``is_active=False``) cannot be used in new consents or
    requests but keeps its meaning for the records that already use it."""

    label = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)

    class Meta:
        abstract = True
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.pk} ({self.label})"


class Purpose(VocabularyEntry):
    """What a reenactment is made for. ``is_commercial`` purposes need a consent that allows
    commercial use; ``risk_level`` picks the approval policy when no purpose-specific one
    exists."""

    code = models.CharField(max_length=64, primary_key=True, validators=[code_validator])
    description = models.TextField(blank=True)
    is_commercial = models.BooleanField(default=False)
    risk_level = models.CharField(
        max_length=16, choices=RiskLevel.choices, default=RiskLevel.STANDARD
    )

    class Meta(VocabularyEntry.Meta):
        pass


class Channel(VocabularyEntry):
    """Where an output may be distributed (internal, web, social, broadcast, ...)."""

    code = models.CharField(max_length=64, primary_key=True, validators=[code_validator])

    class Meta(VocabularyEntry.Meta):
        pass


class Territory(VocabularyEntry):
    """An ISO 3166-1 alpha-2 country or ``WW`` (worldwide, which covers every territory)."""

    code = models.CharField(max_length=2, primary_key=True, validators=[territory_code_validator])

    class Meta(VocabularyEntry.Meta):
        verbose_name_plural = "territories"
