"""Test data. Plain rows come from factory_boy factories; governance objects (persons,
consents, approval requests, role memberships) are created through the real services, so the
audit rows exist exactly as in production (ARCHITECTURE.md §5).

Evidence files are real files of each accepted format, made on the fly: JPEG/PNG/WebP by
Pillow, a minimal but well-formed PDF, and MP4/MOV/WebM encoded by PyAV.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import av
import factory
import numpy as np
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from factory.django import DjangoModelFactory
from PIL import Image

from governance.models import (
    ApprovalPolicy,
    ApprovalRequest,
    ConsentRecord,
    ConsentRole,
    Person,
    Purpose,
    User,
)
from governance.roles import Role
from governance.services.approvals import approval_policy_create, approval_request_create
from governance.services.consents import consent_record_create
from governance.services.persons import person_create
from governance.services.roles import role_grant

PASSWORD = "correct horse battery staple"


class UserFactory(DjangoModelFactory[User]):
    """A platform user; ``roles=[Role.REVIEWER, ...]`` grants roles through ``role_grant``."""

    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password(PASSWORD)

    @factory.post_generation
    def roles(self, create: bool, extracted: Sequence[Role] | None, **kwargs: Any) -> None:
        if not create or not extracted:
            return
        for role in extracted:
            role_grant(user=self, role=role, acting_user=None)


# --- evidence files ---------------------------------------------------------------------------


def _image_bytes(fmt: str) -> bytes:
    pixels = np.zeros((48, 48, 3), dtype=np.uint8)
    pixels[..., 0] = np.linspace(0, 255, 48, dtype=np.uint8)[None, :]
    pixels[..., 1] = np.linspace(0, 255, 48, dtype=np.uint8)[:, None]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@lru_cache
def jpeg_bytes() -> bytes:
    return _image_bytes("JPEG")


@lru_cache
def png_bytes() -> bytes:
    return _image_bytes("PNG")


@lru_cache
def webp_bytes() -> bytes:
    return _image_bytes("WEBP")


@lru_cache
def pdf_bytes() -> bytes:
    """A one-page PDF with a correct cross-reference table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _video_bytes(container: str, codec: str) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=10)
        stream.width = 32
        stream.height = 32
        stream.pix_fmt = "yuv420p"
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(
                np.full((32, 32, 3), index * 60, dtype=np.uint8), format="rgb24"
            )
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()


@lru_cache
def mp4_bytes() -> bytes:
    return _video_bytes("mp4", "mpeg4")


@lru_cache
def mov_bytes() -> bytes:
    return _video_bytes("mov", "mpeg4")


@lru_cache
def webm_bytes() -> bytes:
    return _video_bytes("webm", "libvpx")


def upload(data: bytes, name: str, content_type: str = "application/octet-stream") -> Any:
    """An uploaded file as a view or service receives it."""
    return SimpleUploadedFile(name, data, content_type=content_type)


def photo_upload(name: str = "photo.jpg") -> Any:
    return upload(jpeg_bytes(), name, "image/jpeg")


def form_upload(name: str = "consent.pdf") -> Any:
    return upload(pdf_bytes(), name, "application/pdf")


def video_upload(name: str = "statement.mp4") -> Any:
    return upload(mp4_bytes(), name, "video/mp4")


# --- governance objects, through the services -------------------------------------------------


def create_person(*, acting_user: User, **overrides: Any) -> Person:
    values: dict[str, Any] = {
        "full_name": "Ada Example",
        "reference_photo": photo_upload(),
        "identity_verification_note": "Passport checked in person.",
    }
    values.update(overrides)
    return person_create(**values, acting_user=acting_user)


def create_consent(*, person: Person, acting_user: User, **overrides: Any) -> ConsentRecord:
    """A consent valid from yesterday for a year: portrait subject, internal training video
    and research, internal and web channels, Germany and France, non-commercial."""
    now = timezone.now()
    values: dict[str, Any] = {
        "role": ConsentRole.PORTRAIT_SUBJECT,
        "purposes": ["internal_training_video", "research"],
        "channels": ["internal", "web"],
        "territories": ["DE", "FR"],
        "commercial_use": False,
        "valid_from": now - timedelta(days=1),
        "valid_until": now + timedelta(days=365),
        "signed_form": form_upload(),
    }
    values.update(overrides)
    return consent_record_create(person=person, **values, acting_user=acting_user)


def create_policy(
    *,
    step_roles: Sequence[Role] = (Role.REVIEWER, Role.COMPLIANCE_OFFICER),
    purpose: Purpose | str | None = None,
    risk_level: str = "",
    approval_ttl: timedelta = timedelta(hours=72),
    name: str | None = None,
    acting_user: User | None = None,
) -> ApprovalPolicy:
    purpose_row = Purpose.objects.get(pk=purpose) if isinstance(purpose, str) else purpose
    return approval_policy_create(
        name=name or f"policy {purpose_row.pk if purpose_row else risk_level}",
        purpose=purpose_row,
        risk_level=risk_level,
        step_roles=list(step_roles),
        approval_ttl=approval_ttl,
        acting_user=acting_user,
    )


_subjects = iter(range(1, 10**9))


def create_approval_request(
    *,
    requested_by: User,
    purpose: str = "research",
    subject_type: str = "reenactment.renderjob",
    subject_id: int | str | None = None,
    summary: str = "",
) -> ApprovalRequest:
    return approval_request_create(
        purpose=purpose,
        subject_type=subject_type,
        subject_id=subject_id if subject_id is not None else next(_subjects),
        requested_by=requested_by,
        acting_user=requested_by,
        summary=summary,
    )


def aware(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)
