from __future__ import annotations

from django.conf import settings
from django.db import models

from governance.models.evidence import EvidenceFile


class Person(models.Model):
    """Someone who may appear in a reenactment: as the portrait subject, as the driving
    performer, or both (each only under a valid ``ConsentRecord``).

    ``reference_photo`` is the identity reference that was checked against an identity document
    when the person was enrolled (``identity_verified_by``/``identity_verification_note``).
    No face embedding is stored here (biometric minimisation): matching computes what it needs
    from the photo when it runs.
    """

    full_name = models.CharField(max_length=200)
    external_reference = models.CharField(
        max_length=100, blank=True, help_text="An identifier in another system (HR, talent agency)."
    )
    reference_photo = models.OneToOneField(
        EvidenceFile, on_delete=models.PROTECT, related_name="person"
    )
    identity_verification_note = models.TextField(
        help_text="How the identity was verified (document type, in person or remote)."
    )
    identity_verified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["full_name", "id"]
        permissions = [("download_person_evidence", "Can download a person's reference photo")]

    def __str__(self) -> str:
        return f"{self.full_name} (#{self.pk})"
