from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class EvidenceKind(models.TextChoices):
    REFERENCE_PHOTO = "reference_photo", "Identity reference photo"
    SIGNED_FORM = "signed_form", "Signed consent form"
    STATEMENT_VIDEO = "statement_video", "Recorded consent statement video"


class EvidenceFile(models.Model):
    """An immutable file kept as evidence (a reference photo, a signed form, a recorded consent
    statement). ``sha256`` and ``size_bytes`` were computed while the upload streamed in and
    are checked again on every download; ``content_type`` was detected from the file's bytes,
    never taken from its name or the client's header. The stored name is random: the original
    file name stays out of storage paths."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=32, choices=EvidenceKind.choices)
    file = models.FileField(max_length=255)
    sha256 = models.CharField(max_length=64, db_index=True)
    size_bytes = models.PositiveBigIntegerField()
    content_type = models.CharField(max_length=64)
    original_name = models.CharField(max_length=255, blank=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    uploaded_at = models.DateTimeField()

    class Meta:
        ordering = ["-uploaded_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.sha256[:12]}"
