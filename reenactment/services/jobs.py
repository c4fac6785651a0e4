"""Render-job state changes: submission, approval outcomes, cancellation, publication, withdrawal.

Every change of ``RenderJob.status`` goes through :func:`render_job_transition`, which refuses a
transition the state machine does not allow, writes the audit event in the same transaction and
queues the requester's webhooks on commit.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework import status

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.hooks import ApprovalClosed, ApprovalReleased, ConsentRevocation
from governance.models import ApprovalRequest, Person, Purpose, User
from governance.selectors.approvals import approval_request_assert_released
from governance.selectors.consents import consent_assert_valid
from governance.services.approvals import approval_request_cancel, approval_request_create
from governance.services.audit import audit_event_record
from reenactment.models import (
    HELD_OUTPUT,
    PENDING,
    TERMINAL,
    RenderJob,
    RenderJobStatus,
)

logger = logging.getLogger(__name__)

S = RenderJobStatus
SUBJECT_TYPE = "reenactment.renderjob"

STATUS_ACTIONS: Mapping[str, AuditAction] = {
    S.SUBMITTED: AuditAction.RENDER_JOB_SUBMIT,
    S.AWAITING_APPROVAL: AuditAction.RENDER_JOB_AWAIT_APPROVAL,
    S.APPROVED: AuditAction.RENDER_JOB_APPROVE,
    S.QUEUED: AuditAction.RENDER_JOB_QUEUE,
    S.RUNNING: AuditAction.RENDER_JOB_START,
    S.GENERATED: AuditAction.RENDER_JOB_GENERATE,
    S.VERIFYING: AuditAction.RENDER_JOB_VERIFY,
    S.PUBLISHED: AuditAction.RENDER_JOB_PUBLISH,
    S.REJECTED: AuditAction.RENDER_JOB_REJECT,
    S.QUARANTINED: AuditAction.RENDER_JOB_QUARANTINE,
    S.FAILED: AuditAction.RENDER_JOB_FAIL,
    S.CANCELLED: AuditAction.RENDER_JOB_CANCEL,
    S.WITHDRAWN: AuditAction.RENDER_JOB_WITHDRAW,
}


class IllegalTransitionError(ApplicationError):
    status_code = status.HTTP_409_CONFLICT

    def __init__(self, job: RenderJob, to: str) -> None:
        super().__init__(
            f"Render job #{job.pk} cannot go from {job.status} to {to}.",
            code="illegal_transition",
            extra={"from": job.status, "to": to},
        )


def _timestamps(job: RenderJob, to: str, now: Any) -> list[str]:
    fields = []
    stamp = {S.QUEUED: "queued_at", S.RUNNING: "started_at", S.PUBLISHED: "published_at"}.get(to)
    if stamp:
        setattr(job, stamp, now)
        fields.append(stamp)
    if to in TERMINAL or to in (S.GENERATED, S.QUARANTINED):
        job.finished_at = now
        fields.append("finished_at")
    return fields


@transaction.atomic
def render_job_transition(
    *,
    job: RenderJob,
    to: str,
    acting_user: User | None,
    reason: str = "",
    payload: Mapping[str, object] | None = None,
    update_fields: Sequence[str] = (),
) -> RenderJob:
    """Move ``job`` to ``to`` (audited, webhooks on commit); raise if the machine forbids it.

    ``update_fields`` names other fields the caller changed on ``job`` that must be saved with
    the transition, so a state and the data that goes with it are written together.
    """
    if not job.can_transition_to(to):
        raise IllegalTransitionError(job, to)
    previous = job.status
    now = timezone.now()
    job.status = to
    job.status_reason = reason[:500]
    job.status_changed_at = now
    fields = ["status", "status_reason", "status_changed_at", *update_fields]
    fields += _timestamps(job, to, now)
    job.save(update_fields=sorted(set(fields)))
    audit_event_record(
        actor=acting_user,
        action=STATUS_ACTIONS[to],
        target_type=SUBJECT_TYPE,
        target_id=job.pk,
        payload={"from": previous, "to": to, "reason": reason, **(payload or {})},
    )
    from reenactment.services.webhooks import webhook_events_enqueue

    webhook_events_enqueue(job=job, event=f"job.{to}")
    return job


# ---------------------------------------------------------------------------------------------
# Submission
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedInput:
    """An upload already validated by content (see ``reenactment.services.inputs``)."""

    path: Path  # a local temporary file holding the upload's bytes
    sha256: str
    extension: str
    info: dict[str, Any]


def _store_input(checked: CheckedInput) -> tuple[str, bool]:
    """Store under a content-hashed name (identical uploads share one file); (name, created)."""
    name = f"jobs/inputs/{checked.sha256}{checked.extension}"
    if default_storage.exists(name):
        return name, False
    with checked.path.open("rb") as handle:
        saved = default_storage.save(name, File(handle, name=Path(name).name))
    return saved, True


def render_job_consents_assert(
    *,
    portrait_subject: Person,
    performer: Person,
    purpose: Purpose | str,
    channels: Iterable[str],
    territory: str,
    at: Any = None,
) -> list[int]:
    """Both consents must cover the purpose, every channel and the territory; ids of those used."""
    used: list[int] = []
    for channel in channels:
        for person, role in (
            (portrait_subject, "portrait_subject"),
            (performer, "driving_performer"),
        ):
            consent = consent_assert_valid(
                person=person,
                role=role,
                purpose=purpose,
                channel=channel,
                territory=territory,
                at=at,
            )
            used.append(consent.pk)
    return sorted(set(used))


def render_job_submit(
    *,
    requested_by: User,
    portrait: CheckedInput,
    driving: CheckedInput,
    portrait_subject: Person,
    performer: Person,
    purpose: Purpose,
    channels: Sequence[str],
    territory: str,
    model_version: Any,
    parameters: Mapping[str, Any],
    title: str = "",
    face_match_ids: Sequence[int] = (),
    acting_user: User,
) -> RenderJob:
    """Record a validated request and open its approval request.

    The slow content checks (decoding, face detection and matching) run before, in
    ``reenactment.services.inputs.render_job_inputs_check``; here the cheap rules are checked at
    commit time: consents, the model's status and licence, the face recogniser's licence. On
    any refusal nothing is left: no job, no audit event, and no stored file that no other job
    uses.
    """
    # Files are stored before the transaction so that, if it rolls back, the clean-up below
    # sees the database as it really is (content-hashed names may be shared with other jobs).
    stored: list[str] = []
    try:
        portrait_name, created = _store_input(portrait)
        stored += [portrait_name] if created else []
        driving_name, created = _store_input(driving)
        stored += [driving_name] if created else []
        return _render_job_create(
            requested_by=requested_by,
            portrait=portrait,
            portrait_name=portrait_name,
            driving=driving,
            driving_name=driving_name,
            portrait_subject=portrait_subject,
            performer=performer,
            purpose=purpose,
            channels=channels,
            territory=territory,
            model_version=model_version,
            parameters=parameters,
            title=title,
            face_match_ids=face_match_ids,
            acting_user=acting_user,
        )
    except BaseException:
        for name in stored:
            _delete_unreferenced_input(name)
        raise


def _resolution_assert_fits(*, model_version: Any, parameters: Mapping[str, Any]) -> None:
    """Refuse a requested generation size the model's autoencoder cannot tile, at submission
    rather than after two approvals (the API's range check cannot know the model)."""
    from reenactment.runtime import generation_defaults, generation_refiner_size, generation_tile

    resolution = parameters.get("resolution")
    if resolution is None:
        return
    tile = generation_tile(model_version)
    if tile and resolution % tile:
        nearest = max(tile, round(resolution / tile) * tile)
        raise ApplicationError(
            f"This model generates at multiples of {tile} px; {resolution} is not one "
            f"(try {nearest}).",
            code="resolution_unsupported",
        )
    refine = parameters.get(
        "refine_details", generation_defaults(model_version).get("refine_details", True)
    )
    refiner_size = generation_refiner_size(model_version) if refine else None
    if refiner_size and resolution != refiner_size:
        raise ApplicationError(
            f"This model's detail refiner works at {refiner_size} px; generate at "
            f"{refiner_size}, or set refine_details to false to generate at {resolution}.",
            code="resolution_unsupported",
        )


@transaction.atomic(durable=True)
def _render_job_create(
    *,
    requested_by: User,
    portrait: CheckedInput,
    portrait_name: str,
    driving: CheckedInput,
    driving_name: str,
    portrait_subject: Person,
    performer: Person,
    purpose: Purpose,
    channels: Sequence[str],
    territory: str,
    model_version: Any,
    parameters: Mapping[str, Any],
    title: str,
    face_match_ids: Sequence[int],
    acting_user: User,
) -> RenderJob:
    from governance.selectors.identity import face_backend_assert_usable
    from governance.services.registry import model_version_assert_usable

    consent_ids = render_job_consents_assert(
        portrait_subject=portrait_subject,
        performer=performer,
        purpose=purpose,
        channels=channels,
        territory=territory,
    )
    model_version_assert_usable(model_version=model_version, purpose=purpose, territory=territory)
    face_backend_assert_usable(backend=settings.FACE_BACKEND, purpose=purpose, territory=territory)
    _resolution_assert_fits(model_version=model_version, parameters=parameters)
    job = RenderJob.objects.create(
        requested_by=requested_by,
        portrait_subject=portrait_subject,
        performer=performer,
        purpose=purpose,
        channels=list(channels),
        territory=territory,
        model_version=model_version,
        title=title[:200],
        portrait=portrait_name,
        portrait_sha256=portrait.sha256,
        portrait_info=portrait.info,
        driving=driving_name,
        driving_sha256=driving.sha256,
        driving_info=driving.info,
        parameters=dict(parameters),
        consent_ids=consent_ids,
        status=S.DRAFT,
    )
    render_job_transition(
        job=job,
        to=S.SUBMITTED,
        acting_user=acting_user,
        payload={
            "consent_ids": consent_ids,
            "face_match_record_ids": list(face_match_ids),
            "model_version_id": model_version.pk,
            "portrait_sha256": portrait.sha256,
            "driving_sha256": driving.sha256,
            "purpose": purpose.pk,
            "channels": list(channels),
            "territory": territory,
        },
    )
    approval = approval_request_create(
        subject_type=SUBJECT_TYPE,
        subject_id=job.pk,
        requested_by=requested_by,
        acting_user=acting_user,
        purpose=purpose,
        summary=f"Render job #{job.pk}: {title}"[:300],
    )
    job.approval_request = approval
    render_job_transition(
        job=job,
        to=S.AWAITING_APPROVAL,
        acting_user=acting_user,
        payload={"approval_request_id": approval.pk},
        update_fields=["approval_request"],
    )
    return job


def _delete_unreferenced_input(name: str) -> None:
    in_use = (
        RenderJob.objects.filter(portrait=name).exists()
        or RenderJob.objects.filter(driving=name).exists()
    )
    if not in_use and default_storage.exists(name):
        default_storage.delete(name)


# ---------------------------------------------------------------------------------------------
# Approval outcomes (governance hooks, run inside the governance transaction)
# ---------------------------------------------------------------------------------------------


def _job_for_subject(subject_type: str, subject_id: str) -> RenderJob | None:
    if subject_type != SUBJECT_TYPE:
        return None
    return RenderJob.objects.select_for_update().filter(pk=int(subject_id)).first()


def render_job_on_approval_released(event: ApprovalReleased) -> None:
    """The last approval came in: approve the job and queue it for a GPU (dispatch on commit)."""
    job = _job_for_subject(event.subject_type, event.subject_id)
    if job is None or job.status != S.AWAITING_APPROVAL:
        return
    actor = User.objects.filter(pk=event.acting_user_id).first()
    render_job_transition(
        job=job, to=S.APPROVED, acting_user=actor, payload={"approval_request_id": event.request_id}
    )
    render_job_enqueue(job=job, acting_user=actor)


def render_job_on_approval_closed(event: ApprovalClosed) -> None:
    """Rejected, sent back or cancelled: the job will not run."""
    job = _job_for_subject(event.subject_type, event.subject_id)
    if job is None or job.status != S.AWAITING_APPROVAL:
        return
    actor = User.objects.filter(pk=event.acting_user_id).first()
    render_job_transition(
        job=job,
        to=S.REJECTED,
        acting_user=actor,
        reason=f"Approval {event.status}: {event.reason}".strip(": "),
        payload={"approval_request_id": event.request_id, "approval_status": event.status},
    )


@transaction.atomic
def render_job_enqueue(*, job: RenderJob, acting_user: User | None) -> RenderJob:
    """APPROVED -> QUEUED, and send the task to the ``gpu`` queue once this commits."""
    from reenactment.tasks import render_job_run_task

    render_job_transition(job=job, to=S.QUEUED, acting_user=acting_user)
    job_id = job.pk
    transaction.on_commit(lambda: render_job_run_task.delay(job_id))
    return job


# ---------------------------------------------------------------------------------------------
# Cancellation, publication, withdrawal, consent revocation
# ---------------------------------------------------------------------------------------------


class JobNotCancellableError(ApplicationError):
    status_code = status.HTTP_409_CONFLICT


@transaction.atomic(durable=True)
def render_job_cancel(*, job: RenderJob, reason: str, acting_user: User) -> RenderJob:
    """Cancel a job that has not finished; a running one stops at its next denoising step."""
    return _cancel(job=job, reason=reason, acting_user=acting_user)


def _cancel(*, job: RenderJob, reason: str, acting_user: User | None) -> RenderJob:
    job = RenderJob.objects.select_for_update().get(pk=job.pk)
    if not job.can_transition_to(S.CANCELLED):
        raise JobNotCancellableError(
            f"Render job #{job.pk} is {job.status} and can no longer be cancelled.",
            code="not_cancellable",
        )
    if not reason.strip():
        raise ApplicationError("Say why the job is cancelled.", code="reason_required")
    was_running = job.status == S.RUNNING
    awaiting = job.status == S.AWAITING_APPROVAL
    # The worker polls this flag between steps (reenactment.services.execution).
    job.cancel_requested = True
    render_job_transition(
        job=job,
        to=S.CANCELLED,
        acting_user=acting_user,
        reason=reason,
        payload={"was_running": was_running},
        update_fields=["cancel_requested"],
    )
    if awaiting and job.approval_request_id:
        # Nobody may approve a cancelled job; the approval-closed hook finds it already ended.
        approval_request_cancel(
            approval_request=ApprovalRequest.objects.get(pk=job.approval_request_id),
            reason=f"render job cancelled: {reason}",
            acting_user=acting_user,
        )
    if job.output:
        _delete_output_on_commit(job)
    return job


def _delete_output_on_commit(job: RenderJob) -> None:
    name = job.output.name

    def delete() -> None:
        if name and default_storage.exists(name):
            default_storage.delete(name)

    transaction.on_commit(delete)


def render_job_withdraw_locked(*, job: RenderJob, reason: str, acting_user: User | None) -> None:
    """Withdraw a published (or quarantined) output: downloads are refused from now on."""
    render_job_transition(job=job, to=S.WITHDRAWN, acting_user=acting_user, reason=reason)


@transaction.atomic(durable=True)
def render_job_withdraw(*, job: RenderJob, reason: str, acting_user: User) -> RenderJob:
    job = RenderJob.objects.select_for_update().get(pk=job.pk)
    if not reason.strip():
        raise ApplicationError("Say why the output is withdrawn.", code="reason_required")
    render_job_withdraw_locked(job=job, reason=reason, acting_user=acting_user)
    return job


def render_job_on_consent_revoked(event: ConsentRevocation) -> None:
    """A consent stopped being valid: block what has not run, stop what runs, pull what is out.

    Runs inside the revoking transaction (governance hook), so the revocation and its cascade
    commit together. A superseded consent only affects jobs the replacement no longer covers.
    """
    actor = User.objects.filter(pk=event.acting_user_id).first()
    jobs = (
        RenderJob.objects.select_for_update()
        .filter(Q(portrait_subject_id=event.person_id) | Q(performer_id=event.person_id))
        .exclude(status__in=TERMINAL)
        .order_by("pk")
    )
    for job in jobs:
        if event.superseded_by_id is not None and _still_covered(job):
            continue
        reason = f"consent #{event.consent_id} revoked: {event.reason}"
        if event.superseded_by_id is not None:
            reason = f"consent #{event.consent_id} superseded and no longer covers this use"
        if job.status == S.PUBLISHED or job.status == S.QUARANTINED:
            render_job_withdraw_locked(job=job, reason=reason, acting_user=actor)
        elif job.status in PENDING or job.status in HELD_OUTPUT or job.status == S.RUNNING:
            _cancel(job=job, reason=reason, acting_user=actor)


def _still_covered(job: RenderJob) -> bool:
    try:
        render_job_consents_assert(
            portrait_subject=job.portrait_subject,
            performer=job.performer,
            purpose=job.purpose_id,
            channels=job.channels,
            territory=job.territory,
        )
    except ApplicationError:
        return False
    return True


def render_job_release_assert(job: RenderJob) -> None:
    """Right before generation: the approval still releases the job and consents still hold."""
    if job.approval_request_id is None:
        raise ApplicationError(f"Render job #{job.pk} has no approval.", code="not_approved")
    approval_request_assert_released(
        approval_request=ApprovalRequest.objects.get(pk=job.approval_request_id)
    )
    render_job_consents_assert(
        portrait_subject=job.portrait_subject,
        performer=job.performer,
        purpose=job.purpose_id,
        channels=job.channels,
        territory=job.territory,
    )


def stored_file_copy(field: Any, workdir: Path, name: str) -> Path:
    """Copy a stored file (a ``FieldFile``, on any storage backend) to ``workdir/<name><suffix>``.

    The engine reads local paths (PyAV, PIL); storage may be S3, so every consumer works on a
    local copy in its own temporary folder.
    """
    path = workdir / f"{name}{Path(field.name).suffix}"
    with field.open("rb") as source, path.open("wb") as out:
        shutil.copyfileobj(source, out)
    return path


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def render_job_settings() -> dict[str, Any]:
    """Operational limits, from settings (documented in platform/README.md)."""
    return {
        "max_portrait_bytes": settings.RENDER_MAX_PORTRAIT_BYTES,
        "max_driving_bytes": settings.RENDER_MAX_DRIVING_BYTES,
        "max_driving_seconds": settings.RENDER_MAX_DRIVING_SECONDS,
    }
