"""Downloads of published outputs through short-lived signed links, permission-checked and
audited at both ends (when the link is made and when it is used)."""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.db import transaction

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.models import User
from governance.services.audit import audit_event_record
from reenactment.models import RenderJob, RenderJobStatus
from reenactment.services.jobs import SUBJECT_TYPE

SALT = "reenactment.download"


class DownloadRefusedError(ApplicationError):
    status_code = 410


def _assert_downloadable(job: RenderJob) -> None:
    if job.status != RenderJobStatus.PUBLISHED or not job.output:
        reason = "was withdrawn" if job.status == RenderJobStatus.WITHDRAWN else "is not published"
        raise DownloadRefusedError(
            f"The output of render job #{job.pk} {reason}.", code="not_downloadable"
        )


@transaction.atomic(durable=True)
def render_job_download_link_create(*, job: RenderJob, acting_user: User) -> tuple[str, int]:
    """A token for ``acting_user`` valid ``DOWNLOAD_LINK_SECONDS``; (token, seconds)."""
    _assert_downloadable(job)
    token = signing.dumps(
        {"job": job.pk, "user": acting_user.pk, "sha": job.output_sha256}, salt=SALT
    )
    audit_event_record(
        actor=acting_user,
        action=AuditAction.RENDER_JOB_DOWNLOAD_LINK,
        target_type=SUBJECT_TYPE,
        target_id=job.pk,
        payload={"expires_in": settings.DOWNLOAD_LINK_SECONDS},
    )
    return token, settings.DOWNLOAD_LINK_SECONDS


@transaction.atomic(durable=True)
def render_job_download_redeem(*, token: str, acting_user: User) -> RenderJob:
    """Check the token (signature, age, user, still the same published file) and audit it."""
    try:
        data = signing.loads(token, salt=SALT, max_age=settings.DOWNLOAD_LINK_SECONDS)
    except signing.SignatureExpired:
        raise DownloadRefusedError("This download link has expired.", code="link_expired") from None
    except signing.BadSignature:
        raise ApplicationError("This download link is not valid.", code="bad_link") from None
    if data.get("user") != acting_user.pk:
        raise ApplicationError(
            "This download link was issued to another user.", code="bad_link", status_code=403
        )
    job = RenderJob.objects.filter(pk=data.get("job")).first()
    if job is None:
        raise ApplicationError("Not found.", code="not_found", status_code=404)
    _assert_downloadable(job)
    if job.output_sha256 != data.get("sha"):
        raise DownloadRefusedError("The output changed since the link was made.", code="stale_link")
    audit_event_record(
        actor=acting_user,
        action=AuditAction.RENDER_JOB_DOWNLOAD,
        target_type=SUBJECT_TYPE,
        target_id=job.pk,
        payload={"output_sha256": job.output_sha256},
    )
    return job
