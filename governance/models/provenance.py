from __future__ import annotations

from django.db import models
from django.utils import timezone


class ProvenanceStatus(models.TextChoices):
    """The adapter's ``VerificationStatus`` (same names), stored lower-case."""

    TRUSTED = "trusted", "Trusted"
    VALID_UNTRUSTED = "valid_untrusted", "Valid but untrusted"
    INVALID = "invalid", "Invalid"
    NO_MANIFEST = "no_manifest", "No manifest"

    @classmethod
    def of(cls, status: object) -> ProvenanceStatus:
        """From the adapter's ``VerificationStatus`` (matched by name)."""
        return cls[getattr(status, "name", str(status)).upper()]


class ProvenanceRecord(models.Model):
    """The C2PA Content Credentials embedded in one published file.

    ``file_sha256`` is the hash of the *signed* file (what is stored and downloaded);
    ``manifest_json`` the manifest store read back from it; ``status`` and ``validation_state``
    the verification of that read-back at signing time; ``signer_cert_sha256`` the fingerprint
    of the leaf certificate that signed. Publication requires a record whose status is trusted
    (or valid, where no trust anchors are configured) for the exact stored file.
    """

    subject_type = models.CharField(max_length=100)
    subject_id = models.CharField(max_length=64)
    file_sha256 = models.CharField(max_length=64)
    source_sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=20, choices=ProvenanceStatus.choices)
    validation_state = models.CharField(max_length=40, blank=True)
    active_manifest_label = models.CharField(max_length=200, blank=True)
    signer_cert_sha256 = models.CharField(max_length=64)
    manifest_json = models.TextField()
    org_assertion = models.JSONField(default=dict)
    manifest_size = models.PositiveIntegerField(default=0)
    signed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["subject_type", "subject_id"])]
        ordering = ["-signed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.subject_type} #{self.subject_id}: {self.status}"
