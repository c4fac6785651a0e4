"""Evidence files: checked by content, hashed while streamed, stored through Django's default
storage (django-storages), verified again on the way out.

An upload is read once, in chunks, before anything is written: the first bytes decide the
content type (magic numbers, never the name or the client's Content-Type), the size is counted
against the kind's limit (``GOVERNANCE_EVIDENCE_MAX_*_BYTES``) and the SHA-256 is computed. Only
a file that passes is written, under a random name. ``evidence_files_cleanup_on_error`` removes
files written by a transaction that then fails, so a refused request leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.utils import timezone

from config.api import ApplicationError
from governance.models import EvidenceFile, EvidenceKind, User

CHUNK_SIZE = 1024 * 1024

# content type -> file extension, per kind of evidence.
ALLOWED_TYPES: dict[str, dict[str, str]] = {
    EvidenceKind.REFERENCE_PHOTO: {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"},
    EvidenceKind.SIGNED_FORM: {"application/pdf": "pdf"},
    EvidenceKind.STATEMENT_VIDEO: {
        "video/mp4": "mp4",
        "video/quicktime": "mov",
        "video/webm": "webm",
    },
}
SIZE_SETTINGS: dict[str, str] = {
    EvidenceKind.REFERENCE_PHOTO: "GOVERNANCE_EVIDENCE_MAX_PHOTO_BYTES",
    EvidenceKind.SIGNED_FORM: "GOVERNANCE_EVIDENCE_MAX_DOCUMENT_BYTES",
    EvidenceKind.STATEMENT_VIDEO: "GOVERNANCE_EVIDENCE_MAX_VIDEO_BYTES",
}
_QUICKTIME_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


def sniff_content_type(head: bytes) -> str | None:
    """The media type that the first bytes of a file announce, among those evidence may be."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head[4:8] in _QUICKTIME_ATOMS:
        return "video/quicktime"
    if head.startswith(b"\x1a\x45\xdf\xa3") and b"webm" in head[:64]:
        return "video/webm"
    return None


def evidence_max_bytes(kind: str) -> int:
    return int(getattr(settings, SIZE_SETTINGS[kind]))


@dataclass(frozen=True)
class CheckedUpload:
    upload: File
    kind: str
    content_type: str
    sha256: str
    size_bytes: int


def _human(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB" if size >= 1024 * 1024 else f"{size} bytes"


def evidence_check(*, upload: File, kind: str, field: str) -> CheckedUpload:
    """Validate and hash an upload; ``ValidationError`` on ``field`` when it is refused."""
    limit = evidence_max_bytes(kind)
    allowed = ALLOWED_TYPES[kind]
    if upload.size is not None and upload.size > limit:
        raise ValidationError(
            {field: f"The file is {_human(upload.size)}; the limit is {_human(limit)}."}
        )
    digest = hashlib.sha256()
    size = 0
    content_type: str | None = None
    upload.seek(0)
    for chunk in upload.chunks(CHUNK_SIZE):
        if not chunk:
            continue
        if content_type is None:
            content_type = sniff_content_type(bytes(chunk[:64]))
            if content_type not in allowed:
                what = content_type or "an unrecognised format"
                raise ValidationError(
                    {field: f"The file's content is {what}; expected {', '.join(allowed)}."}
                )
        size += len(chunk)
        if size > limit:
            raise ValidationError({field: f"The file exceeds the limit of {_human(limit)}."})
        digest.update(chunk)
    if content_type is None or size == 0:
        raise ValidationError({field: "The file is empty."})
    upload.seek(0)
    return CheckedUpload(upload, kind, content_type, digest.hexdigest(), size)


class StoredFiles(list[str]):
    """Names written to storage by one transaction (see ``evidence_files_cleanup_on_error``)."""


@contextmanager
def evidence_files_cleanup_on_error() -> Iterator[StoredFiles]:
    """Wrap a service's outermost transaction: if it raises, delete the files it stored."""
    stored = StoredFiles()
    try:
        yield stored
    except BaseException:
        for name in stored:
            default_storage.delete(name)
        raise


def evidence_store(
    *, checked: CheckedUpload, acting_user: User, stored: StoredFiles
) -> EvidenceFile:
    """Write a checked upload to storage and record it. Call inside a transaction."""
    extension = ALLOWED_TYPES[checked.kind][checked.content_type]
    name = f"governance/evidence/{checked.kind}/{uuid.uuid4().hex}.{extension}"
    checked.upload.seek(0)
    saved_name = default_storage.save(name, checked.upload)
    stored.append(saved_name)
    return EvidenceFile.objects.create(
        kind=checked.kind,
        file=saved_name,
        sha256=checked.sha256,
        size_bytes=checked.size_bytes,
        content_type=checked.content_type,
        original_name=(getattr(checked.upload, "name", "") or "")[-255:],
        uploaded_by=acting_user,
        uploaded_at=timezone.now(),
    )


def evidence_payload(evidence: EvidenceFile) -> dict[str, object]:
    """What audit events say about an evidence file: identity and hash, never its content."""
    return {
        "evidence_id": str(evidence.public_id),
        "kind": evidence.kind,
        "sha256": evidence.sha256,
        "content_type": evidence.content_type,
        "size_bytes": evidence.size_bytes,
    }


def evidence_verify(*, evidence: EvidenceFile) -> None:
    """Re-hash the stored file; ``ApplicationError`` (500) if it no longer matches."""
    digest = hashlib.sha256()
    name = evidence.file.name
    assert name is not None
    try:
        with default_storage.open(name, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ApplicationError(
            f"Evidence file {evidence.public_id} cannot be read from storage.",
            code="evidence_missing",
            status_code=500,
        ) from exc
    if digest.hexdigest() != evidence.sha256:
        raise ApplicationError(
            f"Evidence file {evidence.public_id} does not match its recorded SHA-256.",
            code="evidence_integrity_failed",
            status_code=500,
        )
